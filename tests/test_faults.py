"""Faults: the store or the upstream going away. The gateway fails closed, stays bounded,
and recovers by itself. Load loops here are bounded in count and time, on loopback."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from aiohttp import ClientPayloadError, ClientResponse, web
from aiohttp.test_utils import TestClient

from proxy.app import create_app
from proxy.codes import SEALED_PREFIX
from proxy.errors import StoreUnavailable
from proxy.keyring import Keyring
from proxy.store import RedisStore
from tests.conftest import AiohttpClient, AiohttpServer, Legacy
from tests.jar import REDIRECT, Claims, client_registry, sign
from tests.support import RedisServer, free_port, make_settings

pytestmark = pytest.mark.slow


@pytest.fixture
async def paused_redis() -> AsyncIterator[RedisServer]:
    """A Redis of our own that tests may freeze (SIGSTOP) and thaw (SIGCONT)."""
    server = RedisServer().start()
    try:
        yield server
    finally:
        if server.process is not None:
            server.process.send_signal(signal.SIGCONT)
        server.stop()


def freeze(server: RedisServer, frozen: bool) -> None:
    assert server.process is not None
    server.process.send_signal(signal.SIGSTOP if frozen else signal.SIGCONT)


async def gateway_on(
    aiohttp_client: AiohttpClient, legacy: Legacy, redis_url: str
) -> TestClient[Any, Any]:
    settings = make_settings(legacy.url)
    app = create_app(
        settings,
        registry=client_registry(),
        keyring=Keyring.throwaway(),
        store=RedisStore.from_url(redis_url),
    )
    return await aiohttp_client(app)


async def wait_ready(client: TestClient[Any, Any], ready: bool, within: float = 15) -> None:
    deadline = time.monotonic() + within
    while True:
        status = (await client.get("/readyz")).status
        if (status == 200) == ready:
            return
        assert time.monotonic() < deadline, f"readiness did not become {ready}"
        await asyncio.sleep(0.1)


async def test_hung_store_operation_fails_closed_at_its_deadline_and_no_late_reply_is_misread(
    paused_redis: RedisServer,
) -> None:
    """Redis frozen mid-command: each operation raises StoreUnavailable at the store's
    deadline; once Redis answers again the next command reads its own reply, not the
    late one of a command that timed out (the timed-out connection is dropped)."""
    store = RedisStore.from_url(paused_redis.url, timeout=0.5)
    try:
        await store.put("a", "value of a", 60)
        await store.put("b", "value of b", 60)
        freeze(paused_redis, True)
        try:
            for operation in (
                lambda: store.take("a"),
                lambda: store.claim_once("jti:hung", 60),
                store.ping,
            ):
                started = time.monotonic()
                with pytest.raises(StoreUnavailable):
                    await asyncio.wait_for(operation(), 5)  # a hang fails the test, not blocks
                assert time.monotonic() - started < 2.5
        finally:
            freeze(paused_redis, False)
        assert await store.peek("b") == "value of b"
        assert await store.claim_once("jti:after", 60)
    finally:
        await store.close()


async def test_store_frozen_under_load_fails_closed_and_recovers(
    aiohttp_client: AiohttpClient, legacy: Legacy, paused_redis: RedisServer
) -> None:
    """Redis frozen mid-load: every request is answered (302 accepted or 503), readiness goes
    red, and after it thaws everything recovers; every accepted object stays claimed."""
    client = await gateway_on(aiohttp_client, legacy, paused_redis.url)
    objects = [sign(Claims().build(), "ES256") for _ in range(40)]
    outcomes: dict[str, int] = {}
    accepted: list[str] = []
    semaphore = asyncio.Semaphore(4)

    async def one(token: str) -> None:
        async with semaphore:
            response = await client.get(
                "/authorize", params={"client_id": "app", "request": token}, allow_redirects=False
            )
            kind = str(response.status)
            if response.status == 302:
                assert "code" in parse_qs(urlsplit(response.headers["Location"]).query)
                accepted.append(token)
            else:
                assert 503 == response.status
                assert "temporarily_unavailable" == (await response.json())["error"]
                assert "Location" not in response.headers  # answered here, not redirected
            outcomes[kind] = outcomes.get(kind, 0) + 1

    first = asyncio.gather(*(one(token) for token in objects[:20]))
    await first
    freeze(paused_redis, True)
    try:
        during = asyncio.gather(*(one(token) for token in objects[20:30]))
        await asyncio.wait_for(during, timeout=60)
        assert 503 == (await client.get("/readyz")).status
    finally:
        freeze(paused_redis, False)
    await wait_ready(client, True)
    await asyncio.wait_for(asyncio.gather(*(one(token) for token in objects[30:])), timeout=60)
    assert outcomes.get("503", 0) >= 10  # everything during the freeze failed closed
    assert outcomes.get("302", 0) >= 20
    # The upstream saw exactly the accepted requests: nothing of those that failed closed.
    assert len(accepted) == len([p for p in legacy.recorder.paths() if p.startswith("/authorize")])
    legacy.recorder.requests.clear()
    for token in accepted:
        replay = await client.get(
            "/authorize", params={"client_id": "app", "request": token}, allow_redirects=False
        )
        assert (
            "replay" in parse_qs(urlsplit(replay.headers["Location"]).query)["error_description"][0]
        )
    assert [] == legacy.recorder.requests


async def plain_request_while_frozen(
    aiohttp_client: AiohttpClient, legacy: Legacy, paused_redis: RedisServer, **extra: str
) -> ClientResponse:
    """A plain authorization request from a registered client, the store frozen."""
    client = await gateway_on(aiohttp_client, legacy, paused_redis.url)
    params = {"client_id": "plain", "response_type": "code", "redirect_uri": REDIRECT, **extra}
    freeze(paused_redis, True)
    try:
        return await asyncio.wait_for(
            client.get("/authorize", params=params, allow_redirects=False), timeout=30
        )
    finally:
        freeze(paused_redis, False)


async def test_flow_that_must_wait_but_cannot_be_stored_is_not_relayed(
    aiohttp_client: AiohttpClient, legacy: Legacy, paused_redis: RedisServer
) -> None:
    """The upstream sends the browser to its login page, so the flow must wait in the
    store; the store is frozen: 503 from the gateway, and the login redirect (carrying the
    handle of a flow nobody could complete) is not passed on. The upstream was asked once:
    the gateway learns that the flow must wait only from its answer."""
    response = await plain_request_while_frozen(
        aiohttp_client, legacy, paused_redis, prompt="login"
    )
    assert 503 == response.status
    assert "temporarily_unavailable" == (await response.json())["error"]
    assert "Location" not in response.headers
    assert 1 == len(legacy.recorder.requests)


async def test_flow_completed_at_once_needs_no_store(
    aiohttp_client: AiohttpClient, legacy: Legacy, paused_redis: RedisServer
) -> None:
    """A plain request the upstream answers with its redirect back completes from memory,
    and its code goes to the client sealed: nothing is written, so a frozen store does not
    hold it up (redeeming it will need the store)."""
    response = await plain_request_while_frozen(aiohttp_client, legacy, paused_redis, state="mine")
    assert 302 == response.status, await response.text()
    query = parse_qs(urlsplit(response.headers["Location"]).query)
    assert ["mine"] == query["state"]
    assert query["code"][0].startswith(SEALED_PREFIX)
    assert 1 == len(legacy.recorder.requests)


async def test_store_restart_recovers_without_gateway_restart(
    aiohttp_client: AiohttpClient, legacy: Legacy
) -> None:
    """Redis stopped and started again: readiness red, then green, no gateway restart."""
    server = RedisServer().start()
    try:
        client = await gateway_on(aiohttp_client, legacy, server.url)
        await wait_ready(client, True)
        server.stop()
        await wait_ready(client, False)
        server.start()
        await wait_ready(client, True)
        token = sign(Claims().build(), "ES256")
        response = await client.get(
            "/authorize", params={"client_id": "app", "request": token}, allow_redirects=False
        )
        assert 302 == response.status
    finally:
        server.stop()


class FaultyUpstream:
    """A TCP server on loopback that resets or stalls every connection."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.server: asyncio.Server | None = None
        self.connections: list[asyncio.StreamWriter] = []

    async def start(self, port: int) -> None:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections.append(writer)
            await reader.readline()
            if self.mode == "reset":
                writer.transport.abort()

        self.server = await asyncio.start_server(handle, "127.0.0.1", port)

    async def stop(self) -> None:
        assert self.server is not None
        for writer in self.connections:
            writer.transport.abort()
        self.server.close()
        await self.server.wait_closed()


