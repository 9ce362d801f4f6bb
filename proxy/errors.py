"""The gateway's errors: what each one is, and where it may be delivered.

Every error the gateway answers with is a :class:`Refusal` (a request it will not serve,
with the RFC's code, an HTTP status and a stable rule id) or an outage, a
:class:`TemporarilyUnavailable` (a dependency is down: it fails closed)::

    GatewayError                          error                     status
    ├── Refusal
    │   ├── InvalidRequest                invalid_request           400
    │   │   ├── PayloadTooLarge                                     413
    │   │   ├── MethodNotAllowed                                    405
    │   │   └── PolicyRefusal             (report mode lets it pass)
    │   ├── InvalidRequestObject          invalid_request_object    400
    │   │   └── ReplayedObject
    │   │       └── ForgottenByStore
    │   ├── InvalidRequestUri             invalid_request_uri       400
    │   ├── RequestNotSupported           request_not_supported     400
    │   ├── RequestUriNotSupported        request_uri_not_supported 400
    │   ├── UnauthorizedClient            unauthorized_client       400
    │   ├── UnsupportedResponseType       unsupported_response_type 400
    │   ├── InvalidClient                 invalid_client            401
    │   ├── InvalidGrant                  invalid_grant             400
    │   └── ServerError                   server_error              500
    │       ├── JarmKeyMissing
    │       ├── UpstreamRedirectMismatch                            502
    │       └── UpstreamUncheckable                                 502
    └── TemporarilyUnavailable (outages)  temporarily_unavailable   503
        ├── StoreUnavailable                                    503
        │   └── TooManyPendingFlows
        ├── UpstreamUnavailable                                 502
        └── UpstreamTimeout                                     504

A refusal made where the client's redirect URI is trusted carries that destination
(:meth:`Refusal.to`); one place, :func:`proxy.boundary.answer`, delivers every error:
to the destination as an authorization error response, or on the gateway's own page.

An error's ``error`` and ``description`` only ever hold the characters RFC 6749 allows
in ``error`` and ``error_description`` (:func:`oauth_text`), whatever they were built
from; the exception's own message (``str(err)``, for logs) keeps the text as written.
Each error names the rule that refused (``rule``, e.g. ``request_object.aud``): in the
log line and the decision metric, never to the client.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .flows import Destination

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
    #: The stable identifier of the rule that refused (a fixed list, docs/reference.md).
    rule: str = "gateway"
    #: Where the error may be delivered as an authorization error response (a trusted
    #: redirect URI); None: the gateway's own page.
    destination: Destination | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in _CLIENT_FACING:
            if name in vars(cls):
                setattr(cls, name, oauth_text(vars(cls)[name]))

    def __init__(self, description: str | None = None, *, rule: str | None = None) -> None:
        if description is not None:
            self.description = description
        if rule is not None:
            self.rule = rule
        super().__init__(
            f"{self.error}: {self.description if description is None else description}"
        )

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, oauth_text(value) if name in _CLIENT_FACING else value)


class Refusal(GatewayError):
    """A request the gateway will not serve."""

    def to(self, destination: Destination) -> Refusal:
        """This refusal, to be delivered to ``destination`` (its redirect URI is trusted)."""
        self.destination = destination
        return self


class InvalidRequest(Refusal):
    """RFC 6749 §4.1.2.1: the request is missing, repeats or misuses a parameter."""

    rule = "request"
    error = "invalid_request"


class PayloadTooLarge(InvalidRequest):
    """A body larger than the gateway reads (``JARGATE_MAX_BODY_BYTES``)."""

    rule = "request.body_size"
    status = 413


class MethodNotAllowed(InvalidRequest):
    """A method the gateway does not answer on one of its own paths (never forwarded)."""

    rule = "route.method"
    status = 405

    def __init__(self, description: str, *, allow: str) -> None:
        super().__init__(description)
        self.allow = allow


class PolicyRefusal(InvalidRequest):
    """The client's registered policy forbids this request (``report`` mode lets it pass)."""

    rule = "policy"


class InvalidRequestObject(Refusal):
    """RFC 9101 §7: the request object is invalid (signature, claims, encryption)."""

    rule = "request_object"
    error = "invalid_request_object"


