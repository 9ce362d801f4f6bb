"""Input limits: every bound on what a client can make the gateway parse.

Each limit is a setting with a safe default (docs/reference.md, "Input limits"); each breach is a
clean 4xx, never a 5xx. Request line and header sizes are enforced by aiohttp's parser
(400); bodies by aiohttp's ``client_max_size`` (413) and the PAR endpoint (413);
parameter counts, request-object sizes and JSON nesting here.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"')
_BRACKETS = re.compile(rb"[\[\]{}]")


class TooDeep(ValueError):
    """JSON nested deeper than allowed."""


def json_depth(raw: bytes) -> int:
    """How deeply arrays and objects nest in ``raw`` (strings are skipped)."""
    depth = deepest = 0
    for bracket in _BRACKETS.findall(_STRINGS.sub(b"", raw)):
        if bracket in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


class NotStrictJson(ValueError):
    """JSON the gateway refuses although Python's parser takes it."""


def _no_constant(name: str) -> Any:
    raise NotStrictJson(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise NotStrictJson(f"{text} is out of range")
    return value


_STRICT = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite_float)


def _has_lone_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, dict):
        return any(_has_lone_surrogate(k) or _has_lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_lone_surrogate(item) for item in value)
    return False


def loads_bounded(raw: bytes, max_depth: int) -> Any:
    """Strict ``json.loads``: refuses nesting deeper than ``max_depth`` before parsing (deep
    nesting would otherwise end in a RecursionError inside the parser), ``NaN`` and
    ``Infinity`` and numbers that overflow to them (RFC 8259 section 6 has none; every
    comparison with NaN is false), and strings holding a lone surrogate (not Unicode: no
    query, store or log can carry them)."""
    # A document with no more brackets than the limit cannot nest deeper than it.
    if raw.count(b"[") + raw.count(b"{") > max_depth and json_depth(raw) > max_depth:
        raise TooDeep(f"JSON nested deeper than {max_depth} levels")
    # json.loads's own decoding of bytes (UTF-8, -16 or -32 as detected), then one decoder
    # built once: json.loads with hooks builds a new one each call.
    value = _STRICT.decode(raw.decode(json.detect_encoding(raw), "surrogatepass"))
    # Only a \u escape or raw surrogate bytes can make one; most documents have neither.
    if (b"\\u" in raw or b"\xed" in raw) and _has_lone_surrogate(value):
        raise NotStrictJson("a string holds a lone surrogate")
    return value
