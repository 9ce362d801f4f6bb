"""The log line, JSON or text: written field by field (proxy/observability.py), one record is
one line that reads back exactly what was logged, whatever the values; nothing a client sends
(a path with CR, LF or U+2028) can start a line of its own."""

from __future__ import annotations

import ast
import json
import logging
import re
import sys
import unicodedata
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

import proxy
from proxy.app import create_app
from proxy.errors import StoreUnavailable
from proxy.keyring import Keyring
from proxy.observability import REQUEST_ID, JsonFormatter, Metrics, TextFormatter, _Timestamps
from proxy.store import RedisStore, Store
from tests.conftest import AiohttpClient, Jar, Legacy
from tests.jar import Claims, sign
from tests.support import free_port, make_settings
from tests.test_jar import authorize

text = st.text(st.characters(blacklist_categories=["Cs"]), max_size=40)
#: The values an ``extra`` may carry: JSON's own kinds, and anything else (shown as str).
values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=6,
)
#: A JSON line's ``ts`` and a text line's first field: UTC, to the millisecond.
RFC_3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
names = st.from_regex(r"[a-z][a-z0-9_]{0,12}", fullmatch=True).filter(
    lambda name: (
        name not in logging.makeLogRecord({}).__dict__
        # the line's own fields: an extra of the same name is not written
        and name
        not in {"message", "asctime", "ts", "level", "logger", "request_id", "exc", "exc_type"}
    )
)


def line(
    message: str, extra: dict[str, Any], exc_info: Any = None, fmt: logging.Formatter | None = None
) -> str:
    record = logging.getLogger("jargate.test").makeRecord(
        "jargate.test", logging.WARNING, "(unknown file)", 0, message, (), exc_info, extra=extra
    )
    return (fmt or JsonFormatter()).format(record)


def expected(value: Any) -> Any:
    """What ``json.dumps(value, default=str)`` reads back as (NaN stays NaN; a tuple is a
    list; a lone high and low surrogate side by side are one character)."""
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
    assert RFC_3339.fullmatch(parsed["ts"])


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


# ---------------------------------------------------------------- both formats, one line

#: Every character that some reader takes for the end of a line, or that a terminal obeys:
#: controls (C0, DEL, C1), line and paragraph separators, and lone surrogates.
UNSAFE = frozenset(
    chr(code)
    for code in range(sys.maxunicode + 1)
    if unicodedata.category(chr(code)) in ("Cc", "Zl", "Zp", "Cs")
)
any_text = st.text(st.characters(blacklist_categories=[]), max_size=40)
#: The line's own fields, which neither format writes as extras.
OWN = set(logging.makeLogRecord({}).__dict__) | {
    *("message", "asctime", "ts", "level", "logger", "request_id", "exc", "exc_type")
}
any_key = st.text(st.characters(blacklist_categories=[]), min_size=1, max_size=12).filter(
    lambda key: not key.startswith("_") and key not in OWN
)
QUOTED = r'"(?:[^"\\]|\\.)*"'
PAIR = rf'({QUOTED}|[^\s"=]+)=({QUOTED}|[^\s"]+)'
TEXT_LINE = re.compile(
    rf'\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{{3}}Z \S+ +\S+: (?:\[({QUOTED}|[^\s"\[\]]+)\] )?'
    rf'({QUOTED}|[^\s"\[][^\s"]*(?: [^\s"]+)*)(?:  ({PAIR}(?: {PAIR})*))?'
)


def text_field(written: str) -> str:
    """A field of a text line as it was logged (quoted ones are Python string literals)."""
    return str(ast.literal_eval(written)) if written.startswith('"') else written


def read_text_line(written: str) -> tuple[str | None, str, dict[str, str]]:
    """(request id, message, extras) of one text line; fails unless the whole line parses."""
    match = TEXT_LINE.fullmatch(written)
    assert match is not None, written
    request_id, message, extras = match.group(1), match.group(2), match.group(3) or ""
    pairs = {
        text_field(key): text_field(value) for key, value in re.findall(rf"{PAIR}(?: |$)", extras)
    }
    return None if request_id is None else text_field(request_id), text_field(message), pairs


