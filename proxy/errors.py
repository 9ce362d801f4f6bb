"""The OAuth error model, and the gateway's own error page.

Every refusal the gateway makes is one of these, each with the RFC's short code::

    GatewayError                      error                     status
    ├── InvalidRequest                invalid_request           400
    │   ├── PayloadTooLarge                                     413
    │   ├── MethodNotAllowed                                    405
    │   └── PolicyRefusal             (report mode lets it pass)
    ├── InvalidRequestObject          invalid_request_object    400
    │   └── ReplayedObject
    │       └── ForgottenByStore
    ├── InvalidRequestUri             invalid_request_uri       400
    ├── RequestNotSupported           request_not_supported     400
    ├── RequestUriNotSupported        request_uri_not_supported 400
    ├── UnauthorizedClient            unauthorized_client       400
    ├── InvalidClient                 invalid_client            401
    ├── ServerError                   server_error              500
    │   ├── JarmKeyMissing
    │   ├── UpstreamRedirectMismatch                            502
    │   └── UpstreamUncheckable                                 502
    └── TemporarilyUnavailable        temporarily_unavailable   503
        ├── StoreUnavailable                                    503
        │   └── TooManyPendingFlows
        ├── UpstreamUnavailable                                 502
        └── UpstreamTimeout                                     504

One place, :func:`error_page`, turns an error into the gateway's own answer (JSON, or
HTML for browsers). Where an error is delivered instead by redirect to the client is
decided on the request path, which knows whether the redirect URI is trusted.

An error's ``error`` and ``description`` only ever hold the characters RFC 6749 allows
in ``error`` and ``error_description`` (:func:`oauth_text`), whatever they were built
from; the exception's own message (``str(err)``, for logs) keeps the text as written.
"""

from __future__ import annotations

import html
import json
import logging
import re
from typing import Any

from aiohttp import web

log = logging.getLogger("jargate")

#: RFC 6749 section 4.1.2.1 (and 5.2): error and error_description are
#: %x20-21 / %x23-5B / %x5D-7E.
_OAUTH_TEXT = re.compile(r"[\x20\x21\x23-\x5b\x5d-\x7e]*")
_NOT_OAUTH_TEXT = re.compile(r"[^\x20\x21\x23-\x5b\x5d-\x7e]")
_REPLACEMENTS = {'"': "'", "\\": "/"}


def _replacement(match: re.Match[str]) -> str:
    return _REPLACEMENTS.get(match.group(), "?")


def oauth_text(value: object) -> str:
    """``value`` as text RFC 6749 allows in ``error`` and ``error_description``: ``"``
    becomes ``'``, ``\\`` becomes ``/``, every other character outside printable ASCII
    becomes ``?``. Never raises, whatever it is given."""
    if isinstance(value, str):
        text = value
    else:
        try:
            text = str(value)
        except Exception:
            return "?"
    if _OAUTH_TEXT.fullmatch(text):
        return text
    return _NOT_OAUTH_TEXT.sub(_replacement, text)


#: The attributes a client sees; always set through :func:`oauth_text`.
_CLIENT_FACING = ("error", "description")


class GatewayError(Exception):
    """Root of every error the gateway answers with; carries an OAuth error code."""

    error: str = "server_error"
    status: int = 400
    description: str = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in _CLIENT_FACING:
            if name in vars(cls):
                setattr(cls, name, oauth_text(vars(cls)[name]))

    def __init__(self, description: str | None = None) -> None:
        if description is not None:
            self.description = description
        super().__init__(
            f"{self.error}: {self.description if description is None else description}"
        )

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, oauth_text(value) if name in _CLIENT_FACING else value)


class InvalidRequest(GatewayError):
    """RFC 6749 §4.1.2.1: the request is missing, repeats or misuses a parameter."""

    error = "invalid_request"


class PayloadTooLarge(InvalidRequest):
    """A body larger than the gateway reads (``JARGATE_MAX_BODY_BYTES``)."""

    status = 413


class MethodNotAllowed(InvalidRequest):
    """A method the gateway does not answer on one of its own paths (never forwarded)."""

    status = 405

    def __init__(self, description: str, *, allow: str) -> None:
        super().__init__(description)
        self.allow = allow


class PolicyRefusal(InvalidRequest):
    """The client's registered policy forbids this request (``report`` mode lets it pass)."""


class InvalidRequestObject(GatewayError):
    """RFC 9101 §7: the request object is invalid (signature, claims, encryption)."""

    error = "invalid_request_object"


class ReplayedObject(InvalidRequestObject):
    """The request object was already used (its ``jti`` is claimed in the store)."""

    description = "this request object was already used (replay)"


