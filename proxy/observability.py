"""Health, readiness, metrics and logging.

- ``/healthz`` touches nothing; ``/readyz`` pings the store and the upstream.
- Prometheus metrics live in a per-app registry and are served on their own port.
- Logs are JSON lines (or text) with a request id. Nothing that carries a credential is
  logged: never a query string, a request object, a code, a token or a secret.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from functools import partial
from itertools import accumulate
from math import isfinite
from typing import Any

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import generate_latest

from . import __version__, appkeys
from .errors import StoreUnavailable
from .latency import store_seconds, upstream_seconds
from .routing import PASS_THROUGH, ROUTE, Handler
from .serving import drop_server_banner
from .settings import Network
from .upstream import is_trusted

log = logging.getLogger("jargate")
access_log = logging.getLogger("jargate.access")

#: The id of the request being handled, for every log line it causes.
REQUEST_ID: ContextVar[str | None] = ContextVar("jargate_request_id", default=None)
#: Where a handler leaves its authorization decision for the request's access line.
DECISION: web.RequestKey[dict[str, str | None]] = web.RequestKey("decision")
#: The error a request was answered with (its code and rule), for its access line.
ERROR: web.RequestKey[dict[str, str]] = web.RequestKey("error")


@dataclass(frozen=True, slots=True)
class FlowContext:
    """Which client's authorization a request is about, and how it came: a refusal of it
    is counted and logged as that client's decision."""

    client_id: str | None
    source: str


#: The authorization a request is about, once known (:func:`note`).
FLOW: web.RequestKey[FlowContext] = web.RequestKey("flow")


def note(request: web.Request, client_id: str | None, source: str) -> None:
    """Record which client's authorization ``request`` is about, and how it came."""
    request[FLOW] = FlowContext(client_id, source)


def decide(
    request: web.Request,
    client_id: str | None,
    outcome: str,
    error: str,
    source: str,
    *,
    reason: str = "none",
) -> None:
    """Count one authorization decision; it is logged on the request's access line (one
    line per request), never with the request object itself."""
    request.app[appkeys.METRICS].count_decision(outcome, error, source, reason)
    request[DECISION] = {
        "client_id": client_id,
        "outcome": outcome,
        "error": error,
        "reason": reason,
        "source": source,
    }


_STANDARD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}
#: What the JSON line writes itself; an extra of the same name would repeat a key.
_NOT_EXTRAS = _STANDARD_ATTRS | {"ts", "level", "logger", "request_id", "exc_type", "exc"}
#: For values that are not a plain string, integer or finite float (``json.dumps(...,
#: default=str)`` builds an encoder each call).
_ENCODER = json.JSONEncoder(default=str)
#: JSON's own string escaping (the C function ``json.dumps`` uses): quotes included, ASCII out.
_quote = json.encoder.encode_basestring_ascii
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def _json_value(value: Any) -> str:
    """``json.dumps(value, default=str)``, with the kinds every access line carries (strings,
    integers, finite floats) written directly: the same text, without the encoder's
    per-call set-up."""
    kind = type(value)
    if kind is str:
        return _quote(value)
    if kind is int:
        return int.__repr__(value)
    if kind is float and isfinite(value):
        return float.__repr__(value)
    return _ENCODER.encode(value)


#: Each millisecond's tail of an RFC 3339 time, formatted once.
_MILLISECONDS = tuple(f".{ms:03d}Z" for ms in range(1000))


