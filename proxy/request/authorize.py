"""The authorization endpoint (``JARGATE_AUTHORIZATION_PATH``, GET and POST).

For each request: read the parameters (:mod:`.params`); a request carrying a flow handle
is one the upstream sent back (:mod:`.reentry`); resolve the client (unknown clients
pass through untouched unless they use JAR or JARM, or their ``client_id`` is another
spelling of a registered one); obtain, decrypt, verify and validate the request object or
check the plain request against the client's policy (:mod:`.accept`), or redeem a pushed
request (:mod:`.redeem`); then forward it upstream server-side (:mod:`.forward`).

Where a refusal goes: to the client's redirect URI when it is trusted (registered, and
named by a verified object or a plain request), otherwise the gateway's own error page.
"""

from __future__ import annotations

from aiohttp import web

from proxy import appkeys
from proxy.clients import RegisteredClient
from proxy.errors import (
    GatewayError,
    InvalidRequest,
    PolicyRefusal,
    TemporarilyUnavailable,
    UnauthorizedClient,
    error_page,
)
from proxy.response.deliver import deliver_error

from .accept import (
    Accepted,
    VerifiedRefusal,
    decide,
    outer_destination,
    plain_request,
    trusted_destination,
    verified_request,
)
from .forward import forward, pass_on
from .obtain import describe_source
from .params import JWT_MODES, RawParameters, read_params
from .redeem import authorize_pushed
from .reentry import handle_of, reenter
from .verify import is_compact


async def authorize(request: web.Request) -> web.StreamResponse:
    """The authorization endpoint handler."""
    app = request.app
    settings = app[appkeys.SETTINGS]
    raw = await read_params(request, settings.max_parameters)
    handle = handle_of(raw)
    if handle is not None:
        return await reenter(request, raw, handle)
    client_ids = set(raw.values("client_id"))
    if len(client_ids) > 1:
        raise InvalidRequest("client_id differs in query and body")
    client_id = next(iter(client_ids), None)
    registry = app[appkeys.REGISTRY]
    client = registry.get(client_id) if client_id else None
    if client is None:
        return await unregistered(request, raw, client_id)
    params = raw.single()
    source = describe_source(params)
    reported: PolicyRefusal | None = None
    must_push = settings.require_par or client.meta.require_pushed_authorization_requests
    if source != "par" and must_push:
        refusal = PolicyRefusal("this client must use pushed authorization requests")
        if settings.enforcement != "report":
            return await _refuse(request, refusal, client, params, source)
        reported = refusal
    try:
        if source == "par":
            return await authorize_pushed(request, params, client)
        if source != "plain":
            accepted = await verified_request(request, params, client)
        else:
            accepted = plain_request(params, client)
    except PolicyRefusal as refusal:
        if settings.enforcement != "report":
            return await _refuse(request, refusal, client, params, source)
        reported = refusal
        accepted = Accepted(
            params=dict(params),
            destination=trusted_destination(params, client, InvalidRequest),
            source="plain",
        )
    except TemporarilyUnavailable:
        decide(request, client.client_id, "refused", "temporarily_unavailable", source)
        raise
    except VerifiedRefusal as refusal:
        decide(request, client.client_id, "refused", refusal.err.error, source)
        return await deliver_error(
            app, refusal.destination, refusal.err.error, refusal.err.description
        )
    except GatewayError as err:
        return await _refuse(request, err, client, params, source)
    return await forward(request, accepted, reported)


async def unregistered(
    request: web.Request, raw: RawParameters, client_id: str | None
) -> web.StreamResponse:
    """A client the registry does not know passes through untouched, unless the gateway
    takes registered clients only, it uses JAR or JARM, or its ``client_id`` is another
    spelling of a registered client's (a server that folds case or Unicode would find that
    client)."""
    registry = request.app[appkeys.REGISTRY]
    # A request that is no compact JWS or JWE is the upstream's own form field (allauth's
    # consent form posts its signed state under that name).
    uses_jar = any(map(is_compact, raw.values("request"))) or bool(raw.values("request_uri"))
    wants_jarm = any(mode in JWT_MODES for mode in raw.values("response_mode"))
    error: GatewayError | None = None
    if client_id and request.app[appkeys.SETTINGS].require_registered_clients:
        error = UnauthorizedClient("this client is not registered")
    elif client_id and registry.equivalent(client_id) is not None:
        error = InvalidRequest("client_id is not the exact identifier of a registered client")
    elif uses_jar or wants_jarm:
        error = (
            UnauthorizedClient("this client is not registered for signed requests or responses")
            if client_id
            else InvalidRequest("client_id is required")
        )
    if error is not None:
        decide(
            request, client_id, "refused", error.error, describe_source(dict(raw.query + raw.form))
        )
        raise error
    return await pass_on(request)


async def _refuse(
    request: web.Request,
    err: GatewayError,
    client: RegisteredClient,
    params: dict[str, str],
    source: str,
) -> web.StreamResponse:
    decide(request, client.client_id, "refused", err.error, source)
    destination = outer_destination(params, client)
    if destination is None:
        return error_page(request, err)
    return await deliver_error(request.app, destination, err.error, err.description)
