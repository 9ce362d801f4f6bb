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
from proxy.observability import decide, note

from .forward import pass_on
from .params import AUTHORIZATION_PARAMETERS, JSON_PARAMETERS, RawParameters


def handle_of(raw: RawParameters) -> str | None:
    """The flow handle a request carries as ``state``, if any."""
    for value in raw.values("state"):
        if looks_like_handle(value):
            return value
    return None


async def reenter(request: web.Request, raw: RawParameters, handle: str) -> web.StreamResponse:
    """Pass on a request the upstream sent back, if it resumes its flow unchanged."""
    app = request.app
    note(request, None, "reentry")
    flow = await peek_flow(app[appkeys.STORE], handle)
    if flow is None:
        raise InvalidRequest(
            "this authorization flow is unknown or has expired", rule="flow.unknown"
        )
    note(request, flow.client_id, "reentry")
    check_bound(request, app[appkeys.SETTINGS], flow.browser)
    at_start = request.method == "POST" and posted_to_start(request, flow.started)
    # A form without action shown at once posts to the page's URL, the client's request
    # that started the flow: only its body resumes it, and only the body goes upstream
    # (a server that merges query and body must not read the client's own parameters).
    check_resumes(RawParameters([], raw.form) if at_start else raw, flow.forwarded)
    decide(request, flow.client_id, "accepted", "none", "reentry")
    if at_start:
        return await pass_on(request, raw_target=request.raw_path.partition("?")[0])
    return await pass_on(request)


def posted_to_start(request: web.Request, started: str) -> bool:
    """True when the request's query is the one the flow was started with."""
    query = request.raw_path.partition("?")[2]
    return bool(started) and hmac.compare_digest(value_digest(query), started)


def check_resumes(raw: RawParameters, forwarded: dict[str, str]) -> None:
    """Refuse a request that changes or adds what the flow's forwarded request said."""
    for name, value in raw.merged():
        expected = forwarded.get(name)
        if expected is not None:
            if not hmac.compare_digest(value_digest(value), expected):
                raise InvalidRequest(
                    f"parameter {name!r} differs from the flow it resumes",
                    rule="reentry.changed",
                )
        elif name in AUTHORIZATION_PARAMETERS and not means_absent(name, value):
            raise InvalidRequest(
                f"parameter {name!r} was not in the flow it resumes", rule="reentry.added"
            )


def means_absent(name: str, value: str) -> bool:
    """A value that says the parameter is not there: empty (RFC 6749 section 3.1), or JSON
    ``null`` for a JSON-valued one (django-oauth-toolkit's consent form sends both)."""
    return value == "" or (name in JSON_PARAMETERS and value == "null")
