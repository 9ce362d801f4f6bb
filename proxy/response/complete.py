"""Completing a flow: the upstream's redirect back to the client becomes the gateway's answer.

Every proxied upstream response is looked at here. A redirect whose ``Location`` carries
a flow handle as ``state`` (query or fragment) and leaves the upstream completes that
flow: the flow is the one this request forwarded (never stored) or is taken from the
store once (a replayed callback finds nothing), the Location must be
the flow's redirect URI plus response parameters, and the client gets its response in
the mode it asked for. Something that looks like a handle but is unknown or expired is
not passed on raw: the client expected the gateway's answer, so it gets the gateway's
error page instead.
"""

from __future__ import annotations

from collections import Counter
from urllib.parse import SplitResult, parse_qsl, urlsplit

from aiohttp import web

from proxy import appkeys
from proxy.errors import InvalidRequest, UpstreamRedirectMismatch
from proxy.flows import (
    HANDLE_PREFIX,
    Flow,
    PendingFlow,
    looks_like_handle,
    store_pending,
    take_flow,
)
from proxy.upstream import UpstreamAnswer, end_to_end

from .deliver import Destination, deliver

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
#: Headers of the upstream's redirect that do not describe the gateway's answer.
_REPLACED = frozenset({"location", "content-length", "content-type", "content-encoding"})


def _state_of(pairs: list[tuple[str, str]]) -> str | None:
    for name, value in pairs:
        if name == "state":
            return value
    return None


def is_internal(location: str, request: web.BaseRequest, issuer: str) -> bool:
    """True when a Location stays with the upstream (a login page, a re-entry)."""
    target = urlsplit(location)
    if not target.netloc:
        return True
    own = {urlsplit(issuer).netloc.lower(), request.host.lower()}
    return target.netloc.lower() in own


def response_params(
    target: SplitResult,
    query: list[tuple[str, str]],
    fragment: list[tuple[str, str]],
    redirect_uri: str,
) -> list[tuple[str, str]] | None:
    """The response parameters the upstream added to ``redirect_uri`` (the Location
    ``target`` with its parsed ``query`` and ``fragment``), or None when the Location is
    not the redirect URI (its own query kept, RFC 6749 §3.1.2)."""
    registered = urlsplit(redirect_uri)
    if (target.scheme, target.netloc, target.path) != (
        registered.scheme,
        registered.netloc,
        registered.path,
    ):
        return None
    if not registered.query:
        return query + fragment
    own = Counter(parse_qsl(registered.query, keep_blank_values=True))
    if own - Counter(query):
        return None
    added: list[tuple[str, str]] = []
    for pair in query:
        if own[pair]:
            own[pair] -= 1
        else:
            added.append(pair)
    return added + fragment


async def complete_flow(
    request: web.Request, upstream: UpstreamAnswer, pending: PendingFlow | None = None
) -> web.StreamResponse | None:
    """The gateway's answer when ``upstream`` completes a flow; None when it does not.
    ``pending``: the flow this very request forwarded, not stored (nothing to take)."""
    location = upstream.headers.get("Location")
    if upstream.status not in REDIRECT_STATUSES or not location or HANDLE_PREFIX not in location:
        return None
    target = urlsplit(location)
    query = parse_qsl(target.query, keep_blank_values=True)
    fragment = parse_qsl(target.fragment, keep_blank_values=True)
    handle = _state_of(query) or _state_of(fragment)
    app = request.app
    issuer = app[appkeys.SETTINGS].issuer
    if handle is None or not looks_like_handle(handle) or is_internal(location, request, issuer):
        return None
    in_memory = pending.flow if pending is not None and handle == pending.handle else None
    flow = in_memory or await take_flow(app[appkeys.STORE], handle)
    if flow is None:
        raise InvalidRequest(
            "this authorization response belongs to an unknown, expired or completed flow"
        )
    if flow.par_key is not None and in_memory is None:
        # RFC 9126 §4: the pushed request is used up once its flow completed (a flow
        # completed at once never stored it again).
        await app[appkeys.STORE].take(flow.par_key)
    params = response_params(target, query, fragment, flow.redirect_uri)
    if params is None:
        raise UpstreamRedirectMismatch()
    headers = [
        (name, value)
        for name, value in end_to_end(upstream.headers).items()
        if name.lower() not in _REPLACED
    ]
    return await deliver(app, destination_of(flow), params, headers)


def destination_of(flow: Flow) -> Destination:
    """Where the flow's response goes."""
    return Destination(
        client_id=flow.client_id,
        redirect_uri=flow.redirect_uri,
        response_type=flow.response_type,
        response_mode=flow.response_mode,
        state=flow.state,
    )


async def relay_or_complete(
    request: web.Request, upstream: UpstreamAnswer, pending: PendingFlow | None = None
) -> web.StreamResponse:
    """Complete the flow this response finishes, or relay the response unchanged; a
    ``pending`` flow this response does not finish is stored first (the browser is sent
    elsewhere, a login page, and will come back with its handle)."""
    try:
        answer = await complete_flow(request, upstream, pending)
        if answer is not None:
            return answer
        if pending is not None:
            await store_pending(request.app[appkeys.STORE], pending)
        return await request.app[appkeys.UPSTREAM].relay(request, upstream)
    finally:
        upstream.release()
