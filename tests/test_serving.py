"""Client connections (proxy/serving.py): request heads and idle keep-alive are bounded, and
no answer of the gateway's own carries aiohttp's Server banner.

Connection bounds are seen on raw sockets against a real ``jargate serve``; banners on the
gateway built in-process, in front of the legacy upstream or of a raw scripted upstream."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp.http import SERVER_SOFTWARE
from multidict import CIMultiDict
from pydantic import ValidationError

from proxy.app import create_app
from proxy.keyring import Keyring
from proxy.observability import Metrics, metrics_app
from proxy.store import MemoryStore
from tests.conftest import AiohttpClient, GatewayFactory, Legacy
from tests.jar import REDIRECT, client_registry
from tests.support import GatewayProcess, make_settings

#: The subprocess's bounds: short, with the keep-alive well clear of the head timeout.
HEAD_TIMEOUT = 1
KEEPALIVE_TIMEOUT = 8
#: The longest any raw-socket step may wait (a loaded machine shares two cores).
WAIT = 20.0
HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@asynccontextmanager
async def serving(legacy: Legacy, **env: str) -> AsyncIterator[GatewayProcess]:
    """`jargate serve` in front of ``legacy`` with the short connection bounds."""
    env.setdefault("JARGATE_REQUEST_HEAD_TIMEOUT_SECONDS", str(HEAD_TIMEOUT))
    env.setdefault("JARGATE_KEEPALIVE_TIMEOUT_SECONDS", str(KEEPALIVE_TIMEOUT))
    async with GatewayProcess(
        JARGATE_UPSTREAM_URL=legacy.url, JARGATE_ISSUER="http://127.0.0.1:8000", **env
    ) as gateway:
        yield gateway


def requests_from_clients(legacy: Legacy) -> list[str]:
    """What reached the upstream other than ``serve``'s own start-up probes, which it makes
    once it listens (a HEAD of ``/``, and the discovery document)."""
    return [
        received.raw_path
        for received in legacy.recorder.requests
        if not (received.method == "HEAD" and received.raw_path == "/")
        and not received.raw_path.startswith("/.well-known/")
    ]


@asynccontextmanager
async def connection(port: int) -> AsyncIterator[Streams]:
    """A raw TCP connection to ``port`` on loopback, closed on the way out."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), WAIT)
    try:
        yield reader, writer
    finally:
        writer.close()
        with suppress(ConnectionError):
            await asyncio.wait_for(writer.wait_closed(), WAIT)


async def closed_within(reader: asyncio.StreamReader, seconds: float = WAIT) -> bytes:
    """Everything the peer sent until it closed the connection; fails if it is still open
    after ``seconds``."""
    received = b""
    try:
        async with asyncio.timeout(seconds):
            while chunk := await reader.read(65536):
                received += chunk
    except ConnectionResetError:
        pass
    except TimeoutError:
        pytest.fail(f"the connection is still open after {seconds} s")
    return received


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, CIMultiDict[str], bytes]:
    """One answer with a Content-Length: status, header fields, body."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers: CIMultiDict[str] = CIMultiDict()
    for line in filter(None, lines):
        name, _, value = line.partition(": ")
        headers.add(name, value)
    length = int(headers.get("Content-Length", "0"))
    return (
        int(status_line.split()[1]),
        headers,
        await asyncio.wait_for(reader.readexactly(length), WAIT),
    )


@pytest.mark.slow
async def test_connection_that_sends_nothing_is_closed(legacy: Legacy) -> None:
    """A connection that never sends a byte is closed unanswered after the head timeout, on
    the gateway's port and on the metrics port."""
    async with serving(legacy) as gateway:
        for port in (gateway.port, gateway.metrics_port):
            async with connection(port) as (reader, _):
                assert b"" == await closed_within(reader)
        assert [] == requests_from_clients(legacy)


