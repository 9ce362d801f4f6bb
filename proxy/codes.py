"""Authorization codes the gateway delivered: sealed or recorded on the response side when a
flow completes with a ``code``, checked and redeemed once at the token endpoint
(:mod:`proxy.token`).

What the token endpoint checks a code against (:class:`DeliveredCode`: the client and
redirect URI of the flow, whether the client named that redirect URI, its verified PKCE
challenge, and when the code was delivered) travels one of two ways:

- **Sealed** (a response without an ID token): the client gets, instead of the upstream's
  code, the upstream's code and the record encrypted together (AES-256-GCM under a key
  derived from the gateway's private keys, which every replica holds; the newest key seals,
  any opens). Completing the flow writes nothing; the upstream's code is not readable from
  what the client holds, so it cannot be redeemed past the gateway.
- **Recorded** (a response with an ID token, whose ``c_hash`` covers the upstream's code,
  OpenID Connect Core section 3.3.2.11): the code is delivered as the upstream made it and
  the record kept in the store under a digest of the code, for the code's lifetime.

Redeeming claims the upstream's code once in the store (``SET NX``: once across replicas);
the claim stays until the code expires, so a second redemption is recognised as one. A
sealed code delivered before the store's memory began (a Redis restarted empty) may have
been redeemed, unremembered: the token endpoint refuses it.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .flows import Flow
from .store import Store, hashed_key

#: What begins a sealed code (``jgc`` and the format's version): a code the upstream made
#: and the gateway relayed as it is never does, unless it is one of the gateway's.
SEALED_PREFIX = "jgc1."
#: Authenticated with every sealed code: a ciphertext made for something else never opens.
AAD = b"jargate authorization code v1"
_NONCE_BYTES = 12
#: A sealed code longer than this is no code of the gateway's (no work spent on opening it);
#: a code that would seal longer is recorded instead.
MAX_SEALED_CHARS = 4096


@dataclass(frozen=True, slots=True)
class DeliveredCode:
    """What the token endpoint checks a code against."""

    client_id: str
    redirect_uri: str
    #: Whether the client sent ``redirect_uri`` (RFC 6749 section 4.1.3: then it must again).
    redirect_uri_named: bool
    code_challenge: str | None
    code_challenge_method: str | None
    delivered_at: float
    #: The lifetime it was delivered with, in seconds: no replica redeems it for longer.
    lifetime: float | None = None
    #: Whether it came sealed (no store record; the store's memory is checked at redemption).
    sealed: bool = False

    def to_json(self) -> str:
        """The stored form."""
        return json.dumps({name: getattr(self, name) for name in _FIELDS}, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> DeliveredCode:
        """Parse the stored form."""
        stored: dict[str, Any] = json.loads(text)
        return cls(**stored)


#: The stored form's fields in order (``dataclasses.asdict`` deep-copies each value: 5 times
#: slower); whether it came sealed is known from where it was read.
_FIELDS = tuple(field.name for field in fields(DeliveredCode) if field.name != "sealed")


def carries_code(params: list[tuple[str, str]]) -> bool:
    """Whether an authorization response carries a ``code`` (then :func:`deliver_codes`)."""
    return any(name == "code" for name, _ in params)


def _record_of(flow: Flow, lifetime: float) -> DeliveredCode:
    return DeliveredCode(
        client_id=flow.client_id,
        redirect_uri=flow.redirect_uri,
        redirect_uri_named=flow.redirect_uri_named,
        code_challenge=flow.code_challenge,
        code_challenge_method=flow.code_challenge_method,
        delivered_at=time.time(),
        lifetime=lifetime,
    )


def seal(key: AESGCM, code: str, record: DeliveredCode) -> str:
    """The code the client gets: ``code`` and ``record`` encrypted together."""
    nonce = os.urandom(_NONCE_BYTES)
    fields_ = [code, *(getattr(record, name) for name in _FIELDS)]
    sealed = nonce + key.encrypt(nonce, json.dumps(fields_, separators=(",", ":")).encode(), AAD)
    return SEALED_PREFIX + _encoded(sealed)


def _encoded(sealed: bytes) -> str:
    return base64.urlsafe_b64encode(sealed).rstrip(b"=").decode("ascii")


def open_sealed(keys: Sequence[AESGCM], presented: str) -> tuple[str, DeliveredCode] | None:
    """The upstream's code and the record a sealed code carries; None when ``presented`` is
    no sealed code of the gateway's (not one, altered, or sealed under a key it no longer has)."""
    if not presented.startswith(SEALED_PREFIX) or len(presented) > MAX_SEALED_CHARS:
        return None
    body = presented[len(SEALED_PREFIX) :]
    try:
        sealed = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError):
        return None
    if _encoded(sealed) != body:
        # One spelling only: padding, skipped or standard-alphabet characters and set unused
        # bits all decode to the same bytes, and none of them is the code.
        return None
    nonce, ciphertext = sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:]
    for key in keys:
        try:
            plain = key.decrypt(nonce, ciphertext, AAD)
        except (InvalidTag, ValueError):
            continue
        try:
            code, *values = json.loads(plain)
            return code, DeliveredCode(**dict(zip(_FIELDS, values, strict=True)), sealed=True)
        except (ValueError, TypeError):
            return None  # sealed in another layout (another version's): not redeemable here
    return None


async def deliver_codes(
    store: Store,
    keys: Sequence[AESGCM],
    params: list[tuple[str, str]],
    flow: Flow,
    lifetime: float,
) -> list[tuple[str, str]]:
    """The response parameters with each code sealed, or, in a response with an ID token,
    unchanged and the codes' record stored for ``lifetime`` seconds in one round trip. An
    error response loses its codes (RFC 6749 section 4.1.2.1 has none; one would go
    unguarded)."""
    if any(name == "error" for name, _ in params):
        return [(name, value) for name, value in params if name != "code"]
    codes = [value for name, value in params if name == "code" and value]
    if not codes:
        return params
    record = _record_of(flow, lifetime)
    if keys and not any(name == "id_token" for name, _ in params):
        sealed = [
            (name, seal(keys[0], value, record) if name == "code" and value else value)
            for name, value in params
        ]
        if all(len(value) <= MAX_SEALED_CHARS for name, value in sealed if name == "code"):
            return sealed
    stored = record.to_json()
    await store.put_many([(hashed_key("code", code), stored, lifetime) for code in codes])
    return params


async def delivered_code(
    store: Store, keys: Sequence[AESGCM], presented: str
) -> tuple[str, DeliveredCode] | None:
    """The upstream's code and the record of a code the gateway delivered (sealed, or
    recorded and not expired), or None."""
    opened = open_sealed(keys, presented)
    if opened is not None:
        return opened
    if presented.startswith(SEALED_PREFIX):
        return None  # one of the gateway's formats that did not open: never looked up
    text = await store.peek(hashed_key("code", presented))
    return None if text is None else (presented, DeliveredCode.from_json(text))


async def redeem_once(store: Store, code: str, ttl: float) -> bool:
    """Claim the upstream's code's one redemption; False when it was redeemed before."""
    return await store.claim_once(hashed_key("code_redeemed", code), max(ttl, 1.0))
