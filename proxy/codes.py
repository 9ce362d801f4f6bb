"""Authorization codes the gateway delivered: recorded on the response side when a flow
completes with a ``code``, checked and redeemed once at the token endpoint
(:mod:`proxy.token`).

A record is kept under a digest of the code (never the code itself) for the client's code
lifetime: the client and redirect URI of the flow, whether the client named that redirect
URI, its verified PKCE challenge, and when the code was delivered. Redeeming claims the
code once in the store (``SET NX``: once across replicas); the record stays until it
expires, so a second redemption is recognised as one.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, fields
from typing import Any

from .flows import Flow
from .store import Store, hashed_key


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

    def to_json(self) -> str:
        """The stored form."""
        return json.dumps({name: getattr(self, name) for name in _FIELDS}, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> DeliveredCode:
        """Parse the stored form."""
        stored: dict[str, Any] = json.loads(text)
        return cls(**stored)


#: The record's fields in order (``dataclasses.asdict`` deep-copies each value: 5 times slower).
_FIELDS = tuple(field.name for field in fields(DeliveredCode))


def codes_in(params: list[tuple[str, str]]) -> list[str]:
    """The codes an authorization response carries (none in an error response)."""
    if any(name == "error" for name, _ in params):
        return []
    return [value for name, value in params if name == "code" and value]


async def record_codes(store: Store, codes: list[str], flow: Flow, lifetime: float) -> None:
    """Remember the codes of a completing flow, for ``lifetime`` seconds, in one round trip."""
    record = DeliveredCode(
        client_id=flow.client_id,
        redirect_uri=flow.redirect_uri,
        redirect_uri_named=flow.redirect_uri_named,
        code_challenge=flow.code_challenge,
        code_challenge_method=flow.code_challenge_method,
        delivered_at=time.time(),
    ).to_json()
    await store.put_many([(hashed_key("code", code), record, lifetime) for code in codes])


async def delivered_code(store: Store, code: str) -> DeliveredCode | None:
    """The record of a code the gateway delivered and that has not expired, or None."""
    text = await store.peek(hashed_key("code", code))
    return None if text is None else DeliveredCode.from_json(text)


async def redeem_once(store: Store, code: str, ttl: float) -> bool:
    """Claim the code's one redemption; False when it was redeemed before."""
    return await store.claim_once(hashed_key("code_redeemed", code), max(ttl, 1.0))