def read_back(fmt: str, written: str) -> tuple[str | None, str, dict[str, Any]]:
    """(request id, message, extras) of one line in either format."""
    if fmt == "text":
        return read_text_line(written)
    parsed = json.loads(written)
    extras = {k: v for k, v in parsed.items() if k not in {"ts", "level", "logger", "msg"}}
    return extras.pop("request_id", None), parsed["msg"], extras


def formatter(fmt: str) -> logging.Formatter:
    return TextFormatter() if fmt == "text" else JsonFormatter()


@pytest.mark.parametrize("fmt", ["json", "text"])
@given(
    message=any_text,
    extra=st.dictionaries(any_key, values, max_size=5),
    request_id=st.one_of(st.none(), any_text.filter(bool)),
)
def test_any_record_is_one_line_that_reads_back(
    fmt: str, message: str, extra: dict[str, Any], request_id: str | None
) -> None:
    """Any message, extra key and value and request id (controls, CR, LF, U+0085, U+2028,
    quotes, backslashes, spaces, lone surrogates): exactly one line, no unsafe character,
    and each field reads back as logged."""
    token = REQUEST_ID.set(request_id)
    try:
        written = line(message, extra, fmt=formatter(fmt))
    finally:
        REQUEST_ID.reset(token)
    assert [written] == written.splitlines()
    assert set() == UNSAFE & set(written)
    if fmt == "json":
        logged = expected((request_id, message, extra))
    else:
        logged = [request_id, message, {k: str(v) for k, v in extra.items()}]
    assert logged == list(read_back(fmt, written))


@pytest.mark.parametrize("fmt", ["json", "text"])
@given(message=any_text, error=any_text)
def test_a_traceback_cannot_forge_a_record(fmt: str, message: str, error: str) -> None:
    """With an exception whose text has line breaks and controls: JSON stays one line; text
    continues on lines that each begin with "  | " and carry no unsafe character."""
    try:
        raise ValueError(error)
    except ValueError:
        written = line(message, {}, sys.exc_info(), fmt=formatter(fmt))
    first, *continued = written.split("\n")
    assert (expected(message) if fmt == "json" else message) == read_back(fmt, first)[1]
    assert set() == UNSAFE & set(first)
    if fmt == "json":
        assert [] == continued
        trace = json.loads(written)["exc"]
        assert trace.startswith("Traceback (most recent call last):\n")
        assert expected(error) in trace
        return
    assert continued[0] == "  | Traceback (most recent call last):"
    for each in continued:
        assert each.startswith("  | ")
        assert set() == UNSAFE & set(each)


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_every_unsafe_character_is_escaped(fmt: str) -> None:
    """All of Unicode's controls, line and paragraph separators and surrogates in one message:
    one line, none of them in it, the message read back whole."""
    message = "x".join(sorted(UNSAFE))
    written = line(message, {"path": message}, fmt=formatter(fmt))
    assert [written] == written.splitlines()
    assert set() == UNSAFE & set(written)
    assert (message, message) == (read_back(fmt, written)[1], read_back(fmt, written)[2]["path"])


# ---------------------------------------------------------------- timestamps


def test_json_ts_and_text_lines_start_with_the_records_rfc_3339_time() -> None:
    """JSON ``ts`` is the record's time in RFC 3339 UTC to the millisecond; a text line
    starts with the same time, then the level."""
    for fmt in ("json", "text"):
        record = logging.getLogger("jargate.test").makeRecord(
            "jargate.test", logging.INFO, "(unknown file)", 0, "m", (), None
        )
        record.created = 1796323250.1239
        written = formatter(fmt).format(record)
        stamp = json.loads(written)["ts"] if fmt == "json" else written.split(" ", 1)[0]
        assert "2026-12-03T18:40:50.123Z" == stamp, fmt
        if fmt == "text":
            assert written.startswith("2026-12-03T18:40:50.123Z info    jargate.test: m")