class ReplayedObject(InvalidRequestObject):
    """The request object was already used (its ``jti`` is claimed in the store)."""

    rule = "request_object.replay"
    description = "this request object was already used (replay)"


class ForgottenByStore(ReplayedObject):
    """Made before the store's memory began (a Redis restarted empty): it may have been used
    before, unremembered, so it is refused as a replay would be."""

    rule = "request_object.made_before_store_reset"
    description = "this request was made before the gateway lost its replay records; make a new one"


class InvalidRequestUri(Refusal):
    """RFC 9101 §7 / RFC 9126 §4: the request_uri cannot be used."""

    rule = "request_uri"
    error = "invalid_request_uri"


class RequestNotSupported(Refusal):
    """RFC 9101 §7: the ``request`` parameter is not supported."""

    rule = "request.not_supported"
    error = "request_not_supported"


class RequestUriNotSupported(Refusal):
    """RFC 9101 §7: the ``request_uri`` parameter is not supported (for this client)."""

    rule = "request_uri.not_supported"
    error = "request_uri_not_supported"


class UnauthorizedClient(Refusal):
    """RFC 6749 §4.1.2.1: the client may not use this method."""

    rule = "client.unauthorized"
    error = "unauthorized_client"


class UnsupportedResponseType(Refusal):
    """RFC 6749 §4.1.2.1: the response type is not allowed (FAPI 2.0: code only)."""

    rule = "fapi2.response_type"
    error = "unsupported_response_type"


class InvalidClient(Refusal):
    """RFC 6749 §5.2: client authentication failed (PAR endpoint)."""

    rule = "client_authentication"
    error = "invalid_client"
    status = 401


class InvalidGrant(Refusal):
    """RFC 6749 §5.2: the code is invalid, expired, used, or not this client's; its
    redirect URI or PKCE verifier does not match (token endpoint)."""

    rule = "token.grant"
    error = "invalid_grant"


class ServerError(Refusal):
    """Something the gateway could not handle; never carries internal detail."""

    rule = "server"
    error = "server_error"
    status = 500
    description = "the gateway could not process the request"


class JarmKeyMissing(ServerError):
    """The gateway or the client lacks the key a JARM response needs. What is missing is
    logged (an operator's problem), never told to the client."""

    rule = "jarm.key_missing"

    def __init__(self, detail: str) -> None:
        super().__init__()
        self.detail = detail
        log.error("a JARM response cannot be made", extra={"problem": detail})


class UpstreamRedirectMismatch(ServerError):
    """The upstream sent a flow's response somewhere other than its redirect URI."""

    rule = "response.redirect_mismatch"
    status = 502
    description = "the upstream redirected the flow to an unexpected URI"


class UpstreamUncheckable(ServerError):
    """An upstream page the gateway must check (it may carry a flow's response) and cannot:
    a content coding it did not ask for, or a compressed page too large to read."""

    rule = "response.uncheckable"
    status = 502
    description = "the upstream's page could not be checked"


class TemporarilyUnavailable(GatewayError):
    """An outage: a dependency is down, and the gateway fails closed rather than guess.
    Always answered on the gateway's own page (never a redirect to the client)."""

    rule = "outage"
    error = "temporarily_unavailable"
    status = 503


class StoreUnavailable(TemporarilyUnavailable):
    """The store (Redis) cannot be reached or answered with an error."""

    rule = "outage.store"
    description = "the gateway's store is unavailable"


class TooManyPendingFlows(StoreUnavailable):
    """A source (an address) already has as many plain authorization requests waiting at
    a login page as it may keep (``JARGATE_MAX_PENDING_PLAIN_FLOWS_PER_ADDRESS``)."""

    rule = "store.pending_flows_per_address"
    description = (
        "too many authorization requests from this address are waiting for a login;"
        " complete or abandon them and try again later"
    )


class UpstreamUnavailable(TemporarilyUnavailable):
    """The upstream authorization server refused or reset the connection."""

    rule = "outage.upstream"
    status = 502
    description = "the upstream authorization server is unreachable"


class UpstreamTimeout(TemporarilyUnavailable):
    """The upstream authorization server did not answer in time."""

    rule = "outage.upstream_timeout"
    status = 504
    description = "the upstream authorization server did not answer in time"