@pytest.mark.parametrize(("mode", "status"), [("refuse", 502), ("reset", 502), ("stall", 504)])
async def test_upstream_faults_are_bounded_and_recover(
    aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer, mode: str, status: int
) -> None:
    """Refused, reset or stalled upstream: 502/504 within the bounds; then it comes back."""
    port = free_port()
    faulty = FaultyUpstream(mode)
    if mode != "refuse":
        await faulty.start(port)
    settings = make_settings(f"http://127.0.0.1:{port}", upstream_read_timeout_seconds=0.5)
    client = await aiohttp_client(create_app(settings, keyring=Keyring.throwaway()))
    response = await asyncio.wait_for(client.get("/some/page"), timeout=10)
    assert status == response.status
    assert "temporarily_unavailable" == (await response.json())["error"]
    if mode != "refuse":
        await faulty.stop()

    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="back")

    healthy = web.Application()
    healthy.router.add_get("/{tail:.*}", ok)
    await aiohttp_server(healthy, port=port)
    recovered = await client.get("/some/page")
    assert (200, "back") == (recovered.status, await recovered.text())


async def slow_upstream(aiohttp_server: AiohttpServer) -> str:
    """An upstream that takes its time: a body that trickles steadily, one that stops
    halfway (streamed, and with a known short length)."""

    async def steady(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(0.3)  # the answer itself: slow, within the timeout
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for index in range(6):  # 1.2 s in all, never 0.5 s without bytes
            await response.write(b"chunk %d;" % index)
            await asyncio.sleep(0.2)
        await response.write_eof()
        return response

    async def stops(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        if request.match_info["kind"] == "short":
            response.content_length = 100
        else:
            response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(b"the first bytes;")
        await asyncio.sleep(5)
        return response

    app = web.Application()
    app.router.add_get("/steady", steady)
    app.router.add_get("/stops/{kind}", stops)
    server = await aiohttp_server(app)
    return str(server.make_url("")).rstrip("/")


async def test_read_timeout_is_between_bytes_not_for_the_whole_answer(
    aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer
) -> None:
    """JARGATE_UPSTREAM_READ_TIMEOUT_SECONDS bounds each wait for the upstream's next
    bytes: an answer that keeps coming, for longer than the timeout in all, is relayed
    whole; one that stops is cut off one timeout later."""
    settings = make_settings(await slow_upstream(aiohttp_server), upstream_read_timeout_seconds=0.5)
    client = await aiohttp_client(create_app(settings, keyring=Keyring.throwaway()))

    started = time.monotonic()
    steady = await client.get("/steady")
    assert 200 == steady.status
    assert b"".join(b"chunk %d;" % i for i in range(6)) == await steady.read()
    assert time.monotonic() - started > 1.2

    # A short body announced by Content-Length: the gateway reads it whole before it
    # answers, so the stall becomes the gateway's own 504.
    started = time.monotonic()
    short = await asyncio.wait_for(client.get("/stops/short"), timeout=10)
    assert 504 == short.status
    assert "temporarily_unavailable" == (await short.json())["error"]
    assert time.monotonic() - started < 3

    # A streamed body: its start is already on the way to the client, so the only honest
    # signal left is a cut connection (a truncated body, never one that looks complete).
    started = time.monotonic()
    streamed = await asyncio.wait_for(client.get("/stops/streamed"), timeout=10)
    assert 200 == streamed.status
    with pytest.raises(ClientPayloadError):
        await asyncio.wait_for(streamed.read(), timeout=10)
    assert time.monotonic() - started < 3
