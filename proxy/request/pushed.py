"""Pushed authorization requests in the store (RFC 9126): what the PAR endpoint keeps under
a one-time ``request_uri`` and the authorization endpoint later uses."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, fields, replace

from proxy.settings import Settings
from proxy.store import Store, hashed_key

#: RFC 9126 §2.2: the gateway's handles for pushed requests.
PAR_URN_PREFIX = "urn:ietf:params:oauth:request_uri:"


@dataclass(frozen=True, slots=True)
class Pushed:
    """A pushed, already verified authorization request."""

    client_id: str
    #: The verified authorization parameters (redirect_uri resolved).
    params: dict[str, str]
    #: Unix time at which the ``request_uri`` expires (``expires_in`` after the push).
    expires_at: float
    #: Set when its flow must wait: the flow's handle and the upstream target, for reloads
    #: by the browser the flow is bound to (its binding digest).
    handle: str | None = None
    target: str | None = None
    browser: str | None = None

    def to_json(self) -> str:
        """The stored form (``asdict`` would deep-copy the parameters first)."""
        stored = {
            "client_id": self.client_id,
            "params": self.params,
            "expires_at": self.expires_at,
            "handle": self.handle,
            "target": self.target,
            "browser": self.browser,
        }
        return json.dumps(stored, separators=(",", ":"))

    def bound_json(self, browser: str) -> str:
        """The stored form of the mark a waiting flow leaves, bound to its browser."""
        return replace(self, browser=browser).to_json()

    def remaining(self, now: float) -> float:
        """Seconds until the ``request_uri`` expires (0 once it has)."""
        return max(0.0, self.expires_at - now)


def new_request_uri() -> str:
    """A fresh handle: the URN prefix and 256 random bits (RFC 9126 §7.1 asks for 128)."""
    return PAR_URN_PREFIX + secrets.token_urlsafe(32)


def pushed_key(client_id: str, request_uri: str) -> str:
    """The store key of a pushed request: bound to the client that pushed it, so that a
    handle presented with another ``client_id`` finds nothing and takes nothing (the
    handle travels through the browser, where anyone may read it)."""
    return hashed_key("par", client_id, request_uri)


async def save_pushed(store: Store, request_uri: str, pushed: Pushed, settings: Settings) -> None:
    """Keep ``pushed`` for the PAR lifetime until first use (at first use, if its flow must
    wait, it is stored again with the flow, until the request_uri expires)."""
    key = pushed_key(pushed.client_id, request_uri)
    await store.put(key, pushed.to_json(), settings.par_ttl_seconds)


async def take_pushed(store: Store, key: str) -> Pushed | None:
    """The pushed request under ``key`` (:func:`pushed_key`), if any, taken: one caller,
    once."""
    text = await store.take(key)
    if text is None:
        return None
    stored = json.loads(text)
    stored.setdefault("expires_at", 0.0)  # stored by an earlier version: treated as expired
    return Pushed(**{f.name: stored[f.name] for f in fields(Pushed) if f.name in stored})
