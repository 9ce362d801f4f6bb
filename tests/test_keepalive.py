"""Kept-alive connections to the upstream: GET and HEAD on proxy/keepalive.py, the rest on
the session's pool, both on proxy/persistence.py's guarded protocol.

The upstream here is tests/raw_upstream.py's scripted raw HTTP/1.1 server, so that what
goes over the wire is seen exactly."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import TCPConnector, client_proto
from aiohttp.client_proto import ResponseHandler
from aiohttp.http_parser import HttpResponseParser, HttpResponseParserPy
from aiohttp.http_writer import _serialize_headers
from aiohttp.test_utils import TestClient
from multidict import CIMultiDict
from yarl import URL

from proxy import keepalive
from proxy.keepalive import KeptConnections
from tests.conftest import AiohttpClient
from tests.raw_upstream import OK, Answer, RawUpstream, Script, through_gateway


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


#: An answer an attacker would have a kept connection's next reader take for its own.
FORGED = (
    b"HTTP/1.1 302 Found\r\nLocation: https://evil.example/\r\n"
    b"Set-Cookie: session=attacker; Path=/\r\nContent-Length: 0\r\n\r\n"
)
#: Where the forged answer is cut in two: its status line and Location, then the rest.
HELD = FORGED.index(b"Set-Cookie")


async def own_answer(client: TestClient[Any, Any], method: str) -> tuple[object, ...]:
    """Status, body, Location and Set-Cookie of one more request, as another user."""
    body = b"a=1" if method == "POST" else None
    response = await client.request(method, "/page", data=body, allow_redirects=False)
    headers = response.headers
    return (
        response.status,
        await response.text(),
        headers.get("Location"),
        headers.get("Set-Cookie"),
    )


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize(
    "written",
    [FORGED, b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n", b"\r\n"],
    ids=["forged 302 with a cookie", "408", "empty line"],
)
async def test_bytes_on_an_idle_connection_close_it(
    aiohttp_client: AiohttpClient,
    raw_upstream: Callable[[Script], RawUpstream],
    method: str,
    written: bytes,
) -> None:
    """Any byte written on a kept connection while no request is on it (a forged 302
    with a cookie, a 408 before the upstream closes, even an empty line) closes that
    connection: the next user's request goes on a new one and gets its own answer. GET on
    kept connections, POST on the session's pool, each kept after a clean answer."""
    upstream = raw_upstream(
        lambda connection, request: (
            (OK, 0.05, written) if (connection, request) == (0, 1) else OK,
            False,
        )
    )
    client = await through_gateway(aiohttp_client, upstream)
    for _ in range(2):
        assert (200, "hello", None, None) == await own_answer(client, method)
    await upstream.wait_written(2)
    await asyncio.sleep(0.05)  # the gateway reads what arrived
    assert (200, "hello", None, None) == await own_answer(client, method)
    assert [2, 1] == upstream.served


@pytest.mark.parametrize("parser", ["C", "Python"])
@pytest.mark.parametrize("rest", ["while idle", "with the next answer"])
@pytest.mark.parametrize(
    ("method", "answer"),
    [
        ("GET", OK),
        ("HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"),
        ("GET", b"HTTP/1.1 204 No Content\r\n\r\n"),
        ("GET", b"HTTP/1.1 304 Not Modified\r\n\r\n"),
    ],
    ids=["body longer than its length", "HEAD with a body", "204 with a body", "304 with a body"],
)
async def test_bytes_after_an_answer_in_its_read_close_its_connection(
    aiohttp_client: AiohttpClient,
    raw_upstream: Callable[[Script], RawUpstream],
    monkeypatch: pytest.MonkeyPatch,
    parser: str,
    rest: str,
    method: str,
    answer: bytes,
) -> None:
    """The start of a forged answer in the same read as the end of a kept GET's or HEAD's
    answer (held by aiohttp's C or Python parser, the rest written later) ends that
    connection: the first user gets the real answer, the next one its own on a new one."""
    if parser == "Python":
        monkeypatch.setattr(client_proto, "HttpResponseParser", HttpResponseParserPy)
    first = (
        (answer + FORGED[:HELD], 0.05, FORGED[HELD:])
        if rest == "while idle"
        else answer + FORGED[:HELD]
    )

    def script(connection: int, request: int) -> tuple[Answer, bool]:
        if connection > 0:
            return OK, False
        return (first, False) if request == 0 else (FORGED[HELD:] + OK, False)

    upstream = raw_upstream(script)
    client = await through_gateway(aiohttp_client, upstream)
    response = await client.request(method, "/page")
    assert (int(answer[9:12]), answer.partition(b"\r\n\r\n")[2], None) == (
        response.status,
        await response.read(),
        response.headers.get("Location"),
    )
    await upstream.wait_written(1)
    await asyncio.sleep(0.05)  # the gateway reads what arrived
    assert (200, "hello", None, None) == await own_answer(client, "GET")
    assert [1, 1] == upstream.served


