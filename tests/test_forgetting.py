"""What the store forgets and what anyone can make it keep, seen at the gateway's endpoints.

A Redis restarted empty forgets every replay record: a JWT made before then is refused, as a
replay would be, for one lifetime. Plain flows (anyone can start them) are bounded per
address, and never lock out signed ones.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

from proxy.app import create_app
from proxy.store import MemoryStore, RedisStore, Store
from tests.conftest import AiohttpClient, Legacy
from tests.jar import DROP, Claims, client_registry, sign
from tests.support import RedisServer, make_settings


@pytest.fixture
async def own_redis() -> AsyncIterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.stop()


async def gateway(
    aiohttp_client: AiohttpClient, legacy: Legacy, store: Store, **settings: Any
) -> TestClient[Any, Any]:
    from proxy.keyring import Keyring

    app = create_app(
        make_settings(legacy.url, **settings),
        registry=client_registry(),
        keyring=Keyring.throwaway(),
        store=store,
    )
    return await aiohttp_client(app)


async def authorize(client: TestClient[Any, Any], **params: str) -> ClientResponse:
    return await client.get("/authorize", params=params, allow_redirects=False)


async def test_object_used_before_a_redis_restart_is_refused_after_it(
    aiohttp_client: AiohttpClient, legacy: Legacy, own_redis: RedisServer
) -> None:
    """An object accepted, then Redis restarted empty (no persistence): the same object is
    refused, though its jti record is gone; one made after the restart is accepted, one
    without iat or nbf is refused for a lifetime."""
    marker = own_redis.client()
    marker.set("jargate:since", repr(time.time() - 86400))  # a Redis that remembered a day
    marker.close()
    store = RedisStore.from_url(own_redis.url)
    client = await gateway(aiohttp_client, legacy, store)
    # NumericDates are whole seconds: made two seconds before the restart.
    used = sign(Claims().build(iat=int(time.time()) - 2), "ES256")
    assert 302 == (await authorize(client, client_id="app", request=used)).status
    own_redis.stop()
    own_redis.start()
    legacy.recorder.requests.clear()
    again = await authorize(client, client_id="app", request=used)
    assert 302 == again.status
    assert "invalid_request_object" in again.headers["Location"]
    assert "lost+its+replay+records" in again.headers["Location"]
    assert [] == legacy.recorder.requests
    fresh = sign(Claims().build(), "ES256")
    assert "code=" in (await authorize(client, client_id="app", request=fresh)).headers["Location"]
    undated = sign(Claims().build(iat=DROP, nbf=DROP), "ES256")
    response = await authorize(client, client_id="app", request=undated)
    assert "invalid_request_object" in response.headers["Location"]
    await store.close()


async def test_memory_store_remembers_only_from_its_start(
    aiohttp_client: AiohttpClient, legacy: Legacy
) -> None:
    """A gateway with the memory store (one replica restarted) refuses an object made
    before it started: it cannot know whether it was used."""
    store = MemoryStore()
    made_before = sign(Claims().build(iat=int(store.memory_since) - 2), "ES256")
    client = await gateway(aiohttp_client, legacy, store)
    response = await authorize(client, client_id="app", request=made_before)
    assert "invalid_request_object" in response.headers["Location"]
    assert [] == legacy.recorder.requests


async def wait_at_login(client: TestClient[Any, Any], **headers: str) -> ClientResponse:
    return await client.get(
        "/authorize",
        params={
            "client_id": "plain",
            "response_type": "code",
            "redirect_uri": "https://rp.example/cb",
            "prompt": "login",
        },
        headers=headers,
        allow_redirects=False,
    )


@pytest.mark.parametrize("kind", ["memory", "redis"])
async def test_plain_flows_are_bounded_per_address_and_never_lock_out_signed_ones(
    aiohttp_client: AiohttpClient, legacy: Legacy, own_redis: RedisServer, kind: str
) -> None:
    """One address may keep only so many plain flows waiting at a login page (503 past it,
    nothing relayed); signed requests and other addresses are unaffected."""
    store: Store = (
        MemoryStore(max_pending_per_source=3)
        if kind == "memory"
        else RedisStore.from_url(own_redis.url, max_pending_per_source=3)
    )
    client = await gateway(
        aiohttp_client,
        legacy,
        store,
        trusted_proxies="127.0.0.0/8",
    )
    for _ in range(3):
        assert (await wait_at_login(client)).headers["Location"].startswith("/login")
    refused = await wait_at_login(client)
    body = await refused.json()
    assert (503, "temporarily_unavailable") == (refused.status, body["error"])
    assert "Location" not in refused.headers
    signed = sign(Claims().build(prompt="login"), "ES256")
    waiting = await authorize(client, client_id="app", request=signed)
    assert waiting.headers["Location"].startswith("/login")
    other = await wait_at_login(client, **{"X-Forwarded-For": "203.0.113.9"})
    assert other.headers["Location"].startswith("/login")
    if isinstance(store, RedisStore):
        await store.close()
