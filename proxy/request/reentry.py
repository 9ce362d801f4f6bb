"""Requests the upstream sends back to the authorization endpoint during a flow.

Real servers return the browser to the authorization URL after their own pages, carrying
the flow's handle as ``state``: a login page that replays the saved request (with a
continuation parameter of its own), a consent form without ``action`` posted to the page's
URL (its CSRF token, the user's choice and copies of the parameters in the body), an MFA
step. Such a request passes to the upstream exactly as it came when:

- it comes from the browser the flow is bound to (:mod:`proxy.binding`);
- every parameter the gateway forwarded comes back unchanged or not at all;
- no OAuth authorization request parameter is added (``request``, ``redirect_uri``,
  ``scope``, ...: :data:`~proxy.request.params.AUTHORIZATION_PARAMETERS`);
- a parameter in both the query and the body has one value.

The server's own fields pass untouched. The whole request is read to check it: a body that
is not a UTF-8 form is refused before anything reaches the upstream.
"""

from __future__ import annotations

import hmac

from aiohttp import web

from proxy import appkeys
from proxy.binding import check_bound
from proxy.errors import InvalidRequest
from proxy.flows import looks_like_handle, peek_flow, value_digest

from .accept import decide
from .forward import pass_on
from .params import AUTHORIZATION_PARAMETERS, RawParameters


def handle_of(raw: RawParameters) -> str | None:
    """The flow handle a request carries as ``state``, if any."""
    for value in raw.values("state"):
        if looks_like_handle(value):
            return value
    return None


async def reenter(request: web.Request, raw: RawParameters, handle: str) -> web.StreamResponse:
    """Pass on a request the upstream sent back, if it resumes its flow unchanged."""
    app = request.app
    flow = await peek_flow(app[appkeys.STORE], handle)
    if flow is None:
        raise InvalidRequest("this authorization flow is unknown or has expired")
    try:
        check_bound(request, app[appkeys.SETTINGS], flow.browser)
        check_resumes(raw, flow.forwarded)
    except InvalidRequest as err:
        decide(request, flow.client_id, "refused", err.error, "reentry")
        raise
    decide(request, flow.client_id, "accepted", "none", "reentry")
    return await pass_on(request)


def check_resumes(raw: RawParameters, forwarded: dict[str, str]) -> None:
    """Refuse a request that changes or adds what the flow's forwarded request said."""
    for name, value in raw.merged():
        expected = forwarded.get(name)
        if expected is not None:
            if not hmac.compare_digest(value_digest(value), expected):
                raise InvalidRequest(f"parameter {name!r} differs from the flow it resumes")
        elif name in AUTHORIZATION_PARAMETERS:
            raise InvalidRequest(f"parameter {name!r} was not in the flow it resumes")
