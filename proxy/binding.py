"""Binding a flow to the browser that started it.

A flow that waits (the upstream showed its login page) is stored with the digest of a
random value the gateway keeps in a cookie of the browser that started it. Whatever
resumes or completes the flow later (a re-entry at the authorization endpoint, the
upstream's redirect back to the client, a reload of a pushed request's URL) must come
from a browser with that cookie: a link to someone else's flow, sent to a victim, gets
nothing (login CSRF that would defeat ``state``, PKCE and JARM).

The cookie is ``__Host-`` prefixed, ``Secure``, ``HttpOnly`` and ``Path=/`` (no sibling
domain can set or read it) for an https issuer; for a loopback http issuer (the demo,
tests) it has no prefix and no ``Secure``, which browsers would refuse over http. A
browser keeps one value for all its flows; one it does not have, or a malformed one, is
replaced. A flow that completes in the request that started it (the user was already
signed in) needs no cookie and sets none.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from aiohttp import web

from .errors import InvalidRequest
from .settings import Settings

_VALUE = re.compile(r"^[A-Za-z0-9_-]{43}$")


def cookie_name(settings: Settings) -> str:
    """``__Host-jargate-flow`` for an https issuer, ``jargate-flow`` for loopback http."""
    return "__Host-jargate-flow" if settings.issuer.startswith("https:") else "jargate-flow"


@dataclass(frozen=True, slots=True)
class Browser:
    """The browser's binding value, and whether the gateway must still set it."""

    value: str
    new: bool

    @property
    def digest(self) -> str:
        """What a flow stores (never the value itself)."""
        return hashlib.sha256(self.value.encode()).hexdigest()

    def set_cookie(self, settings: Settings) -> tuple[str, str]:
        """The ``Set-Cookie`` header that gives the browser its value (a session cookie)."""
        attributes = "Path=/; HttpOnly; SameSite=" + settings.flow_cookie_samesite.capitalize()
        if settings.issuer.startswith("https:"):
            attributes += "; Secure"
        return "Set-Cookie", f"{cookie_name(settings)}={self.value}; {attributes}"


def presented(request: web.BaseRequest, settings: Settings) -> str | None:
    """The binding value the browser sent, if it is one the gateway could have made."""
    value = request.cookies.get(cookie_name(settings))
    return value if value is not None and _VALUE.match(value) else None


def browser_of(request: web.BaseRequest, settings: Settings) -> Browser:
    """The browser's value, or a fresh one to give it."""
    value = presented(request, settings)
    if value is not None:
        return Browser(value, new=False)
    return Browser(secrets.token_urlsafe(32), new=True)


def check_bound(request: web.BaseRequest, settings: Settings, digest: str) -> None:
    """Refuse unless the request comes from the browser a flow is bound to."""
    value = presented(request, settings)
    if not digest or value is None or not hmac.compare_digest(Browser(value, False).digest, digest):
        raise InvalidRequest(
            "this authorization was started in another browser", rule="flow.other_browser"
        )