async def test_malformed_requests_are_neither_echoed_nor_logged(legacy: Legacy) -> None:
    """aiohttp's 400 would echo the start of a bad request line or header, and log it with a
    traceback: a code, a token or a cookie. Neither the answer nor the log carries them."""
    secret = b"c0de-SECRET-t0ken"
    long_line = b"GET /cb?code=" + secret + b"&x=" + b"a" * 5000 + b" HTTP/1.1\r\n\r\n"
    bad_cookie = b"GET / HTTP/1.1\r\nCookie: sid=" + secret + b"\x01\r\n\r\n"
    async with serving(legacy, JARGATE_MAX_HEADER_BYTES="4096") as gateway:
        for request in (long_line, bad_cookie):
            async with connection(gateway.port) as (reader, writer):
                writer.write(request)
                status, _, body = await read_answer(reader)
                assert 400 == status
                assert secret not in body
        logs = await gateway.stop()
    assert "malformed request refused" in logs
    assert secret.decode() not in logs


@pytest.mark.slow
async def test_head_trickled_byte_by_byte_is_closed(legacy: Legacy) -> None:
    """A head sent a byte at a time, slower than the head timeout allows, is cut off before
    it completes: no answer, and nothing of it reaches the upstream."""
    head = b"GET /trickle HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: " + b"p" * 200 + b"\r\n\r\n"
    async with serving(legacy) as gateway, connection(gateway.port) as (reader, writer):
        closed = asyncio.ensure_future(closed_within(reader))
        sent = 0
        for byte in head:
            if closed.done():
                break
            try:
                writer.write(bytes([byte]))
                await writer.drain()
            except ConnectionError:
                break
            sent += 1
            await asyncio.sleep(0.05)
        assert b"" == await closed
        assert sent < len(head)
        assert [] == [path for path in legacy.recorder.paths() if path.startswith("/trickle")]