@given(st.lists(st.floats(min_value=0, max_value=4102444800), min_size=1, max_size=20))
def test_timestamps_read_back_whatever_order_times_come_in(times: list[float]) -> None:
    """Times in any order (the same second, the next, a clock stepped back): each one is the
    record's own time, truncated to the millisecond, as datetime formats it."""
    stamps = _Timestamps()
    for created in times:
        stamp = stamps(created)
        assert RFC_3339.fullmatch(stamp)
        whole = datetime.fromtimestamp(int(created), UTC)
        expected_ms = int((created - int(created)) * 1000)
        assert f"{whole:%Y-%m-%dT%H:%M:%S}.{expected_ms:03d}Z" == stamp


# ---------------------------------------------------------------- metrics


def families(metrics: Metrics) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(metrics.render().decode())}


def count_of(metrics: Metrics, name: str, **labels: str) -> float:
    """The ``_count`` sample of histogram ``name`` with ``labels`` (0 when absent)."""
    for sample in families(metrics)[name].samples:
        if sample.name == f"{name}_count" and sample.labels == labels:
            return float(sample.value)
    return 0.0


def test_build_info_and_the_standard_process_metrics() -> None:
    """``jargate_build_info{version}`` is 1 with the package's version; the process,
    platform and GC collectors are in the gateway's own registry (not the global one)."""
    metrics = Metrics()
    found = families(metrics)
    (build,) = found["jargate_build_info"].samples
    assert ({"version": proxy.__version__}, 1.0) == (build.labels, build.value)
    assert {
        "process_cpu_seconds",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
        "python_info",
        "python_gc_collections",
    } <= set(found)
    # Two gateways in one process (the tests, workers' set-up) each have their own.
    assert "jargate_build_info" in families(Metrics())


async def test_store_operations_are_timed(store: Store) -> None:
    """Each store operation (both stores) is one observation under its own name."""
    metrics = Metrics()
    store.latency = metrics.store_latency
    assert await store.claim_once("timed", 10)
    assert not await store.claim_once("timed", 10)
    await store.put("k", "v", 10)
    await store.put_many([("a", "1", 10), ("b", "2", 10)])
    assert "v" == await store.peek("k")
    assert "v" == await store.take("k")
    seen = {
        operation: count_of(metrics, "jargate_store_seconds", operation=operation)
        for operation in ("claim_once", "put", "put_many", "peek", "take")
    }
    assert {"claim_once": 2, "put": 1, "put_many": 1, "peek": 1, "take": 1} == seen


async def test_a_failing_store_operation_is_timed_too() -> None:
    """A Redis that is not there: the operation fails closed and its time is observed."""
    metrics = Metrics()
    store = RedisStore.from_url(f"redis://127.0.0.1:{free_port()}/0")
    store.latency = metrics.store_latency
    try:
        with pytest.raises(StoreUnavailable):
            await store.claim_once("k", 10)
    finally:
        await store.close()
    assert 1 == count_of(metrics, "jargate_store_seconds", operation="claim_once")


async def test_a_gateway_times_its_store_and_its_upstream(jar: Jar, legacy: Legacy) -> None:
    """Through the gateway: an accepted request object claims its jti in the store, and
    each request the upstream received is one upstream observation."""
    metrics = Metrics()
    client = await jar(metrics=metrics)
    assert 0 == count_of(metrics, "jargate_upstream_seconds")
    response = await authorize(client, client_id="app", request=sign(Claims().build(), "ES256"))
    assert 302 == response.status
    assert 1 <= count_of(metrics, "jargate_store_seconds", operation="claim_once")
    await client.get("/plain")
    assert len(legacy.recorder.requests) == count_of(metrics, "jargate_upstream_seconds") == 2


async def test_an_unreachable_upstream_is_timed(aiohttp_client: AiohttpClient) -> None:
    """An upstream that refuses connections: 502 and one observation of the attempt."""
    metrics = Metrics()
    settings = make_settings(f"http://127.0.0.1:{free_port()}")
    app = create_app(settings, keyring=Keyring.throwaway(["ES256"]), metrics=metrics)
    client = await aiohttp_client(app)
    response = await client.get("/plain")
    assert 502 == response.status
    assert 1 == count_of(metrics, "jargate_upstream_seconds")
