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
    """The rule ids' prefix for a kind of JWT: ``request_object``, ``client_assertion``,
    ``jarm_response``."""
    return kind.lower().replace(" ", "_")


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


def numeric_value(claims: dict[str, Any], name: str) -> float | None:
    """The claim ``name`` when it is a JSON number, else None: for a rule that only uses a
    date (the date's own rule refuses a malformed one)."""
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, int) and not 0 <= value <= MAX_NUMERIC_DATE:
        return None  # beyond a float
    return float(value)


def check_exp(
    claims: dict[str, Any], now: float, skew: float, error: type[GatewayError], kind: str
) -> float:
    """``exp`` required and not past, with ``skew`` of leeway."""
    exp = numeric_date(claims, "exp", error, kind)
    if exp is None:
        raise error(f"the {kind}'s exp is required", rule=f"{rule_prefix(kind)}.exp")
    if exp <= now - skew:
        raise error(f"the {kind} has expired", rule=f"{rule_prefix(kind)}.exp")
    return exp


def check_nbf(
    claims: dict[str, Any], now: float, skew: float, error: type[GatewayError], kind: str
) -> float | None:
    """``nbf``, when present, not in the future, with ``skew`` of leeway."""
    nbf = numeric_date(claims, "nbf", error, kind)
    if nbf is not None and nbf > now + skew:
        raise error(f"the {kind} is not valid yet (nbf)", rule=f"{rule_prefix(kind)}.nbf")
    return nbf


def check_iat(
    claims: dict[str, Any], now: float, skew: float, error: type[GatewayError], kind: str
) -> float | None:
    """``iat``, when present, not in the future, with ``skew`` of leeway."""
    iat = numeric_date(claims, "iat", error, kind)
    if iat is not None and iat > now + skew:
        raise error(f"the {kind} was issued in the future (iat)", rule=f"{rule_prefix(kind)}.iat")
    return iat


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
