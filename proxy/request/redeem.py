"""A pushed request's ``request_uri`` used at the authorization endpoint (RFC 9126 section 4).

Other parameters are ignored. The pushed request is taken from the store at first use
(one round trip; a second use, even a concurrent one, finds nothing), within its
``expires_in``. If its flow must wait (a login page), it is stored again with the flow,
marked with the flow's handle and bound to the same browser, until the ``request_uri``
expires: a reload by that browser meanwhile continues the same flow; from another
browser, or once expired, it is refused; once the flow completed, it is gone. The handle
is bound to the client that pushed it: with another ``client_id`` nothing is found and
nothing taken.
"""

from __future__ import annotations

import time
from dataclasses import replace

from aiohttp import web

from proxy import appkeys
from proxy.binding import check_bound
from proxy.clients import RegisteredClient
from proxy.errors import InvalidRequest, InvalidRequestUri
from proxy.flows import peek_flow
from proxy.observability import decide

from .accept import Accepted, trusted_destination
from .forward import send_upstream, start_flow
from .pushed import pushed_key, take_pushed

_UNUSABLE = "the request_uri is unknown, expired or already used"


async def authorize_pushed(
    request: web.Request, params: dict[str, str], client: RegisteredClient
) -> web.StreamResponse:
    """Continue with the pushed request ``params["request_uri"]`` names."""
    app = request.app
    settings, store = app[appkeys.SETTINGS], app[appkeys.STORE]
    key = pushed_key(client.client_id, params["request_uri"])
    pushed = await take_pushed(store, key)
    now = time.time()
    if pushed is None or pushed.remaining(now) <= 0:
        raise InvalidRequestUri(_UNUSABLE, rule="request_uri.pushed_unknown")
    if pushed.handle is not None and pushed.target is not None:
        # A reload while its flow waits: only its own browser continues it.
        try:
            check_bound(request, settings, pushed.browser or "")
        except InvalidRequest:
            await store.put(key, pushed.to_json(), pushed.remaining(now))
            raise InvalidRequestUri(
                "this request_uri is in use in another browser", rule="request_uri.other_browser"
            ) from None
        if await peek_flow(store, pushed.handle) is None:
            raise InvalidRequestUri(_UNUSABLE, rule="request_uri.pushed_unknown")
        await store.put(key, pushed.to_json(), pushed.remaining(now))
        decide(request, client.client_id, "accepted", "none", "par")
        return await send_upstream(request, pushed.target)
    accepted = Accepted(
        params=pushed.params,
        destination=trusted_destination(pushed.params, client, InvalidRequestUri),
        source="par",
    )
    pending = await start_flow(request, accepted, par_key=key)
    mark = replace(pushed, handle=pending.handle, target=pending.target)
    pending.also = ((key, mark, pushed.remaining(now)),)
    decide(request, client.client_id, "accepted", "none", "par")
    return await send_upstream(request, pending.target, pending)
