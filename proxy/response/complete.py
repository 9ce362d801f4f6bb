"""Completing a flow: the upstream's answer back to the client becomes the gateway's answer.

Every upstream answer relayed to a browser is looked at here. An answer that names an exit
out of the gateway's origin carrying a flow handle (:mod:`.exits`: a redirect, a
``Refresh`` header, or a page that moves the browser on, :mod:`.scan`) completes that
flow: the flow is the one this request forwarded (never stored) or is taken from the store
once (a replayed callback finds nothing) by the browser it is bound to; the exit must be
the flow's redirect URI; and the client gets its response from the gateway's response
builder, in the mode it asked for, or not at all. Something that looks like a handle but
is unknown or expired gets the gateway's error page, never the upstream's answer.
"""

from __future__ import annotations

from collections import Counter
from urllib.parse import SplitResult, parse_qsl, urlsplit

from aiohttp import web

from proxy import appkeys
from proxy.binding import browser_of, check_bound, presented
from proxy.codes import carries_code, deliver_codes
from proxy.config import config_of
from proxy.errors import InvalidRequest, UpstreamRedirectMismatch, UpstreamUncheckable
from proxy.flows import Destination, Flow, PendingFlow, store_pending, take_flow
from proxy.profiles import policy_of
from proxy.upstream import UpstreamAnswer, address_group, client_address

from .deliver import deliver
from .exits import Exit, header_exit
from .scan import Page, carries_handle, is_page, page_exit, read_page


def response_params(
    target: SplitResult,
    query: list[tuple[str, str]],
    extra: list[tuple[str, str]],
    redirect_uri: str,
) -> list[tuple[str, str]] | None:
    """The response parameters the upstream added to ``redirect_uri`` (the exit's
    ``target`` with its parsed ``query``, and ``extra``: its fragment or form fields), or
    None when the exit is not the redirect URI (its own query kept, RFC 6749 section 3.1.2)."""
    registered = urlsplit(redirect_uri)
    if (target.scheme, target.netloc, target.path) != (
        registered.scheme,
        registered.netloc,
        registered.path,
    ):
        return None
    if not registered.query:
        return query + extra
    own = Counter(parse_qsl(registered.query, keep_blank_values=True))
    if own - Counter(query):
        return None
    added: list[tuple[str, str]] = []
    for pair in query:
        if own[pair]:
            own[pair] -= 1
        else:
            added.append(pair)
    return added + extra


async def complete(
    request: web.Request, upstream: UpstreamAnswer, exit_: Exit, pending: PendingFlow | None
) -> web.StreamResponse | None:
    """The gateway's answer for the flow ``exit_`` completes; None when it completes none."""
    app = request.app
    settings = app[appkeys.SETTINGS]
    registry = config_of(request).registry
    handle = exit_.completing(settings, registry.redirect_places)
    if handle is None:
        return None
    in_memory = pending.flow if pending is not None and handle == pending.handle else None
    flow = in_memory or await take_flow(app[appkeys.STORE], handle)
    if flow is None:
        raise InvalidRequest(
            "this authorization response belongs to an unknown, expired or completed flow",
            rule="flow.unknown_response",
        )
    if in_memory is None:
        check_bound(request, settings, flow.browser)
        if flow.par_key is not None:
            # RFC 9126 section 4: the pushed request is used up once its flow completed.
            await app[appkeys.STORE].take(flow.par_key)
    params = response_params(exit_.target, exit_.query, exit_.extra, flow.redirect_uri)
    if params is None:
        raise UpstreamRedirectMismatch()
    if carries_code(params):
        # The token endpoint redeems only codes it delivered (proxy/token).
        lifetime = policy_of(settings, registry.get(flow.client_id)).code_lifetime
        keys = config_of(request).keyring.code_keys
        params = await deliver_codes(app[appkeys.STORE], keys, params, flow, lifetime)
    # The gateway's page or redirect carries only its own headers, and the upstream's
    # cookies (its session): another policy (a CSP of the upstream's) would break it.
    cookies = [("Set-Cookie", value) for value in upstream.headers.getall("Set-Cookie", ())]
    return await deliver(request, destination_of(flow), params, cookies)


def destination_of(flow: Flow) -> Destination:
    """Where the flow's response goes."""
    return Destination(
        client_id=flow.client_id,
        redirect_uri=flow.redirect_uri,
        response_type=flow.response_type,
        response_mode=flow.response_mode,
        state=flow.state,
    )


def scans(request: web.Request, pending: PendingFlow | None = None) -> bool:
    """A page can complete a flow only in the request that forwarded it, or for a browser
    that has flows (it carries the binding cookie): only those answers are read."""
    return pending is not None or presented(request, request.app[appkeys.SETTINGS]) is not None


async def relay_or_complete(
    request: web.Request, upstream: UpstreamAnswer, pending: PendingFlow | None = None
) -> web.StreamResponse:
    """Complete the flow this answer finishes, or relay the answer unchanged; a ``pending``
    flow this answer does not finish is stored first, bound to the browser (it is sent
    elsewhere, a login page, and will come back with its handle)."""
    try:
        exit_ = header_exit(upstream.status, upstream.headers)
        page: Page | None = None
        if exit_ is None and request.method != "HEAD" and scans(request, pending):
            page = await _page_of(upstream)
            if page is not None:
                settings = request.app[appkeys.SETTINGS]
                places = config_of(request).registry.redirect_places
                exit_ = page_exit(page, settings, places)
        if exit_ is not None:
            answer = await complete(request, upstream, exit_, pending)
            if answer is not None:
                return answer
        extra: list[tuple[str, str]] = []
        if pending is not None:
            settings = request.app[appkeys.SETTINGS]
            browser = browser_of(request, settings)
            source = None
            if pending.flow.source == "plain":
                source = address_group(client_address(request, settings.trusted_proxies))
            started = request.raw_path.partition("?")[2]
            await store_pending(
                request.app[appkeys.STORE], pending, browser.digest, started, source
            )
            if browser.new:
                extra.append(browser.set_cookie(settings))
        if page is None:
            return await request.app[appkeys.UPSTREAM].relay(request, upstream, extra)
        cut = None if page.complete else carries_handle
        return await request.app[appkeys.UPSTREAM].relay(request, upstream, extra, page.raw, cut)
    finally:
        upstream.release()


async def _page_of(upstream: UpstreamAnswer) -> Page | None:
    """The upstream's HTML page read to be checked, or None when the answer is no page."""
    if not is_page(upstream.headers.get("Content-Type", ""), upstream.status):
        return None
    page = await read_page(upstream.content, upstream.headers.get("Content-Encoding", ""))
    if not page.complete and page.coding != "identity":
        raise UpstreamUncheckable()
    return page