class _Timestamps:
    """RFC 3339 UTC times to the millisecond (``2026-12-03T18:40:50.123Z``): the date and
    time of the last second seen are formatted once, so a line costs a lookup and a join,
    as little as the Unix time it replaced."""

    def __init__(self) -> None:
        #: (the Unix second, its text): one tuple, replaced whole, safe across threads.
        self._last: tuple[int, str] = (-1, "")

    def __call__(self, created: float) -> str:
        second, text = self._last
        within = created - second
        if not 0 <= within < 1:
            second = int(created)
            text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._last = (second, text)
            within = created - second
        return text + _MILLISECONDS[int(within * 1000)]


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (``ts``, RFC 3339 UTC), level, logger, message,
    request id, extras.

    Written field by field with JSON's own escaping, cheaper than a dict through
    ``json.dumps``; tests/test_observability.py reads any message and extras back."""

    def __init__(self) -> None:
        super().__init__()
        self._timestamp = _Timestamps()

    def format(self, record: logging.LogRecord) -> str:
        parts = [
            f'{{"ts":"{self._timestamp(record.created)}",'
            f'"level":{_quote(record.levelname.lower())},'
            f'"logger":{_quote(record.name)},"msg":{_quote(record.getMessage())}'
        ]
        request_id = REQUEST_ID.get()
        if request_id is not None:
            parts.append(f'"request_id":{_quote(request_id)}')
        for key, value in record.__dict__.items():
            if key not in _NOT_EXTRAS and not key.startswith("_"):
                parts.append(f"{_quote(key)}:{_json_value(value)}")
        if record.exc_info and record.exc_info[0] is not None:
            parts.append(f'"exc_type":{_quote(record.exc_info[0].__name__)}')
            parts.append(f'"exc":{_quote(self.formatException(record.exc_info))}')
        return ",".join(parts) + "}"


#: What a text line never carries as it is: control characters (C0, DEL, C1), the line
#: and paragraph separators (every Zl and Zp character) and lone surrogates.
_UNSAFE = "\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff"
#: Each unsafe character as a Python string escape (a traceback's lines use these alone).
_TEXT_ESCAPES: dict[int, str] = {
    code: f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
    for code in (*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029, *range(0xD800, 0xE000))
} | {ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"}
#: A quoted field escapes its quote and backslash too: it reads back as a Python literal.
_QUOTED_ESCAPES = _TEXT_ESCAPES | {ord("\\"): "\\\\", ord('"'): '\\"'}
_PLAIN = rf'[^\s"\\{_UNSAFE}]'
#: Fields written as they are; anything else is quoted, so no value can pass for another field.
_BARE_VALUE = re.compile(f"{_PLAIN}+")
_BARE_KEY = re.compile(rf'[^\s"\\={_UNSAFE}]+')
_BARE_REQUEST_ID = re.compile(rf'[^\s"\\\[\]{_UNSAFE}]+')
_BARE_MESSAGE = re.compile(rf"(?!\[){_PLAIN}+(?: {_PLAIN}+)*")


def _text_field(value: str, bare: re.Pattern[str]) -> str:
    """``value`` as it is when ``bare`` matches it, else quoted as a Python string literal."""
    if bare.fullmatch(value):
        return value
    return '"' + value.translate(_QUOTED_ESCAPES) + '"'


class TextFormatter(logging.Formatter):
    """Human-readable lines with the same extras, for a terminal: ``time level logger:
    [request id] message  key=value ...``, the time as JSON lines write it. A record is one
    line: a field with spaces, quotes or unsafe characters is quoted with those escaped. A
    traceback follows on lines that begin ``  | ``, which no record's own line does."""

    def __init__(self) -> None:
        super().__init__()
        self._timestamp = _Timestamps()

    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(
            f"{_text_field(k, _BARE_KEY)}={_text_field(str(v), _BARE_VALUE)}"
            for k, v in record.__dict__.items()
            if k not in _STANDARD_ATTRS and not k.startswith("_")
        )
        request_id = REQUEST_ID.get()
        prefix = f"[{_text_field(request_id, _BARE_REQUEST_ID)}] " if request_id else ""
        level = _text_field(record.levelname.lower(), _BARE_VALUE)
        logger = _text_field(record.name, _BARE_VALUE)
        message = _text_field(record.getMessage(), _BARE_MESSAGE)
        line = f"{self._timestamp(record.created)} {level:7} {logger}: {prefix}{message}"
        if extras:
            line += f"  {extras}"
        if record.exc_info and record.exc_info[0] is not None:
            trace = self.formatException(record.exc_info)
            line += "".join(f"\n  | {part.translate(_TEXT_ESCAPES)}" for part in trace.split("\n"))
        return line


def lighten_log_records() -> None:
    """For ``jargate serve``: no formatter here prints the caller, thread or process, so
    log records stop collecting them (process-wide: not for a library's caller)."""
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False


