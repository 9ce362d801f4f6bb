"""Forwarding an accepted authorization request to the upstream, server-side.

The gateway claims the request object's ``jti``, prepares a flow under a fresh handle and
calls the upstream's authorization endpoint itself with a plain query of the verified
parameters, ``state`` replaced by the handle and ``request``, ``request_uri`` and
``response_mode`` removed (the gateway answers the client in the mode it asked for). The
upstream's answer goes back to the browser: its login page (the flow is then stored,
bound to the browser), or its redirect back to the client (the flow completes at once).
"""

from __future__ import annotations

from aiohttp import web

from proxy import appkeys
from proxy.bodies import read_request_body
from proxy.config import config_of
from proxy.errors import GatewayError, ReplayedObject
from proxy.flows import Flow, PendingFlow, new_handle
from proxy.observability import REQUEST_ID, decide
from proxy.query import encode_query
from proxy.response.complete import relay_or_complete, scans
from proxy.upstream import UpstreamAnswer

from .accept import Accepted
from .verify import claim_jti

#: Outer parameters that never go upstream.
NOT_FORWARDED = frozenset({"request", "request_uri", "response_mode", "state"})


async def forward(
    request: web.Request, accepted: Accepted, reported: GatewayError | None = None
) -> web.StreamResponse:
    """Claim the object's jti, then send the plain request upstream, server-side.
    ``reported``: the policy refusal report mode let pass."""
    try:
        pending = await start_flow(request, accepted)
    except ReplayedObject as replay:
        raise replay.to(accepted.destination) from None
    client_id = accepted.destination.client_id
    if reported is None:
        decide(request, client_id, "accepted", "none", accepted.source)
    else:
        decide(
            request,
            client_id,
            "reported",
            reported.error,
            accepted.source,
            reason=reported.rule,
        )
    return await send_upstream(request, pending.target, pending)


async def start_flow(
    request: web.Request, accepted: Accepted, par_key: str | None = None
) -> PendingFlow:
    """Claim the request object's jti (if it has one) and prepare the flow for
    ``accepted``: a fresh handle and the upstream request target (the authorization path
    with the plain, verified query, ``state`` the handle). The flow is stored only if it
    must wait (:mod:`proxy.flows`)."""
    app = request.app
    settings = app[appkeys.SETTINGS]
    if accepted.claim is not None:
        await claim_jti(app[appkeys.STORE], accepted.claim)
    handle = new_handle()
    upstream_params = [
        (name, value) for name, value in accepted.params.items() if name not in NOT_FORWARDED
    ]
    named = "redirect_uri" in accepted.params
    if not named:
        # The client's one registered redirect URI: the upstream is always told where.
        upstream_params.append(("redirect_uri", accepted.destination.redirect_uri))
    upstream_params.append(("state", handle))
    challenge = accepted.params.get("code_challenge")
    flow = Flow(
        client_id=accepted.destination.client_id,
        redirect_uri=accepted.destination.redirect_uri,
        response_type=accepted.params.get("response_type", ""),
        response_mode=accepted.destination.response_mode,
        state=accepted.destination.state,
        source=accepted.source,
        par_key=par_key,
        code_challenge=challenge,
        code_challenge_method=(
            accepted.params.get("code_challenge_method", "plain") if challenge else None
        ),
        redirect_uri_named=named,
    )
    query = encode_query(upstream_params, config_of(request).prequoted)
    target = f"{settings.authorization_path}?{query}"
    return PendingFlow(handle, flow, upstream_params, target, settings.flow_ttl_seconds)


async def send_upstream(
    request: web.Request, target: str, pending: PendingFlow | None = None
) -> web.StreamResponse:
    """Call the upstream's authorization endpoint server-side (with the browser's headers
    and cookies) and answer with what it says, completing the flow if it redirects back."""
    upstream = await request.app[appkeys.UPSTREAM].open(
        request,
        raw_target=target,
        method="GET",
        with_body=False,
        request_id=REQUEST_ID.get(),
        scanned=scans(request, pending),
    )
    return await relay_or_complete(request, upstream, pending)


async def open_as_sent(request: web.Request, raw_target: str | None = None) -> UpstreamAnswer:
    """The request as it came (to ``raw_target`` if given), its body too: the gateway read
    the whole body to check it, so that copy goes upstream."""
    body = (
        await read_request_body(request)
        if request.method == "POST" and request.body_exists
        else None
    )
    return await request.app[appkeys.UPSTREAM].open(
        request,
        raw_target=raw_target,
        request_id=REQUEST_ID.get(),
        read_body=body,
        scanned=scans(request),
    )


async def pass_on(request: web.Request, raw_target: str | None = None) -> web.StreamResponse:
    """Send the request upstream as it came (to ``raw_target`` if given) and answer with
    what the upstream says."""
    return await relay_or_complete(request, await open_as_sent(request, raw_target))