#: A chunked answer whose last chunk comes in a later read (see the test below).
CHUNKED = (
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
    0.05,
    b"0\r\n\r\n",
)


@pytest.mark.parametrize("glued", ["a whole answer", "the start of one"])
async def test_bytes_after_a_posted_answer_in_its_read_close_its_connection(
    aiohttp_client: AiohttpClient, raw_upstream: Callable[[Script], RawUpstream], glued: str
) -> None:
    """A forged answer, whole or its start, in the same read as the end of a POST's
    answer (its head came earlier, so the session's pool takes the connection back while
    that read is parsed) ends the connection: the next user gets its own answer. Before
    it, a chunked answer ending the same way with nothing after it left the connection
    kept."""
    tail = FORGED if glued == "a whole answer" else FORGED[:HELD]
    answers: list[Answer] = [CHUNKED, (OK[:-5], 0.05, b"hello" + tail), FORGED[HELD:] + OK]
    upstream = raw_upstream(
        lambda connection, request: (answers[request] if connection == 0 else OK, False)
    )
    client = await through_gateway(aiohttp_client, upstream)
    for _ in range(2):
        assert (200, "hello", None, None) == await own_answer(client, "POST")
    await upstream.wait_written(2)
    assert (200, "hello", None, None) == await own_answer(client, "POST")
    assert [2, 1] == upstream.served


@pytest.mark.parametrize("parser", [HttpResponseParser, HttpResponseParserPy], ids=["C", "Python"])
async def test_the_aiohttp_internals_relied_on_are_unchanged(parser: type[Any]) -> None:
    """What proxy/keepalive.py and proxy/persistence.py use of aiohttp's internals is
    there and behaves as they expect (pyproject.toml pins aiohttp to 3.14): a release that
    changes any of it fails here, loudly."""
    from proxy.persistence import GuardedConnector, GuardedResponseHandler, holds_a_message_start

    assert aiohttp.__version__.startswith("3.14.")
    assert b"GET / HTTP/1.1\r\nHost: a\r\n\r\n" == _serialize_headers(
        "GET / HTTP/1.1", CIMultiDict(Host="a")
    )
    assert {"skip_payload", "read_until_eof", "auto_decompress", "read_timeout"} <= set(
        inspect.signature(ResponseHandler.set_response_params).parameters
    )
    assert isinstance(inspect.getattr_static(ResponseHandler, "should_close"), property)
    assert ["self", "key", "traces"] == list(inspect.signature(TCPConnector._get).parameters)
    release = inspect.signature(TCPConnector._release).parameters
    assert ["self", "key", "protocol", "should_close"] == list(release)
    assert inspect.Parameter.KEYWORD_ONLY == release["should_close"].kind
    connector = GuardedConnector()
    assert isinstance(connector._factory(), GuardedResponseHandler)
    await connector.close()
    # Between two messages, what the parser holds is seen by holds_a_message_start.
    loop = asyncio.get_running_loop()
    protocol = ResponseHandler(loop)
    protocol.set_response_params()
    assert HttpResponseParser is vars(client_proto)["HttpResponseParser"]  # what tests switch
    assert isinstance(protocol._parser, HttpResponseParser)
    assert False is protocol._should_close
    state = protocol._parser = parser(protocol, loop, 2**16, response_with_body=True)
    messages, upgraded, tail = state.feed_data(OK)
    assert (1, False, b"", False) == (len(messages), upgraded, tail, holds_a_message_start(state))
    assert (0, True) == (len(state.feed_data(FORGED[:HELD])[0]), holds_a_message_start(state))
