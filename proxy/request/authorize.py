"""The authorization endpoint (``JARGATE_AUTHORIZATION_PATH``, GET and POST).

For each request: read the parameters (:mod:`.params`); a request carrying a flow handle
is one the upstream sent back (:mod:`.reentry`); resolve the client (unknown clients
pass through untouched unless they use JAR or JARM, or their ``client_id`` is another
spelling of a registered one); obtain, decrypt, verify and validate the request object or
check the plain request against the client's policy (:mod:`.accept`), or redeem a pushed
request (:mod:`.redeem`); then forward it upstream server-side (:mod:`.forward`).

Where a refusal goes: to the client's redirect URI when it is trusted (registered, and
named by a verified object or a plain request), otherwise the gateway's own error page
(:mod:`proxy.boundary` delivers both).
"""

from __future__ import annotations

from aiohttp import web

from proxy import appkeys
from proxy.clients import RegisteredClient
from proxy.compact import may_be_jose
from proxy.config import config_of
from proxy.errors import InvalidRequest, PolicyRefusal, Refusal, UnauthorizedClient
from proxy.observability import note
from proxy.profiles import policy_of

from .accept import (
    Accepted,
    outer_destination,
    plain_request,
    reported_or_raise,
    trusted_destination,
    verified_request,
)
from .forward import forward, pass_on
from .obtain import describe_source
from .params import JWT_MODES, RawParameters, read_params
from .redeem import authorize_pushed
from .reentry import handle_of, reenter


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
        raise InvalidRequest("client_id differs in query and body", rule="client_id.differs")
    client_id = next(iter(client_ids), None)
    client = config_of(request).registry.get(client_id) if client_id else None
    if client is None:
        return await unregistered(request, raw, client_id)
    params = raw.single()
    note(request, client.client_id, describe_source(params))
    try:
        return await registered(request, params, client)
    except Refusal as refusal:
        # Before an object verified, only an outer redirect URI that is registered and
        # named receives the refusal; otherwise the gateway's page.
        if refusal.destination is None:
            destination = outer_destination(params, client)
            if destination is not None:
                refusal.to(destination)
        raise


async def registered(
    request: web.Request, params: dict[str, str], client: RegisteredClient
) -> web.StreamResponse:
    """A registered client's request: its policy, then the pushed, signed or plain path."""
    settings = request.app[appkeys.SETTINGS]
    source = describe_source(params)
    reported: PolicyRefusal | None = None
    if source != "par" and (
        settings.require_par
        or client.meta.require_pushed_authorization_requests
        or policy_of(settings, client).fapi2
    ):
        reported = reported_or_raise(
            settings,
            PolicyRefusal(
                "this client must use pushed authorization requests",
                rule="policy.pushed_authorization_requests",
            ),
        )
    if source == "par":
        return await authorize_pushed(request, params, client)
    try:
        if source != "plain":
            accepted = await verified_request(request, params, client)
        else:
            accepted = plain_request(params, client, settings)
    except PolicyRefusal as refusal:
        reported = reported_or_raise(settings, refusal)
        accepted = Accepted(
            params=dict(params),
            destination=trusted_destination(params, client, InvalidRequest),
            source="plain",
        )
    return await forward(request, accepted, reported)


async def unregistered(
    request: web.Request, raw: RawParameters, client_id: str | None
) -> web.StreamResponse:
    """A client the registry does not know passes through untouched, unless the gateway
    takes registered clients only, it uses JAR or JARM, or its ``client_id`` is another
    spelling of a registered client's (a server that folds case or Unicode would find that
    client)."""
    note(request, client_id, describe_source(dict(raw.query + raw.form)))
    # A request no JOSE parser could take for a request object is the upstream's own form
    # field (allauth's consent form posts its signed state under that name).
    uses_jar = any(map(may_be_jose, raw.values("request"))) or bool(raw.values("request_uri"))
    wants_jarm = any(mode in JWT_MODES for mode in raw.values("response_mode"))
    if client_id and request.app[appkeys.SETTINGS].require_registered_clients:
        raise UnauthorizedClient("this client is not registered", rule="client.unregistered")
    if client_id and config_of(request).registry.equivalent(client_id) is not None:
        raise InvalidRequest(
            "client_id is not the exact identifier of a registered client",
            rule="client_id.equivalent",
        )
    if (uses_jar or wants_jarm) and client_id:
        raise UnauthorizedClient(
            "this client is not registered for signed requests or responses",
            rule="client.unregistered_jar",
        )
    if uses_jar or wants_jarm:
        raise InvalidRequest("client_id is required", rule="client_id.missing")
    return await pass_on(request)
