"""The pushed authorization request endpoint (RFC 9126), for servers that have none.

``POST {JARGATE_PAR_PATH}``, ``application/x-www-form-urlencoded`` only, bodies bounded.
The client authenticates as at a token endpoint (:mod:`.client_auth`); the pushed
request, plain or a request object, is validated exactly as at the authorization
endpoint, so errors surface at push time; the answer is ``201`` with a one-time
``request_uri`` and its ``expires_in``. Errors are JSON (RFC 9126 §2.3), never redirects.
"""

from __future__ import annotations

import time

from aiohttp import web

from proxy import appkeys
from proxy.errors import InvalidRequest, PolicyRefusal
from proxy.observability import decide
from proxy.response.deliver import RESPONSE_HEADERS

from .accept import (
    Accepted,
    plain_request,
    reported_or_raise,
    trusted_destination,
    verified_request,
)
from .client_auth import AUTHENTICATION_PARAMETERS, authenticate_client
from .params import RawParameters, read_form
from .pushed import Pushed, new_request_uri, save_pushed
from .verify import claim_jti


async def push(request: web.Request) -> web.Response:
    """``POST`` a pushed authorization request; ``201 {request_uri, expires_in}``."""
    app = request.app
    settings = app[appkeys.SETTINGS]
    form = RawParameters([], await read_form(request, settings.max_parameters)).single()
    client = await authenticate_client(request, form, "push")
    params = {k: v for k, v in form.items() if k not in AUTHENTICATION_PARAMETERS}
    if "request_uri" in params:
        raise InvalidRequest(
            "request_uri is not allowed at the PAR endpoint", rule="par.request_uri"
        )
    outer = {"client_id": client.client_id}
    reported: PolicyRefusal | None = None
    if "request" in params:
        # RFC 9126 section 3: with a request object, only it and the authentication count.
        accepted = await verified_request(request, {**outer, "request": params["request"]}, client)
        if accepted.claim is not None:
            await claim_jti(app[appkeys.STORE], accepted.claim)
    else:
        try:
            accepted = plain_request({**params, **outer}, client, settings)
        except PolicyRefusal as refusal:
            reported = reported_or_raise(settings, refusal)
            accepted = Accepted(
                params={**params, **outer},
                destination=trusted_destination({**params, **outer}, client, InvalidRequest),
                source="plain",
            )
    if client.meta.auth_method == "none" and (
        not accepted.params.get("code_challenge")
        or accepted.params.get("code_challenge_method") != "S256"
    ):
        raise InvalidRequest(
            "a public client must use PKCE with S256 (code_challenge)", rule="par.pkce"
        )
    request_uri = new_request_uri()
    pushed = Pushed(
        client_id=client.client_id,
        params=accepted.params,
        expires_at=time.time() + settings.par_ttl_seconds,
    )
    await save_pushed(app[appkeys.STORE], request_uri, pushed, settings)
    if reported is None:
        decide(request, client.client_id, "accepted", "none", "push")
    else:
        decide(request, client.client_id, "reported", reported.error, "push", reason=reported.rule)
    return web.json_response(
        {"request_uri": request_uri, "expires_in": settings.par_ttl_seconds},
        status=201,
        headers=RESPONSE_HEADERS,
    )