def setup_logging(level: str = "info", fmt: str = "json") -> None:
    """Route every log record to stderr in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's own access log would print query strings (codes, tokens): ours does not.
    logging.getLogger("aiohttp.access").disabled = True


#: RFC 9110 §9 methods (and PATCH): the method label's values; anything else is "other".
_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
)
#: Upper bounds of the request latency histogram, in seconds.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class RequestStats:
    """Requests answered and their latency, kept as plain numbers (a dict update and a
    bisect a request, on the event loop) and turned into Prometheus families only when
    scraped: ``jargate_http_requests_total{route,method,status}`` and the histogram
    ``jargate_http_request_duration_seconds{route}``: cheaper than prometheus_client's
    own Counter and Histogram (locks, bucket loops) on every request."""

    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.bounds = buckets
        self._le = [repr(float(bound)) for bound in buckets] + ["+Inf"]
        self.counts: dict[tuple[str, str, int], int] = {}
        #: route -> one count per bucket (the last one +Inf), then the sum of seconds.
        self.latency: dict[str, list[float]] = {}

    def observe(self, route: str, method: str, status: int, elapsed: float) -> None:
        key = (route, method, status)
        self.counts[key] = self.counts.get(key, 0) + 1
        histogram = self.latency.get(route)
        if histogram is None:
            histogram = self.latency[route] = [0] * (len(self.bounds) + 1) + [0.0]
        histogram[bisect_left(self.bounds, elapsed)] += 1
        histogram[-1] += elapsed

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "jargate_http_requests",
            "HTTP requests answered, by route kind, method and status",
            labels=["route", "method", "status"],
        )
        for (route, method, status), count in self.counts.items():
            requests.add_metric([route, method, str(status)], count)
        yield requests
        latency = HistogramMetricFamily(
            "jargate_http_request_duration_seconds",
            "Time to answer, by route kind",
            labels=["route"],
        )
        for route, histogram in self.latency.items():
            cumulative = list(accumulate(histogram[:-1]))
            latency.add_metric([route], list(zip(self._le, cumulative, strict=True)), histogram[-1])
        yield latency


class StoreResets:
    """``jargate_store_resets_total``: times the store found its memory gone (its marker
    missing) and began it again, read from the store when scraped (``read``)."""

    def __init__(self) -> None:
        self.read: Callable[[], int] = lambda: 0

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "jargate_store_resets",
            "Times the store found its memory marker missing and wrote it (first start included)",
            value=self.read(),
        )


class Metrics:
    """The gateway's Prometheus metrics, in a registry of their own (no global state),
    with the standard ``process_*``, ``python_gc_*`` and ``python_info`` families."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        Gauge(
            "jargate_build_info",
            "The running gateway's version (always 1)",
            ["version"],
            registry=self.registry,
        ).labels(__version__).set(1)
        self.requests = RequestStats()
        self.registry.register(self.requests)
        self.upstream_errors = Counter(
            "jargate_upstream_errors",
            "Upstream failures, by kind (unreachable, timeout)",
            ["kind"],
            registry=self.registry,
        )
        self.store_errors = Counter(
            "jargate_store_errors",
            "Store operations that failed (the request failed closed)",
            registry=self.registry,
        )
        self.code_replays = Counter(
            "jargate_code_replays",
            "Authorization codes presented at the token endpoint again after their one "
            "redemption (a likely theft)",
            registry=self.registry,
        )
        self.store_resets = StoreResets()
        self.registry.register(self.store_resets)
        #: Given to the store and the upstream client, which observe into them.
        self.store_latency = store_seconds()
        self.registry.register(self.store_latency)
        self.upstream_latency = upstream_seconds()
        self.registry.register(self.upstream_latency)
        self._decision_children: dict[tuple[str, str, str, str], Counter] = {}
        self.decisions = Counter(
            "jargate_authorization_decisions",
            "Authorization-request decisions, by outcome, error, the rule that refused, and "
            "how the object came",
            ["outcome", "error", "source", "reason"],
            registry=self.registry,
        )
        reloads = Counter(
            "jargate_config_reload",
            "Reloads of the registry and keys files, by outcome (a failure keeps the running "
            "configuration)",
            ["outcome"],
            registry=self.registry,
        )
        self._reloads = {True: reloads.labels("success"), False: reloads.labels("failure")}
        self.reload_successful = Gauge(
            "jargate_config_last_reload_successful",
            "1 unless the last reload of the registry and keys files failed",
            registry=self.registry,
        )
        self.reload_successful.set(1)

    def observe_request(self, route: str, method: str, status: int, elapsed: float) -> None:
        """Count one answered request and its latency. Methods outside RFC 9110's are
        counted as ``other``: clients choose them, and every label value is kept."""
        self.requests.observe(route, method if method in _METHODS else "other", status, elapsed)

    def count_decision(self, outcome: str, error: str, source: str, reason: str = "none") -> None:
        """Count one authorization decision (label children looked up once)."""
        key = (outcome, error, source, reason)
        child = self._decision_children.get(key)
        if child is None:
            child = self._decision_children[key] = self.decisions.labels(*key)
        child.inc()

    def count_reload(self, *, success: bool) -> None:
        """Count one reload of the configuration files."""
        self._reloads[success].inc()
        self.reload_successful.set(1 if success else 0)

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)


