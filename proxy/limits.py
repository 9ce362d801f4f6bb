"""Input limits: every bound on what a client can make the gateway parse.

Each limit is a setting with a safe default (README, "Input limits"); each breach is a
clean 4xx, never a 5xx. Request line and header sizes are enforced by aiohttp's parser
(400); bodies by aiohttp's ``client_max_size`` (413) and the PAR endpoint (413);
parameter counts, request-object sizes and JSON nesting here.
"""

from __future__ import annotations

import json
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


def loads_bounded(raw: bytes, max_depth: int) -> Any:
    """``json.loads`` that refuses nesting deeper than ``max_depth`` before parsing (deep
    nesting would otherwise end in a RecursionError inside the parser)."""
    # A document with no more brackets than the limit cannot nest deeper than it.
    if raw.count(b"[") + raw.count(b"{") > max_depth and json_depth(raw) > max_depth:
        raise TooDeep(f"JSON nested deeper than {max_depth} levels")
    return json.loads(raw)