class ForgottenByStore(ReplayedObject):
    """Made before the store's memory began (a Redis restarted empty): it may have been used
    before, unremembered, so it is refused as a replay would be."""

    description = "this request was made before the gateway lost its replay records; make a new one"


class InvalidRequestUri(GatewayError):
    """RFC 9101 §7 / RFC 9126 §4: the request_uri cannot be used."""

    error = "invalid_request_uri"


class RequestNotSupported(GatewayError):
    """RFC 9101 §7: the ``request`` parameter is not supported."""

    error = "request_not_supported"


class RequestUriNotSupported(GatewayError):
    """RFC 9101 §7: the ``request_uri`` parameter is not supported (for this client)."""

    error = "request_uri_not_supported"


class UnauthorizedClient(GatewayError):
    """RFC 6749 §4.1.2.1: the client may not use this method."""

    error = "unauthorized_client"


class InvalidClient(GatewayError):
    """RFC 6749 §5.2: client authentication failed (PAR endpoint)."""

    error = "invalid_client"
    status = 401


class ServerError(GatewayError):
    """Something the gateway could not handle; never carries internal detail."""

    error = "server_error"
    status = 500
    description = "the gateway could not process the request"


class JarmKeyMissing(ServerError):
    """The gateway or the client lacks the key a JARM response needs. What is missing is
    logged (an operator's problem), never told to the client."""

    def __init__(self, detail: str) -> None:
        super().__init__()
        self.detail = detail
        log.error("a JARM response cannot be made", extra={"problem": detail})


class UpstreamRedirectMismatch(ServerError):
    """The upstream sent a flow's response somewhere other than its redirect URI."""

    status = 502
    description = "the upstream redirected the flow to an unexpected URI"


class UpstreamUncheckable(ServerError):
    """An upstream page the gateway must check (it may carry a flow's response) and cannot:
    a content coding it did not ask for, or a compressed page too large to read."""

    status = 502
    description = "the upstream's page could not be checked"


class TemporarilyUnavailable(GatewayError):
    """A dependency is down: the gateway fails closed rather than guess."""

    error = "temporarily_unavailable"
    status = 503


class StoreUnavailable(TemporarilyUnavailable):
    """The store (Redis) cannot be reached or answered with an error."""

    description = "the gateway's store is unavailable"


class TooManyPendingFlows(StoreUnavailable):
    """A source (an address) already has as many plain authorization requests waiting at
    a login page as it may keep (``JARGATE_MAX_PENDING_PLAIN_FLOWS_PER_ADDRESS``)."""

    description = (
        "too many authorization requests from this address are waiting for a login;"
        " complete or abandon them and try again later"
    )


class UpstreamUnavailable(TemporarilyUnavailable):
    """The upstream authorization server refused or reset the connection."""

    status = 502
    description = "the upstream authorization server is unreachable"


class UpstreamTimeout(TemporarilyUnavailable):
    """The upstream authorization server did not answer in time."""

    status = 504
    description = "the upstream authorization server did not answer in time"


def wants_html(request: web.BaseRequest) -> bool:
    """True when the client accepts ``text/html`` and not JSON (a browser)."""
    accept = request.headers.get("Accept", "")
    return "text/html" in accept and "application/json" not in accept


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Authorization error</title>
<meta name="robots" content="noindex"></head>
<body><h1>Authorization error</h1><p><code>{error}</code></p><p>{description}</p></body></html>
"""

_NO_STORE = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


def error_page(
    request: web.BaseRequest, err: GatewayError, json_only: bool = False
) -> web.Response:
    """The gateway answers itself: JSON ``{error, error_description}``, or HTML for browsers
    (never for back-channel endpoints: ``json_only``)."""
    headers = dict(_NO_STORE)
    scheme = request.headers.get("Authorization", "").strip().split(None, 1)
    if isinstance(err, InvalidClient) and scheme and scheme[0].lower() == "basic":
        headers["WWW-Authenticate"] = 'Basic realm="jargate", charset="UTF-8"'
    if isinstance(err, MethodNotAllowed):
        headers["Allow"] = err.allow
    if not json_only and wants_html(request):
        headers["Content-Security-Policy"] = "default-src 'none'"
        body = _PAGE.format(error=html.escape(err.error), description=html.escape(err.description))
        return web.Response(status=err.status, text=body, content_type="text/html", headers=headers)
    payload = {"error": err.error, "error_description": err.description}
    return web.Response(
        status=err.status,
        text=json.dumps(payload),
        content_type="application/json",
        headers=headers,
    )
