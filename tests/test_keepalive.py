"""GET and HEAD to the upstream on kept-alive connections (proxy/keepalive.py).

The upstream here is a raw HTTP/1.1 server on loopback that writes the bytes each test
scripts and records every connection and every request head it receives, so that what
goes over the wire is seen exactly."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from multidict import CIMultiDict
from yarl import URL

from proxy import keepalive
from proxy.app import create_app
from proxy.keepalive import KeptConnections
from proxy.keyring import Keyring
from proxy.store import MemoryStore
from tests.conftest import AiohttpClient
from tests.support import make_settings

OK = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"

#: What the upstream answers to the n-th request on a connection (0-based, per
#: connection), and whether it then closes that connection.
Script = Callable[[int, int], tuple[bytes, bool]]


@dataclass
class RawUpstream:
    """A scripted HTTP/1.1 upstream: ``script(connection, request)`` gives the answer."""

    script: Script
    #: Seconds before each answer (to make concurrent requests overlap).
    delay: float = 0.0
    heads: list[bytes] = field(default_factory=list)
    connections: int = 0
    #: Connections still open on the upstream's side.
    open: int = 0
    server: asyncio.Server | None = None
    writers: list[asyncio.StreamWriter] = field(default_factory=list)

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        number = self.connections
        self.connections += 1
        self.open += 1
        self.writers.append(writer)
        try:
            for index in range(100):
                head = await reader.readuntil(b"\r\n\r\n")
                self.heads.append(head)
                answer, close = self.script(number, index)
                await asyncio.sleep(self.delay)
                writer.write(answer)
                await writer.drain()
                if close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.open -= 1
            writer.close()


@pytest.fixture
async def raw_upstream() -> AsyncIterator[Callable[[Script], RawUpstream]]:
    started: list[RawUpstream] = []

    def start(script: Script) -> RawUpstream:
        upstream = RawUpstream(script)
        started.append(upstream)
        return upstream

    yield start
    for upstream in started:
        if upstream.server is not None:
            upstream.server.close()
            for writer in upstream.writers:
                writer.close()
            await upstream.server.wait_closed()


async def through_gateway(
    aiohttp_client: AiohttpClient, upstream: RawUpstream, path: str = ""
) -> TestClient[Any, Any]:
    upstream.server = await asyncio.start_server(upstream.handle, "127.0.0.1", 0)
    app: web.Application = create_app(
        make_settings(upstream.url + path, upstream_read_timeout_seconds=2.0),
        keyring=Keyring.throwaway(),
        store=MemoryStore(),
    )
    return await aiohttp_client(app)


async def test_gets_share_one_kept_connection(
    aiohttp_client: AiohttpClient, raw_upstream: Callable[[Script], RawUpstream]
) -> None:
    """Twenty GETs one after the other travel on one connection; each gets its answer."""
    upstream = raw_upstream(lambda connection, request: (OK, False))
    client = await through_gateway(aiohttp_client, upstream)
    for _ in range(20):
        response = await client.get("/page")
        assert (200, "hello") == (response.status, await response.text())
    assert 1 == upstream.connections
    assert 20 == len(upstream.heads)


async def test_request_head_is_exactly_the_forwarded_headers(
    aiohttp_client: AiohttpClient, raw_upstream: Callable[[Script], RawUpstream]
) -> None:
    """The request line carries the raw target byte for byte (under the upstream URL's
    own path); the headers are the client's end-to-end ones plus X-Forwarded-* and the
    request id: one Host (the client's), nothing invented, no hop-by-hop field, no body
    framing."""
    upstream = raw_upstream(lambda connection, request: (OK, False))
    client = await through_gateway(aiohttp_client, upstream, path="/idp")
    response = await client.get(
        "/page?a=%25&b=c+d",
        headers={"Connection": "keep-alive, X-Hop", "X-Hop": "1", "Accept": "text/html"},
        skip_auto_headers=["Accept-Encoding", "User-Agent"],
    )
    assert 200 == response.status
    lines = upstream.heads[0].decode().split("\r\n")
    assert "GET /idp/page?a=%25&b=c+d HTTP/1.1" == lines[0]
    names = [line.split(":", 1)[0].lower() for line in lines[1:] if line]
    assert 1 == names.count("host")
    assert {"host", "accept", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"} <= set(
        names
    )
    assert "x-request-id" in names
    for absent in ("x-hop", "connection", "accept-encoding", "user-agent", "content-length"):
        assert absent not in names
    assert "transfer-encoding" not in names


async def test_kept_connection_the_upstream_closed_is_retried_once(
    aiohttp_client: AiohttpClient, raw_upstream: Callable[[Script], RawUpstream]
) -> None:
    """The upstream drops a kept connection when the next request arrives on it (its idle
    timeout racing the request): that GET goes again, once, on a new connection. A
    request that fails on a new connection is not sent again (see the 502 cases)."""
    upstream = raw_upstream(
        lambda connection, request: (OK, False) if request == 0 else (b"", True)
    )
    client = await through_gateway(aiohttp_client, upstream)
    for _ in range(3):
        response = await client.get("/page")
        assert (200, "hello") == (response.status, await response.text())
    assert 3 == upstream.connections
    assert 5 == len(upstream.heads), "the 2nd and 3rd GET were each sent twice"


async def test_connection_close_and_unread_bodies_are_not_kept(
    aiohttp_client: AiohttpClient, raw_upstream: Callable[[Script], RawUpstream]
) -> None:
    """An answer with ``Connection: close``, or an HTTP/1.0 one, ends its connection."""
    answers = [
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 5\r\n\r\nhello",
        b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello",
        OK,
    ]
    upstream = raw_upstream(lambda connection, request: (answers[min(connection, 2)], False))
    client = await through_gateway(aiohttp_client, upstream)
    for _ in range(4):
        response = await client.get("/page")
        assert (200, "hello") == (response.status, await response.text())
    assert 3 == upstream.connections


async def test_bodies_framed_by_chunks_or_by_the_close_arrive_whole(
    aiohttp_client: AiohttpClient, raw_upstream: Callable[[Script], RawUpstream]
) -> None:
    """A chunked body arrives whole and its connection is kept; a body that ends with the
    connection (no length, ``Connection: close``) arrives whole and its connection is not."""
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n"
    )
    until_close = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nhello"
    upstream = raw_upstream(
        lambda connection, request: (chunked, False) if request == 0 else (until_close, True)
    )
    client = await through_gateway(aiohttp_client, upstream)
    for _ in range(3):
        response = await client.get("/page")
        assert (200, "hello") == (response.status, await response.text())
    assert 2 == upstream.connections  # chunked, then until-close on the kept one; then new


async def test_idle_connections_expire(
    aiohttp_client: AiohttpClient,
    raw_upstream: Callable[[Script], RawUpstream],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A connection idle longer than KEEPALIVE_SECONDS is closed, not reused."""
    monkeypatch.setattr(keepalive, "KEEPALIVE_SECONDS", 0.1)
    upstream = raw_upstream(lambda connection, request: (OK, False))
    client = await through_gateway(aiohttp_client, upstream)
    assert 200 == (await client.get("/page")).status
    await asyncio.sleep(0.2)
    assert 200 == (await client.get("/page")).status
    assert 2 == upstream.connections


async def test_idle_connections_left_unused_are_closed_once_expired(
    aiohttp_client: AiohttpClient,
    raw_upstream: Callable[[Script], RawUpstream],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Three requests at once leave three kept connections; a light load afterwards uses
    only the most recent one, and the other two are closed once they expired."""
    monkeypatch.setattr(keepalive, "KEEPALIVE_SECONDS", 0.5)
    upstream = raw_upstream(lambda connection, request: (OK, False))
    upstream.delay = 0.05
    client = await through_gateway(aiohttp_client, upstream)
    answers = await asyncio.gather(*(client.get("/page") for _ in range(3)))
    assert [200, 200, 200] == [answer.status for answer in answers]
    assert 3 == upstream.open
    upstream.delay = 0.0
    for _ in range(16):  # 0.8 s: the two left idle expire, the one in use never does
        assert 200 == (await client.get("/page")).status
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.05)  # the upstream sees the closes
    assert 1 == upstream.open
    assert 3 == upstream.connections


async def test_informational_answers_are_skipped_and_head_has_no_body(
    aiohttp_client: AiohttpClient, raw_upstream: Callable[[Script], RawUpstream]
) -> None:
    """103 Early Hints before the answer is not the answer; a HEAD answer carries no
    body even with a Content-Length, and its connection is kept."""
    hints = b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n" + OK
    answers = [hints, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", OK]  # 2nd: the HEAD
    upstream = raw_upstream(lambda connection, request: (answers[min(request, 2)], False))
    client = await through_gateway(aiohttp_client, upstream)
    response = await client.get("/page")
    assert (200, "hello") == (response.status, await response.text())
    head = await client.head("/page")
    assert (200, "5", b"") == (head.status, head.headers["Content-Length"], await head.read())
    assert 200 == (await client.get("/page")).status
    assert 1 == upstream.connections


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 2OO OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        b"HTTP/1.1 200 OK\r\nBad Header\r\n\r\n",
        b"",
    ],
    ids=["bad status", "two lengths", "bad header", "closed without answer"],
)
async def test_malformed_or_missing_answer_is_502_and_not_kept(
    aiohttp_client: AiohttpClient, raw_upstream: Callable[[Script], RawUpstream], answer: bytes
) -> None:
    """What aiohttp's parser refuses is a 502 `temporarily_unavailable`, and its
    connection is dropped: the next request opens a new one and gets its own answer."""
    upstream = raw_upstream(
        lambda connection, request: (answer, True) if connection == 0 else (OK, False)
    )
    client = await through_gateway(aiohttp_client, upstream)
    refused = await client.get("/page")
    assert (502, "temporarily_unavailable") == (
        refused.status,
        (await refused.json())["error"],
    )
    assert "Location" not in refused.headers  # the gateway's own page, not a redirect
    response = await client.get("/page")
    assert (200, "hello") == (response.status, await response.text())
    assert 2 == upstream.connections


async def test_silent_upstream_is_504_within_the_read_timeout(
    aiohttp_client: AiohttpClient, raw_upstream: Callable[[Script], RawUpstream]
) -> None:
    """An upstream that takes the request and never answers: 504 at the read timeout
    (2 s here), and that connection is not kept."""
    upstream = raw_upstream(lambda connection, request: (b"" if connection == 0 else OK, False))
    client = await through_gateway(aiohttp_client, upstream)
    started = asyncio.get_running_loop().time()
    response = await client.get("/page")
    assert (504, "temporarily_unavailable") == (response.status, (await response.json())["error"])
    assert "Location" not in response.headers  # the gateway's own page, not a redirect
    assert asyncio.get_running_loop().time() - started < 4
    assert 200 == (await client.get("/page")).status
    assert 2 == upstream.connections


@pytest.mark.parametrize(
    ("target", "headers"),
    [
        ("/page HTTP/1.1\r\nX-Smuggled: 1", {}),
        ("/page x", {}),
        ("http://elsewhere/page", {}),
        ("/page", {"X-Test": "a\r\nX-Smuggled: 1"}),
        ("/page", {"X-Test": "a\x00b"}),
    ],
    ids=["CRLF in the target", "space in the target", "absolute target", "CRLF in a value", "NUL"],
)
async def test_nothing_that_could_split_the_request_is_sent(
    raw_upstream: Callable[[Script], RawUpstream], target: str, headers: dict[str, str]
) -> None:
    """A target or header that could make the upstream read two requests, or another
    host's, is refused before anything is written: the upstream sees no request."""
    upstream = raw_upstream(lambda connection, request: (OK, False))
    upstream.server = await asyncio.start_server(upstream.handle, "127.0.0.1", 0)
    kept = KeptConnections(URL(upstream.url), 1.0, 1.0)
    with pytest.raises(ValueError, match=r"target|control character"):
        await kept.request("GET", target, CIMultiDict(headers))
    await asyncio.sleep(0.05)
    assert (0, []) == (upstream.connections, upstream.heads)
    kept.close()


async def test_absolute_form_target_is_refused(
    aiohttp_client: AiohttpClient, raw_upstream: Callable[[Script], RawUpstream]
) -> None:
    """``GET http://elsewhere/page`` (a forward proxy's request form) is 400
    `invalid_request` from the gateway itself; the upstream sees nothing."""
    upstream = raw_upstream(lambda connection, request: (OK, False))
    client = await through_gateway(aiohttp_client, upstream)
    assert client.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    writer.write(
        b"GET http://elsewhere.example/page HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Accept: application/json\r\nConnection: close\r\n\r\n"
    )
    answer = await reader.read()
    writer.close()
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b'"invalid_request"' in answer
    assert b"Location:" not in answer
    assert (0, []) == (upstream.connections, upstream.heads)
