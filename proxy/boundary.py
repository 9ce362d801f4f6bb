"""The error boundary: every error the gateway answers with becomes a response here.

:func:`answer` is the one place an error reaches the client. A refusal whose redirect URI
is trusted (:meth:`proxy.errors.Refusal.to`) goes back there as an authorization error
response, ``error``, ``error_description``, ``state`` and ``iss`` and nothing else (OIDC
Core section 3.1.2.6), wrapped in JARM for JWT modes (JARM section 2.1). Everything else,
outages included, is answered on the gateway's own page: JSON ``{error,
error_description}``, or HTML for browsers (never on back-channel endpoints). Each refusal
is counted and logged with its rule, on the request's access line.
"""

from __future__ import annotations

import json
import logging

from aiohttp import web

from . import appkeys
from . import error_page as page
from .errors import (
    GatewayError,
    InvalidClient,
    MethodNotAllowed,
    ServerError,
    StoreUnavailable,
    TemporarilyUnavailable,
)
from .observability import DECISION, ERROR, FLOW, REQUEST_ID, decide
from .response.deliver import RESPONSE_HEADERS, deliver
from .routing import BACK_CHANNEL

log = logging.getLogger("jargate")

_PAGE_HEADERS = {**RESPONSE_HEADERS, "X-Content-Type-Options": "nosniff"}
#: The HTML page loads nothing and runs nothing; an operator's page may carry its own
#: inline styles and data: images.
_PAGE_POLICY = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def wants_html(request: web.BaseRequest) -> bool:
    """True when the client accepts ``text/html`` and not JSON (a browser)."""
    accept = request.headers.get("Accept", "")
    return "text/html" in accept and "application/json" not in accept


async def answer(request: web.Request, err: GatewayError) -> web.StreamResponse:
    """The response for ``err``: delivered to its trusted destination, or the gateway's
    page. Counted: outages by what failed, refusals as decisions with their rule."""
    _count(request, err)
    request[ERROR] = {"error": err.error, "reason": err.rule}
    back_channel = request.get(BACK_CHANNEL, False)
    if err.destination is not None and not back_channel:
        params = [("error", err.error), ("error_description", err.description)]
        return await deliver(request, err.destination, params)
    return error_page(request, err, json_only=back_channel)


async def unexpected(request: web.Request) -> web.StreamResponse:
    """The answer to an error nothing foresaw: logged with its traceback, ``server_error``
    to the client (never the detail)."""
    log.exception("unhandled error")
    return await answer(request, ServerError())


def _count(request: web.Request, err: GatewayError) -> None:
    metrics = request.app[appkeys.METRICS]
    if isinstance(err, StoreUnavailable):
        metrics.store_errors.inc()
    elif isinstance(err, TemporarilyUnavailable):
        metrics.upstream_errors.labels("timeout" if err.status == 504 else "unreachable").inc()
    flow = request.get(FLOW)
    if flow is not None and DECISION not in request:
        decide(request, flow.client_id, "refused", err.error, flow.source, reason=err.rule)


def error_page(request: web.Request, err: GatewayError, json_only: bool = False) -> web.Response:
    """The gateway answers itself: JSON ``{error, error_description}``, or HTML for browsers
    (never for back-channel endpoints: ``json_only``): the settings' page template, with
    the request id for support."""
    headers = dict(_PAGE_HEADERS)
    scheme = request.headers.get("Authorization", "").strip().split(None, 1)
    if isinstance(err, InvalidClient) and scheme and scheme[0].lower() == "basic":
        headers["WWW-Authenticate"] = 'Basic realm="jargate", charset="UTF-8"'
    if isinstance(err, MethodNotAllowed):
        headers["Allow"] = err.allow
    if not json_only and wants_html(request):
        headers["Content-Security-Policy"] = _PAGE_POLICY
        template = request.app[appkeys.SETTINGS].error_page
        body = page.render(template, err.error, err.description, REQUEST_ID.get())
        return web.Response(status=err.status, text=body, content_type="text/html", headers=headers)
    payload = {"error": err.error, "error_description": err.description}
    return web.Response(
        status=err.status,
        text=json.dumps(payload),
        content_type="application/json",
        headers=headers,
    )
