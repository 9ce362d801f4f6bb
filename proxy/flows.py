"""Flows: one authorization in flight, shared by the request and the response side.

The request side starts a flow when it forwards an authorization request: a
:class:`Flow` under a fresh random *handle*, sent upstream as ``state``. The response
side finds the handle in the upstream's redirect and answers the client as it asked.

A flow is stored only when it must wait: when the upstream answers the gateway's
server-side call with its redirect back to the client (a user already signed in), the
flow completes in the same request, from memory, and never reaches the store (one Redis
round trip saved each way). When the upstream sends the browser elsewhere first (a login
page), the flow is stored before that answer leaves, and the redirect that finally comes
back takes it once. A stored flow is bound to the browser that started it
(:mod:`proxy.binding`) and remembers a digest of each parameter it forwarded, so that a
request the upstream sends back to the authorization endpoint can be checked against it.
Handles carry a fixed prefix so that something that merely looks like one is recognised
(and refused) rather than passed on.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from dataclasses import dataclass, field, fields, replace
from typing import Any, Protocol

from .store import Store, hashed_key

#: Every handle starts with this; 32 random bytes follow (256 bits, RFC 9101 §10.2(d)).
HANDLE_PREFIX = "jgf_"


def new_handle() -> str:
    """A fresh, unguessable flow handle."""
    return HANDLE_PREFIX + secrets.token_urlsafe(32)


def looks_like_handle(value: str | None) -> bool:
    """True for values the gateway would have issued as handles."""
    return value is not None and value.startswith(HANDLE_PREFIX)


def value_digest(value: str) -> str:
    """A short digest of one parameter's value: what a stored flow keeps of it (never the
    value: hints and claims stay out of the store)."""
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).digest()[:16]
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


@dataclass(frozen=True, slots=True)
class Destination:
    """Where and how a client receives its authorization response."""

    client_id: str
    redirect_uri: str
    response_type: str
    #: The mode the client asked for, or None for the response type's default.
    response_mode: str | None
    #: The client's own state, or None if it sent none.
    state: str | None


@dataclass(frozen=True, slots=True)
class Flow:
    """What the response side needs to answer the client."""

    client_id: str
    redirect_uri: str
    response_type: str
    #: The mode the client asked for (``query``, ``fragment.jwt``, ...), or None.
    response_mode: str | None
    #: The client's own ``state``, restored in the response (None if it sent none).
    state: str | None
    #: How the request came: ``plain``, ``value``, ``reference`` or ``par``.
    source: str
    #: The PAR handle this flow came from, consumed when the flow completes.
    par_key: str | None = None
    #: The parameters forwarded upstream, name -> :func:`value_digest` (checks requests the
    #: upstream sends back); set when the flow is stored, the only time it can be needed.
    forwarded: dict[str, str] = field(default_factory=dict)
    #: The digest of the binding value of the browser that started it (:mod:`proxy.binding`).
    browser: str = ""
    #: The :func:`value_digest` of the query the browser started it with (the URL a consent
    #: form without ``action``, shown at once, posts back to).
    started: str = ""
    #: The verified PKCE challenge and method (``plain`` when the client named none).
    code_challenge: str | None = None
    code_challenge_method: str | None = None
    #: Whether the client itself named ``redirect_uri`` (the gateway always sends one).
    redirect_uri_named: bool = True

    def to_json(self) -> str:
        """The stored form."""
        stored = {name: getattr(self, name) for name in self.__slots__}
        return json.dumps(stored, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Flow:
        """Parse the stored form (fields of another version are left out)."""
        stored: dict[str, Any] = json.loads(text)
        return cls(**{f.name: stored[f.name] for f in fields(cls) if f.name in stored})


class Bindable(Protocol):
    """Something stored with a waiting flow, bound to the same browser."""

    def bound_json(self, browser: str) -> str: ...


@dataclass(slots=True)
class PendingFlow:
    """A flow forwarded upstream and not stored yet (see the module docstring)."""

    handle: str
    flow: Flow
    #: The parameters forwarded upstream, and the request target that carries them.
    forwarded: list[tuple[str, str]]
    target: str
    ttl: float
    #: Other ``(key, value, ttl)`` entries to store with the flow if it must wait; each
    #: value serialised only then, bound to the same browser.
    also: tuple[tuple[str, Bindable, float], ...] = ()


async def store_pending(
    store: Store, pending: PendingFlow, browser: str, started: str, source: str | None = None
) -> None:
    """Store a flow that must wait for ``browser`` (a binding digest) to come back, in one
    round trip. ``started``: the query of the browser's request that started it.
    ``source``: who made it, for a flow anyone can make (a plain request); the store
    bounds what each source may have waiting."""
    forwarded = {name: value_digest(value) for name, value in pending.forwarded}
    flow = replace(
        pending.flow, forwarded=forwarded, browser=browser, started=value_digest(started)
    )
    entries = [(flow_key(pending.handle), flow.to_json(), pending.ttl)]
    entries.extend((key, value.bound_json(browser), ttl) for key, value, ttl in pending.also)
    await store.put_many(entries, unverified_source=source)


def flow_key(handle: str) -> str:
    """The store key of a flow (handles come back from outside, so they are hashed)."""
    return hashed_key("flow", handle)


async def peek_flow(store: Store, handle: str) -> Flow | None:
    """The live flow behind ``handle``, without consuming it."""
    text = await store.peek(flow_key(handle))
    return None if text is None else Flow.from_json(text)


async def take_flow(store: Store, handle: str) -> Flow | None:
    """Take the flow behind ``handle``: one caller, once."""
    text = await store.take(flow_key(handle))
    return None if text is None else Flow.from_json(text)