@pytest.mark.slow
async def test_complete_head_on_a_fresh_connection_is_answered(legacy: Legacy) -> None:
    """A whole head on a fresh connection is answered, with no Server field of the
    gateway's own; a relayed answer on the same connection keeps the upstream's."""
    async with serving(legacy) as gateway, connection(gateway.port) as (reader, writer):
        writer.write(HEALTHZ)
        status, headers, body = await read_answer(reader)
        assert (200, b'{"status": "ok"}', None) == (status, body, headers.get("Server"))
        writer.write(b"GET /echo HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        status, headers, _ = await read_answer(reader)
        assert (200, "legacy", [SERVER_SOFTWARE]) == (
            status,
            headers["X-Upstream"],
            headers.getall("Server"),
        )


@pytest.mark.slow
async def test_idle_kept_connection_outlives_the_head_timeout_until_the_keepalive_timeout(
    legacy: Legacy,
) -> None:
    """After an answer, an idle kept-alive connection stays open well past the head timeout
    and is closed once the keep-alive timeout has passed."""
    async with serving(legacy) as gateway, connection(gateway.port) as (reader, writer):
        writer.write(HEALTHZ)
        assert 200 == (await read_answer(reader))[0]
        answered = time.monotonic()
        assert b"" == await closed_within(reader, KEEPALIVE_TIMEOUT + WAIT)
        assert time.monotonic() - answered > KEEPALIVE_TIMEOUT / 2


@pytest.mark.slow
async def test_kept_connection_answers_after_idling_and_bounds_the_next_head(
    legacy: Legacy,
) -> None:
    """A request arriving on a kept connection after idling past the head timeout is
    answered; a head then begun on the idle connection and left unfinished is closed after
    the head timeout, long before the keep-alive timeout, and never reaches the upstream."""
    async with serving(legacy) as gateway, connection(gateway.port) as (reader, writer):
        writer.write(HEALTHZ)
        assert 200 == (await read_answer(reader))[0]
        await asyncio.sleep(HEAD_TIMEOUT * 2.5)
        writer.write(HEALTHZ)
        assert 200 == (await read_answer(reader))[0]
        await asyncio.sleep(HEAD_TIMEOUT / 2)
        writer.write(b"GET /stalled HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        stalled = time.monotonic()
        assert b"" == await closed_within(reader)
        assert time.monotonic() - stalled < KEEPALIVE_TIMEOUT - 3
        assert [] == [path for path in legacy.recorder.paths() if path.startswith("/stalled")]


@pytest.mark.slow
async def test_aiohttps_answers_before_routing_have_no_server_field(legacy: Legacy) -> None:
    """aiohttp's own 400 for a malformed request line and for a header field over
    JARGATE_MAX_HEADER_BYTES has no Server field; the connection is closed and the upstream
    sees nothing."""
    oversized = b"GET /oversized HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"b" * 5000 + b"\r\n\r\n"
    async with serving(legacy, JARGATE_MAX_HEADER_BYTES="4096") as gateway:
        for request in (b"GARBAGE\r\n\r\n", oversized):
            async with connection(gateway.port) as (reader, writer):
                writer.write(request)
                status, headers, _ = await read_answer(reader)
                assert (400, "text/plain; charset=utf-8", None) == (
                    status,
                    headers["Content-Type"],
                    headers.get("Server"),
                )
                assert b"" == await closed_within(reader)
        assert [] == requests_from_clients(legacy)


async def test_gateways_own_answers_have_no_server_field(
    gateway: GatewayFactory, legacy: Legacy
) -> None:
    """Health, readiness, discovery, JWKS, PAR's 405 and 401, a 413, the HTML error page,
    error redirects and JARM answers the gateway writes itself carry no Server field."""
    client = await gateway(registry=client_registry())
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    refused = f"client_id=app&redirect_uri={REDIRECT}&response_type=code&request=abc&state=s"
    requests: dict[str, tuple[str, str, Mapping[str, Any]]] = {
        "healthz": ("GET", "/healthz", {}),
        "readyz": ("GET", "/readyz", {}),
        "discovery": ("GET", "/.well-known/openid-configuration", {}),
        "jwks": ("GET", "/.well-known/jargate/jwks.json", {}),
        "par GET": ("GET", "/par", {}),
        "par unauthenticated": ("POST", "/par", {"data": {"client_id": "app"}}),
        "body too large": ("POST", "/authorize", {"data": b"a=" + b"x" * 200_000, "headers": form}),
        "html error page": (
            "GET",
            "/authorize?client_id=app&redirect_uri=https://evil.example/cb&request=abc",
            {"headers": {"Accept": "text/html"}},
        ),
        "error redirect": ("GET", f"/authorize?{refused}", {}),
        "jarm redirect": (
            "GET",
            f"/authorize?client_id=plain&redirect_uri={REDIRECT}&response_type=token"
            "&response_mode=query.jwt&state=s",
            {},
        ),
        "jarm form_post page": ("GET", f"/authorize?{refused}&response_mode=form_post.jwt", {}),
    }
    answers = {}
    for name, (method, target, options) in requests.items():
        async with client.request(method, target, allow_redirects=False, **options) as response:
            answers[name] = (response.status, response.headers.get("Server"))
    assert {
        "healthz": (200, None),
        "readyz": (200, None),
        "discovery": (200, None),
        "jwks": (200, None),
        "par GET": (405, None),
        "par unauthenticated": (401, None),
        "body too large": (413, None),
        "html error page": (400, None),
        "error redirect": (302, None),
        "jarm redirect": (302, None),
        "jarm form_post page": (200, None),
    } == answers
    assert [] == [p for p in legacy.recorder.paths() if p.startswith(("/authorize", "/par"))]


async def test_metrics_apps_answers_have_no_server_field(aiohttp_client: AiohttpClient) -> None:
    """/metrics, and aiohttp's own 405 and 404 on the metrics port, carry no Server field."""
    client = await aiohttp_client(metrics_app(Metrics()))
    answers = {}
    for method, path in (("GET", "/metrics"), ("POST", "/metrics"), ("GET", "/elsewhere")):
        async with client.request(method, path) as response:
            answers[f"{method} {path}"] = (response.status, response.headers.get("Server"))
    assert {
        "GET /metrics": (200, None),
        "POST /metrics": (405, None),
        "GET /elsewhere": (404, None),
    } == answers


def _answer(server_fields: str, chunked: bool = False) -> bytes:
    framing = "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    if not chunked:
        framing = "Content-Length: 5\r\n\r\nhello"
    return f"HTTP/1.1 200 OK\r\n{server_fields}Connection: close\r\n{framing}".encode()


@dataclass
class ScriptedUpstream:
    """A raw HTTP/1.1 upstream: each path gets its scripted bytes, then the connection
    closes."""

    answers: dict[str, bytes]
    heads: list[bytes] = field(default_factory=list)
    server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
            self.heads.append(head)
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    await reader.readexactly(int(line.split(b":")[1]))
            writer.write(self.answers[head.split(b" ")[1].decode()])
            await writer.drain()
        finally:
            writer.close()


RELAYED = {
    "/own": _answer("Server: Legacy-IdP/2.1\r\n"),
    "/own-chunked": _answer("Server: Legacy-IdP/2.1\r\n", chunked=True),
    "/aiohttps-text": _answer(f"Server: {SERVER_SOFTWARE}\r\n"),
    "/two": _answer("Server: front/1\r\nServer: back/2\r\n"),
    "/none": _answer(""),
    "/none-chunked": _answer("", chunked=True),
}


async def test_relayed_answers_keep_exactly_the_upstreams_server_field(
    aiohttp_client: AiohttpClient, shared_keyring: Keyring
) -> None:
    """A relayed answer (whole or streamed, GET or POST) carries exactly the Server fields
    the upstream sent, even aiohttp's own text, and none when the upstream sent none."""
    upstream = ScriptedUpstream(RELAYED)
    upstream.server = await asyncio.start_server(upstream.handle, "127.0.0.1", 0)
    try:
        app = create_app(make_settings(upstream.url), keyring=shared_keyring, store=MemoryStore())
        client = await aiohttp_client(app)
        answers = {}
        for method, path in [("GET", path) for path in RELAYED] + [("POST", "/none")]:
            async with client.request(method, path, data=b"x" if method == "POST" else None) as r:
                answers[f"{method} {path}"] = (await r.read(), r.headers.getall("Server", []))
    finally:
        upstream.server.close()
        await upstream.server.wait_closed()
    assert {
        "GET /own": (b"hello", ["Legacy-IdP/2.1"]),
        "GET /own-chunked": (b"hello", ["Legacy-IdP/2.1"]),
        "GET /aiohttps-text": (b"hello", [SERVER_SOFTWARE]),
        "GET /two": (b"hello", ["front/1", "back/2"]),
        "GET /none": (b"hello", []),
        "GET /none-chunked": (b"hello", []),
        "POST /none": (b"hello", []),
    } == answers
    assert len(answers) == len(upstream.heads)


def test_connection_bounds_have_safe_defaults_and_ranges() -> None:
    """JARGATE_REQUEST_HEAD_TIMEOUT_SECONDS defaults to 10 (1 to 120) and
    JARGATE_KEEPALIVE_TIMEOUT_SECONDS to 75 (1 to 3600); values outside are refused."""
    settings = make_settings()
    assert (10.0, 75.0) == (
        settings.request_head_timeout_seconds,
        settings.keepalive_timeout_seconds,
    )
    out_of_range: tuple[tuple[str, float], ...] = (
        ("request_head_timeout_seconds", 0.5),
        ("request_head_timeout_seconds", 121),
        ("keepalive_timeout_seconds", 0),
        ("keepalive_timeout_seconds", 3601),
    )
    for name, value in out_of_range:
        with pytest.raises(ValidationError, match=name):
            make_settings("http://127.0.0.1:9", **{name: value})
