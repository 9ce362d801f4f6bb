"""Claim rules every JWT a client sends is held to: request objects and client assertions.

Each rule is written once here and raises the error its caller names
(``invalid_request_object`` for a request object, ``invalid_client`` for an assertion).
"""

from __future__ import annotations

import math
from typing import Any

from .errors import GatewayError

#: The largest NumericDate accepted: beyond it no float keeps whole seconds (2**53).
MAX_NUMERIC_DATE = float(2**53)


def rule_prefix(kind: str) -> str:
    """The rule ids' prefix for a kind of JWT: ``request_object``, ``client_assertion``."""
    return kind.replace(" ", "_")


def numeric_date(
    claims: dict[str, Any], name: str, error: type[GatewayError], kind: str
) -> float | None:
    """The claim ``name`` as a NumericDate (RFC 7519 section 2), None when absent: a JSON
    number, finite, not negative and within :data:`MAX_NUMERIC_DATE`; anything else
    (a string, a boolean, NaN, a number too large for a float) is refused."""
    value = claims.get(name)
    if value is None:
        return None
    rule = f"{rule_prefix(kind)}.{name}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise error(f"the {kind}'s {name} must be a number", rule=rule)
    if isinstance(value, int) and not 0 <= value <= MAX_NUMERIC_DATE:
        raise error(f"the {kind}'s {name} is out of range", rule=rule)
    number = float(value)
    if not math.isfinite(number) or not 0 <= number <= MAX_NUMERIC_DATE:
        raise error(f"the {kind}'s {name} is out of range", rule=rule)
    return number


def check_times(
    claims: dict[str, Any],
    now: float,
    skew: float,
    error: type[GatewayError],
    kind: str,
) -> tuple[float, float | None, float | None]:
    """``exp`` required and not past, ``nbf`` and ``iat`` not in the future, with ``skew``
    of leeway. Returns ``(exp, nbf, iat)``."""
    exp, nbf, iat = (numeric_date(claims, name, error, kind) for name in ("exp", "nbf", "iat"))
    prefix = rule_prefix(kind)
    if exp is None:
        raise error(f"the {kind}'s exp is required", rule=f"{prefix}.exp")
    if exp <= now - skew:
        raise error(f"the {kind} has expired", rule=f"{prefix}.exp")
    if nbf is not None and nbf > now + skew:
        raise error(f"the {kind} is not valid yet (nbf)", rule=f"{prefix}.nbf")
    if iat is not None and iat > now + skew:
        raise error(f"the {kind} was issued in the future (iat)", rule=f"{prefix}.iat")
    return exp, nbf, iat


def audience_members(aud: Any, error: type[GatewayError], kind: str) -> list[str]:
    """``aud`` as RFC 7519 section 4.1.3 shapes it: a string, or a non-empty array of strings."""
    members = [aud] if isinstance(aud, str) else aud
    if not isinstance(members, list) or not members or not all(isinstance(m, str) for m in members):
        raise error(
            f"the {kind}'s aud must be a string or an array of strings",
            rule=f"{rule_prefix(kind)}.aud",
        )
    return members


def issued_since(exp: float, nbf: float | None, iat: float | None, longest: float) -> float:
    """The earliest moment a JWT could have been made: ``iat``, else ``nbf``, else ``exp``
    less the longest lifetime allowed."""
    if iat is not None:
        return iat
    return nbf if nbf is not None else exp - longest
