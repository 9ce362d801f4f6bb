"""The JSON log line: written field by field (proxy/observability.py), it must still be one
valid JSON object that reads back exactly what was logged, whatever the values."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from proxy.observability import REQUEST_ID, JsonFormatter

text = st.text(st.characters(blacklist_categories=["Cs"]), max_size=40)
#: The values an ``extra`` may carry: JSON's own kinds, and anything else (shown as str).
values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=6,
)
names = st.from_regex(r"[a-z][a-z0-9_]{0,12}", fullmatch=True).filter(
    lambda name: (
        name not in logging.makeLogRecord({}).__dict__
        # the line's own fields: an extra of the same name is not written
        and name
        not in {"message", "asctime", "ts", "level", "logger", "request_id", "exc", "exc_type"}
    )
)


def line(message: str, extra: dict[str, Any], exc_info: Any = None) -> str:
    record = logging.getLogger("jargate.test").makeRecord(
        "jargate.test", logging.WARNING, "(unknown file)", 0, message, (), exc_info, extra=extra
    )
    return JsonFormatter().format(record)


def expected(value: Any) -> Any:
    """What ``json.dumps(value, default=str)`` reads back as (NaN stays NaN)."""
    return json.loads(json.dumps(value, default=str))


@given(text, st.dictionaries(names, values, max_size=6), st.one_of(st.none(), text))
def test_any_message_and_extras_read_back(
    message: str, extra: dict[str, Any], request_id: str | None
) -> None:
    """Quotes, backslashes, control characters, U+2028, non-BMP characters, nested values,
    floats (NaN and infinities as Python's json writes them): one line, read back equal."""
    token = REQUEST_ID.set(request_id)
    try:
        written = line(message, extra)
    finally:
        REQUEST_ID.reset(token)
    assert "\n" not in written
    parsed = json.loads(written)
    own = {"level": "warning", "logger": "jargate.test", "msg": message}
    if request_id is not None:
        own["request_id"] = request_id
    assert {**own, **{k: expected(v) for k, v in extra.items()}} == json.loads(
        json.dumps({k: v for k, v in parsed.items() if k != "ts"})
    )
    assert isinstance(parsed["ts"], float)


def test_line_fields_in_order_and_hostile_values() -> None:
    written = line(
        'say "hi"\\\n\u2028\x00é😀',
        {
            "path": '/a"b',
            "status": 302,
            "duration_ms": 1.25,
            "ok": True,
            "none": None,
            "nan": float("nan"),
            "big": 10**30,
            "obj": object,
            "_private": "hidden",
        },
    )
    parsed = json.loads(written)
    assert [
        "ts",
        "level",
        "logger",
        "msg",
        "path",
        "status",
        "duration_ms",
        "ok",
        "none",
        "nan",
        "big",
        "obj",
    ] == list(parsed)
    assert 'say "hi"\\\n\u2028\x00é😀' == parsed["msg"]
    assert (302, 1.25, True, None, 10**30) == tuple(
        parsed[k] for k in ("status", "duration_ms", "ok", "none", "big")
    )
    assert "<class 'object'>" == parsed["obj"]
    assert written.isascii()  # escaped as json.dumps does by default


def test_standard_attributes_stay_out_and_own_fields_are_never_repeated() -> None:
    """A record's own attributes (lineno, thread...) are not extras; an extra named like
    one of the line's own fields does not write that key twice."""
    written = line("m", {"logger": "spoofed", "level": "spoofed", "client_id": "c"})
    pairs = json.loads(written, object_pairs_hook=list)
    keys = [key for key, _ in pairs]
    assert len(keys) == len(set(keys))
    assert {"level": "warning", "logger": "jargate.test", "client_id": "c"}.items() <= dict(
        pairs
    ).items()
    assert not {"lineno", "thread", "args", "created", "pathname"} & set(keys)


def test_exception_is_one_escaped_field() -> None:
    try:
        raise ValueError('bad "value"\nsecond line')
    except ValueError:
        written = line("failed", {}, sys.exc_info())
    parsed = json.loads(written)
    assert "ValueError" == parsed["exc_type"]
    assert 'ValueError: bad "value"\nsecond line' in parsed["exc"]
    assert "\n" not in written