def _route_label(request: web.Request) -> str:
    """The gateway's own paths by name; everything proxied (and unrouted) as ``proxy``."""
    label: str = request.get(ROUTE, PASS_THROUGH)
    return label


def observing(metrics: Metrics, trusted: tuple[Network, ...]) -> Callable[[Handler], Handler]:
    """What every route's handler is wrapped in: the request id, one access-log line and
    metrics (errors are answered inside, by :mod:`proxy.boundary`). The one catch-all
    route is registered wrapped (``proxy/app.py``), so no request escapes it."""

    async def observed(request: web.Request, handler: Handler) -> web.StreamResponse:
        incoming = request.headers.get("X-Request-Id")
        if incoming and is_trusted(request.remote, trusted) and _SAFE_REQUEST_ID.match(incoming):
            request_id = incoming
        else:
            request_id = os.urandom(16).hex()
        token = REQUEST_ID.set(request_id)
        started = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            if not response.prepared:
                response.headers.setdefault("X-Request-Id", request_id)
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            elapsed = time.perf_counter() - started
            metrics.observe_request(_route_label(request), request.method, status, elapsed)
            decision = request.get(DECISION)
            level = _level(status, decision is not None)
            if access_log.isEnabledFor(level):
                _access_line(request, level, status, elapsed, decision)
            REQUEST_ID.reset(token)

    def wrap(handler: Handler) -> Handler:
        return partial(observed, handler=handler)

    return wrap


def _level(status: int, decided: bool) -> int:
    """An outage (a dependency down) at warning, the gateway's own failure at error, an
    authorization decision or a refusal at info; a request merely passed through (the
    upstream logs it too) at debug."""
    if status >= 500:
        return logging.WARNING if status in (502, 503, 504) else logging.ERROR
    return logging.INFO if decided or status >= 400 else logging.DEBUG


def _access_line(
    request: web.Request,
    level: int,
    status: int,
    elapsed: float,
    decision: dict[str, str | None] | None,
) -> None:
    access_log.log(
        level,
        "authorization decision" if decision else "request",
        extra={
            "method": request.method,
            "path": request.path,
            "status": status,
            "duration_ms": round(elapsed * 1000, 2),
            "remote": request.remote,
            **request.get(ERROR, {}),
            **(decision or {}),
        },
    )


def metrics_app(metrics: Metrics) -> web.Application:
    """The app served on ``JARGATE_METRICS_PORT``: ``/metrics`` and nothing else."""

    async def handle(request: web.Request) -> web.Response:
        response = web.Response(body=metrics.render())
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    app = web.Application()
    app.on_response_prepare.append(drop_server_banner)
    app.router.add_get("/metrics", handle)
    return app


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the process answers. Touches nothing else."""
    return web.json_response({"status": "ok"})


async def readiness(request: web.Request) -> web.Response:
    """Readiness: the store answers a ping and the upstream answers HTTP. A failed reload
    is reported (``config``) but leaves it ready: the running configuration still serves,
    and a bad file reaching every pod at once must not take them all out of service."""
    checks = {"store": "ok", "upstream": "ok"}
    try:
        await request.app[appkeys.STORE].ping()
    except StoreUnavailable:
        checks["store"] = "unavailable"
    if not await request.app[appkeys.UPSTREAM].reachable():
        checks["upstream"] = "unavailable"
    ready = all(value == "ok" for value in checks.values())
    config = "reload_failed" if request.app[appkeys.CONFIG].reload_failed else "ok"
    return web.json_response(
        {"status": "ready" if ready else "not ready", **checks, "config": config},
        status=200 if ready else 503,
    )
