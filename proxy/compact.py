"""JOSE compact serialization, as the gateway reads what clients send and writes its own.

Reading (:func:`read_jws`), once, and verifying with joserfc's algorithm objects
(:func:`signature_verifies`), held to a stricter reading than the RFCs require of a
parser: every segment in its one canonical base64url spelling
(unused bits zero, no padding: one JWT has one text, so a replay key may be its digest),
the payload strict JSON (:func:`proxy.limits.loads_bounded`: no NaN, no lone surrogates,
bounded nesting), no unencoded payload (RFC 7797 ``b64``), and a ``crit`` that lists
nothing (the gateway understands no extension, RFC 7515 section 4.1.11).

Writing (:func:`sign_compact`): the gateway's own JARM responses, whose header it wrote
itself, signed with joserfc's algorithm object directly.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from typing import Any

from joserfc.errors import JoseError
from joserfc.jwk import Key
from joserfc.jws import JWSRegistry
from joserfc.util import urlsafe_b64encode

from .errors import InvalidRequestObject
from .limits import TooDeep, loads_bounded

DEFAULT_JSON_DEPTH = 16
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")
_ALPHABET = {
    char: index
    for index, char in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
}
#: Unused bits in the last character, by the segment's length modulo 4.
_UNUSED_BITS = {2: 4, 3: 2}


def is_compact(token: str) -> bool:
    """True when ``token`` has the shape of a compact JWS (3 parts) or JWE (5)."""
    return token.count(".") in (2, 4) and bool(token.split(".", 1)[0])


def may_be_jose(value: str) -> bool:
    """True for a value some JOSE parser might take for a JWS or JWE: empty, a compact
    shape with any segment empty or with surrounding whitespace, or a JSON serialization.
    Only values this rules out can be another field that happens to share the name."""
    stripped = value.strip()
    return not stripped or stripped.count(".") in (2, 4) or stripped.startswith("{")


def split_compact(token: str, kind: str = "request object") -> list[str]:
    """The parts of a compact JWS (3) or JWE (5); anything else is refused."""
    if not is_compact(token):
        raise InvalidRequestObject(
            f"the {kind} is not a compact JWS or JWE", rule="request_object.compact"
        )
    return token.split(".")


def _check_canonical(segment: str, kind: str) -> None:
    if not _BASE64URL.fullmatch(segment) or len(segment) % 4 == 1:
        raise InvalidRequestObject(
            f"the {kind} is not valid base64url", rule="request_object.compact.base64url"
        )
    # The last character's bits beyond the data must be zero (RFC 4648 section 3.5).
    unused = _UNUSED_BITS.get(len(segment) % 4)
    if unused and _ALPHABET[segment[-1]] & ((1 << unused) - 1):
        raise InvalidRequestObject(
            f"the {kind} is not canonical base64url", rule="request_object.compact.base64url"
        )


def read_json(raw: bytes, part: str, kind: str, max_depth: int) -> dict[str, Any]:
    """Bytes that must hold a strict JSON object nested at most ``max_depth`` deep."""
    try:
        value = loads_bounded(raw, max_depth)
    except TooDeep as exc:
        raise InvalidRequestObject(
            f"the {kind}'s {part} is {exc}", rule="request_object.compact.json"
        ) from None
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InvalidRequestObject(
            f"the {kind}'s {part} is not JSON", rule="request_object.compact.json"
        ) from None
    if not isinstance(value, dict):
        raise InvalidRequestObject(
            f"the {kind}'s {part} is not a JSON object", rule="request_object.compact.json"
        )
    return value


def read_json_segment(
    segment: str, part: str, kind: str = "request object", max_depth: int = DEFAULT_JSON_DEPTH
) -> dict[str, Any]:
    """A canonical base64url segment holding a strict JSON object."""
    return read_json(_decoded(segment, kind), part, kind, max_depth)


def refuse_unknown_critical(header: dict[str, Any]) -> None:
    """RFC 7515 section 4.1.11: a ``crit`` extension the gateway does not understand (it
    understands none) is refused, and so is an unencoded payload (RFC 7797)."""
    crit = header.get("crit")
    if crit is not None:
        if not isinstance(crit, list) or not crit or not all(isinstance(c, str) for c in crit):
            raise InvalidRequestObject(
                "the crit header must be a non-empty list of names", rule="request_object.crit"
            )
        raise InvalidRequestObject(
            f"critical header parameter(s) not understood: {crit}", rule="request_object.crit"
        )
    if "b64" in header:
        raise InvalidRequestObject(
            "unencoded payloads (b64) are refused", rule="request_object.crit"
        )


@dataclass(frozen=True, slots=True)
class ReadJws:
    """A compact JWS read (not yet verified): its header, claims, payload bytes, and what
    its signature covers."""

    header: dict[str, Any]
    claims: dict[str, Any]
    payload: bytes
    signing_input: bytes
    signature: bytes


def _decoded(segment: str, kind: str) -> bytes:
    _check_canonical(segment, kind)
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def read_jws(token: str, kind: str, max_depth: int = DEFAULT_JSON_DEPTH) -> ReadJws:
    """Read a compact JWS strictly (see the module docstring); its signature is not checked."""
    parts = split_compact(token, kind)
    if len(parts) != 3:
        raise InvalidRequestObject(
            f"the {kind} must be a signed JWT", rule="request_object.compact"
        )
    header = read_json(_decoded(parts[0], kind), "header", kind, max_depth)
    refuse_unknown_critical(header)
    payload = _decoded(parts[1], kind)
    signature = _decoded(parts[2], kind)
    claims = read_json(payload, "payload", kind, max_depth)
    signing_input = f"{parts[0]}.{parts[1]}".encode("ascii")
    return ReadJws(header, claims, payload, signing_input, signature)


def signature_verifies(read: ReadJws, alg: str, key: Key) -> bool:
    """True when the JWS's signature verifies with ``key`` under ``alg`` (joserfc's
    algorithm object, which checks that the key fits it)."""
    model = JWSRegistry.algorithms[alg]
    try:
        model.check_key(key)
        return bool(model.verify(read.signing_input, read.signature, key))
    except (JoseError, ValueError, TypeError):
        return False


def sign_compact(header: dict[str, str], claims: dict[str, object], key: Key) -> str:
    """A compact JWS (RFC 7515 section 7.1) of the gateway's own: the header it wrote."""
    signing_input = (
        urlsafe_b64encode(json.dumps(header, separators=(",", ":")).encode())
        + b"."
        + urlsafe_b64encode(json.dumps(claims, separators=(",", ":")).encode())
    )
    signature = JWSRegistry.algorithms[header["alg"]].sign(signing_input, key)
    return (signing_input + b"." + urlsafe_b64encode(signature)).decode("ascii")
