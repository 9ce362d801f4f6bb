"""The authorization endpoint (``JARGATE_AUTHORIZATION_PATH``, GET and POST).

For each request: read the parameters; resolve the client (unknown clients pass
through untouched unless they use JAR or JARM); obtain, decrypt, verify and validate
the request object and claim its ``jti``; apply the client's policy; then start a flow
and call the upstream server-side with the verified parameters as a plain query,
``state`` replaced by the flow's handle and any ``response_mode`` removed (the gateway
answers the client in the mode it asked for). A browser the upstream sends back here
after a login, carrying the handle, is checked against what was forwarded and passed on.

Where a refusal goes: to the client's redirect URI when it is trusted (registered, and
named by a verified object or a plain request), otherwise the gateway's own error page.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from aiohttp import web

from proxy import appkeys
from proxy.clients import RegisteredClient
from proxy.errors import (
    GatewayError,
    InvalidRequest,
    InvalidRequestObject,
    InvalidRequestUri,
    PolicyRefusal,
    ReplayedObject,
    TemporarilyUnavailable,
    UnauthorizedClient,
    error_page,
)
from proxy.flows import (
    Flow,
    PendingFlow,
    looks_like_handle,
    new_handle,
    params_digest,
    peek_flow,
)
from proxy.observability import DECISION, REQUEST_ID
from proxy.query import encode_query
from proxy.request.pushed import Pushed, pushed_key, take_pushed
from proxy.response.complete import relay_or_complete
from proxy.response.deliver import Destination, deliver_error, returns_tokens
from proxy.upstream import UpstreamAnswer

from .obtain import (
    check_request_object_size,
    describe_source,
    fetch_request_object,
)
from .params import JWT_MODES, RESPONSE_MODES, parameters_from_claims, read_params
from .verify import (
    JtiClaim,
    claim_jti,
    decrypt_request_object,
    jti_claim,
    validate_claims,
    verify_request_object,
)

log = logging.getLogger("jargate.authorize")

#: Outer parameters that never go upstream.
_NOT_FORWARDED = frozenset({"request", "request_uri", "response_mode", "state"})


@dataclass(frozen=True, slots=True)
class Accepted:
    """An authorization request the gateway will forward."""

    params: dict[str, str]
    destination: Destination
    source: str
    #: The request object's replay claim, made when the flow is stored (JAR only).
    claim: JtiClaim | None = None


class VerifiedRefusal(Exception):
    """A refusal after the request object verified: its redirect URI is trusted."""

    def __init__(self, err: GatewayError, destination: Destination) -> None:
        super().__init__(err)
        self.err = err
        self.destination = destination


def trusted_destination(
    params: dict[str, str], client: RegisteredClient, error: type[GatewayError]
) -> Destination:
    """The redirect URI and mode the parameters name, if they may receive a response.

    ``redirect_uri`` may be omitted only when the client registered exactly one; it
    must be one of the registered ones (exact match). An unknown ``response_mode`` is
    refused, never ignored. Failures raise ``error`` and are shown on the gateway's page.
    """
    registered = client.meta.redirect_uris
    redirect_uri = params.get("redirect_uri")
    if redirect_uri is None:
        if len(registered) != 1:
            raise error("redirect_uri is required")
        redirect_uri = registered[0]
    elif redirect_uri not in registered:
        raise error("redirect_uri is not registered for this client")
    mode = params.get("response_mode")
    if mode is not None and mode not in RESPONSE_MODES:
        raise error(f"response_mode {mode!r} is not supported")
    return Destination(
        client_id=client.client_id,
        redirect_uri=redirect_uri,
        response_type=params.get("response_type", ""),
        response_mode=mode,
        state=params.get("state"),
    )


def check_response_mode(destination: Destination, client: RegisteredClient) -> None:
    """Tokens never travel in a query: not with ``query`` (OAuth Multiple Response Types
    §3.0) and not with ``query.jwt`` unless the response is encrypted (JARM §2.3.1)."""
    if not returns_tokens(destination.response_type):
        return
    if destination.response_mode == "query":
        raise InvalidRequest("response_mode query cannot carry tokens")
    if (
        destination.response_mode == "query.jwt"
        and client.meta.authorization_encrypted_response_alg is None
    ):
        raise InvalidRequest(
            "response_mode query.jwt cannot carry tokens unless the response is encrypted"
        )


def outer_destination(params: dict[str, str], client: RegisteredClient) -> Destination | None:
    """Where errors go before a request object verified: the outer parameters' redirect
    URI, only when it is explicitly named and registered."""
    if "redirect_uri" not in params:
        return None
    try:
        return trusted_destination(params, client, InvalidRequest)
    except GatewayError:
        return None


async def verified_request(
    request: web.Request, params: dict[str, str], client: RegisteredClient
) -> Accepted:
    """Obtain, decrypt, verify and validate the request object; claim its jti."""
    app = request.app
    settings = app[appkeys.SETTINGS]
    source = describe_source(params)
    if "request" in params and "request_uri" in params:
        raise InvalidRequest("request and request_uri must not be used together")
    if source == "value":
        token = check_request_object_size(params["request"], settings.max_request_object_bytes)
    else:
        token = await fetch_request_object(
            params["request_uri"], client, settings, app[appkeys.FETCH], app[appkeys.STORE]
        )
    depth = settings.max_json_depth
    signed, encrypted = decrypt_request_object(token, app[appkeys.KEYRING], client, depth)
    verified = await verify_request_object(
        signed, client, app[appkeys.JWKS_CACHE], encrypted, depth
    )
    validate_claims(verified, client, params, settings)
    inner = parameters_from_claims(verified.claims)
    inner.setdefault("client_id", client.client_id)
    destination = trusted_destination(inner, client, InvalidRequestObject)
    inner["redirect_uri"] = destination.redirect_uri
    try:
        if "response_type" not in inner:
            raise InvalidRequestObject("response_type is required in the request object")
        check_response_mode(destination, client)
    except TemporarilyUnavailable:
        raise
    except GatewayError as err:
        raise VerifiedRefusal(err, destination) from None
    claim = jti_claim(client, verified, signed, settings)
    return Accepted(params=inner, destination=destination, source=source, claim=claim)


def plain_request(params: dict[str, str], client: RegisteredClient) -> Accepted:
    """A plain authorization request from a registered client."""
    if client.meta.require_signed_request_object:
        raise PolicyRefusal("this client must send a signed request object")
    if client.meta.request_object_encryption_alg is not None:
        raise PolicyRefusal("this client must send an encrypted request object")
    destination = trusted_destination(params, client, InvalidRequest)
    if "response_type" not in params:
        raise InvalidRequest("response_type is required")
    check_response_mode(destination, client)
    return Accepted(
        params={**params, "redirect_uri": destination.redirect_uri},
        destination=destination,
        source="plain",
    )


async def authorize(request: web.Request) -> web.StreamResponse:
    """The authorization endpoint handler."""
    app = request.app
    settings = app[appkeys.SETTINGS]
    params = await read_params(request, settings.max_parameters)
    client_id = params.get("client_id")
    uses_jar = "request" in params or "request_uri" in params
    wants_jarm = params.get("response_mode") in JWT_MODES
    client = app[appkeys.REGISTRY].get(client_id) if client_id else None
    if client is None:
        if uses_jar or wants_jarm:
            error: GatewayError = (
                UnauthorizedClient("this client is not registered for signed requests or responses")
                if client_id
                else InvalidRequest("client_id is required")
            )
            _decide(request, client_id, "refused", error.error, describe_source(params))
            raise error
        return await relay_or_complete(request, await _open_upstream(request))
    if not uses_jar and looks_like_handle(params.get("state")):
        return await reenter(request, params, client)

    source = describe_source(params)
    reported: PolicyRefusal | None = None
    must_push = settings.require_par or client.meta.require_pushed_authorization_requests
    if source != "par" and must_push:
        refusal = PolicyRefusal("this client must use pushed authorization requests (RFC 9126)")
        if settings.enforcement != "report":
            return await _refuse(request, refusal, client, params, source)
        reported = refusal
    try:
        if source == "par":
            return await authorize_pushed(request, params, client)
        if uses_jar:
            accepted = await verified_request(request, params, client)
        else:
            accepted = plain_request(params, client)
    except PolicyRefusal as refusal:
        if settings.enforcement == "report":
            reported = refusal
            accepted = Accepted(
                params=dict(params),
                destination=trusted_destination(params, client, InvalidRequest),
                source="plain",
            )
        else:
            return await _refuse(request, refusal, client, params, source)
    except TemporarilyUnavailable:
        _decide(request, client.client_id, "refused", "temporarily_unavailable", source)
        raise
    except VerifiedRefusal as refusal:
        _decide(request, client.client_id, "refused", refusal.err.error, source)
        return await deliver_error(
            app, refusal.destination, refusal.err.error, refusal.err.description
        )
    except GatewayError as err:
        return await _refuse(request, err, client, params, source)
    return await forward(request, accepted, reported)


async def _refuse(
    request: web.Request,
    err: GatewayError,
    client: RegisteredClient,
    params: dict[str, str],
    source: str,
) -> web.StreamResponse:
    _decide(request, client.client_id, "refused", err.error, source)
    destination = outer_destination(params, client)
    if destination is None:
        return error_page(request, err)
    return await deliver_error(request.app, destination, err.error, err.description)


async def forward(
    request: web.Request, accepted: Accepted, reported: GatewayError | None = None
) -> web.StreamResponse:
    """Claim the object's jti, then send the plain request upstream, server-side.
    ``reported``: the policy refusal report mode let pass."""
    client_id = accepted.destination.client_id
    try:
        pending = await start_flow(request.app, accepted)
    except ReplayedObject as replay:
        _decide(request, client_id, "refused", replay.error, accepted.source)
        return await deliver_error(
            request.app, accepted.destination, replay.error, replay.description
        )
    except TemporarilyUnavailable:
        _decide(request, client_id, "refused", "temporarily_unavailable", accepted.source)
        raise
    if reported is None:
        _decide(request, client_id, "accepted", "none", accepted.source)
    else:
        _decide(request, client_id, "reported", reported.error, accepted.source)
    return await send_upstream(request, pending.target, pending)


async def start_flow(
    app: web.Application, accepted: Accepted, par_key: str | None = None
) -> PendingFlow:
    """Claim the request object's jti (if it has one) and prepare the flow for
    ``accepted``: a fresh handle and the upstream request target (the authorization path
    with the plain, verified query, ``state`` the handle). The flow is stored only if it
    must wait (:mod:`proxy.flows`)."""
    settings = app[appkeys.SETTINGS]
    if accepted.claim is not None:
        await claim_jti(app[appkeys.STORE], accepted.claim)
    handle = new_handle()
    upstream_params = [
        (name, value) for name, value in accepted.params.items() if name not in _NOT_FORWARDED
    ]
    upstream_params.append(("state", handle))
    flow = Flow(
        client_id=accepted.destination.client_id,
        redirect_uri=accepted.destination.redirect_uri,
        response_type=accepted.params.get("response_type", ""),
        response_mode=accepted.destination.response_mode,
        state=accepted.destination.state,
        source=accepted.source,
        par_key=par_key,
    )
    target = f"{settings.authorization_path}?{encode_query(upstream_params)}"
    return PendingFlow(handle, flow, upstream_params, target, settings.flow_ttl_seconds)


async def send_upstream(
    request: web.Request, target: str, pending: PendingFlow | None = None
) -> web.StreamResponse:
    """Call the upstream's authorization endpoint server-side (with the browser's headers
    and cookies) and answer with what it says, completing the flow if it redirects back."""
    upstream = await request.app[appkeys.UPSTREAM].open(
        request, raw_target=target, method="GET", with_body=False, request_id=REQUEST_ID.get()
    )
    return await relay_or_complete(request, upstream, pending)


async def reenter(
    request: web.Request, params: dict[str, str], client: RegisteredClient
) -> web.StreamResponse:
    """The upstream sent the browser back here after a login, carrying the handle: pass it
    on only if it is exactly what the gateway forwarded."""
    handle = params["state"]
    flow = await peek_flow(request.app[appkeys.STORE], handle)
    if flow is None:
        raise InvalidRequest("this authorization flow is unknown or has expired")
    if flow.client_id != client.client_id or params_digest(params.items()) != flow.digest:
        _decide(request, client.client_id, "refused", "invalid_request", "reentry")
        raise InvalidRequest("this request does not match the authorization flow it resumes")
    _decide(request, client.client_id, "accepted", "none", "reentry")
    return await relay_or_complete(request, await _open_upstream(request))


async def _open_upstream(request: web.Request) -> UpstreamAnswer:
    """The request as it came, its body too: a POSTed one was read for its parameters
    (aiohttp keeps what it read), so that copy goes upstream."""
    read_body = await request.read() if request.method == "POST" and request.body_exists else None
    return await request.app[appkeys.UPSTREAM].open(
        request, request_id=REQUEST_ID.get(), read_body=read_body
    )


async def authorize_pushed(
    request: web.Request, params: dict[str, str], client: RegisteredClient
) -> web.StreamResponse:
    """A PAR handle at the authorization endpoint (RFC 9126 §4). Other parameters are
    ignored. The pushed request is taken from the store at first use (one round trip; a
    second use, even a concurrent one, finds nothing). If its flow must wait (a login
    page), it is stored again with the flow, marked with the flow's handle, until the
    flow completes: a reload meanwhile continues the same flow; once the flow completed,
    it is gone. The PAR lifetime bounds the wait before first use only. The handle is
    bound to the client that pushed it: with another ``client_id`` nothing is found and
    nothing taken."""
    app = request.app
    settings, store = app[appkeys.SETTINGS], app[appkeys.STORE]
    key = pushed_key(client.client_id, params["request_uri"])
    pushed = await take_pushed(store, key)
    if pushed is None:  # another client's handle included: it is left alone for its own
        raise InvalidRequestUri("the request_uri is unknown, expired or already used")
    mark_ttl = settings.flow_ttl_seconds
    if pushed.handle is not None and pushed.target is not None:
        # A reload while its flow waits: continue that flow, and keep the mark.
        if await peek_flow(store, pushed.handle) is None:
            raise InvalidRequestUri("the request_uri is unknown, expired or already used")
        await store.put(key, pushed.to_json(), mark_ttl)
        _decide(request, client.client_id, "accepted", "none", "par")
        return await send_upstream(request, pushed.target)
    accepted = Accepted(
        params=pushed.params,
        destination=trusted_destination(pushed.params, client, InvalidRequestUri),
        source="par",
    )
    pending = await start_flow(app, accepted, par_key=key)
    mark = Pushed(pushed.client_id, pushed.params, pending.handle, pending.target)
    pending.also = ((key, mark, mark_ttl),)
    _decide(request, client.client_id, "accepted", "none", "par")
    return await send_upstream(request, pending.target, pending)


def _decide(
    request: web.Request, client_id: str | None, outcome: str, error: str, source: str
) -> None:
    """Count one authorization decision; it is logged on the request's access line (one
    line per request), never with the request object itself."""
    request.app[appkeys.METRICS].count_decision(outcome, error, source)
    request[DECISION] = {
        "client_id": client_id,
        "outcome": outcome,
        "error": error,
        "source": source,
    }
