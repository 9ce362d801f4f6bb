"""The store's memory: from when on it is known to remember every claim (``memory_since``),
learnt from a marker in Redis no later than the first claim made against a server that
restarted empty, and counted."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.crc import key_slot

from proxy.errors import StoreUnavailable
from proxy.observability import Metrics, metrics_app
from proxy.redis_connections import master_marker
from proxy.store import MemoryStore, RedisStore
from tests.conftest import AiohttpClient, GatewayFactory
from tests.support import RedisServer, sentinel_watching
from tests.test_store import _cluster_port

MARKER = "jargate:since"


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A Redis of the test's own, which the test may restart empty."""
    server = RedisServer().start()
    yield server
    server.stop()


def restart_empty(server: RedisServer) -> float:
    """Stop and start ``server`` (no persistence: it comes back empty); the time between."""
    server.stop()
    between = time.time()
    server.start()
    return between


def marker(server: RedisServer, key: str = MARKER) -> float:
    client = server.client()
    try:
        value = client.get(key)
    finally:
        client.close()
    assert value is not None, f"{key} is written"
    return float(value)


def test_memory_store_remembers_from_its_creation() -> None:
    """A memory store knows nothing from before it was made: memory_since is its creation."""
    before = time.time()
    store = MemoryStore()
    after = time.time()
    assert before <= store.memory_since <= after
    assert 0 == store.memory_resets


async def test_first_contact_writes_the_marker_logs_and_counts_it(
    own_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """An empty Redis: the first command writes jargate:since (never expiring) with the
    time, memory_since is that value, one reset is counted and a warning logged."""
    store = RedisStore.from_url(own_redis.url)
    before = time.time()
    try:
        with caplog.at_level(logging.WARNING, logger="jargate.store"):
            await store.ping()
        assert marker(own_redis) == store.memory_since
        assert before <= store.memory_since <= time.time()
        assert 1 == store.memory_resets
        assert ["the store's memory begins now"] == [
            r.getMessage()[:29] for r in caplog.records if r.name == "jargate.store"
        ]
        assert await store.claim_once("jti:a", 30)
        assert 1 == store.memory_resets  # a kept connection does not check again
    finally:
        await store.close()


async def test_memory_since_moves_forward_when_the_first_claim_after_a_restart_answers(
    own_redis: RedisServer,
) -> None:
    """Redis restarted empty: the first claim made against it (which it accepts again,
    having forgotten it) returns only once memory_since is past the restart."""
    store = RedisStore.from_url(own_redis.url)
    try:
        assert await store.claim_once("jti:before", 60)
        first = store.memory_since
        between = restart_empty(own_redis)
        accepted = await store.claim_once("jti:before", 60)
        since_at_answer = store.memory_since
        assert accepted  # the reset server forgot the claim: the reason for memory_since
        assert first < between <= since_at_answer
        assert marker(own_redis) == since_at_answer
        assert 2 == store.memory_resets
    finally:
        await store.close()


async def test_restart_is_detected_with_many_connections_kept(own_redis: RedisServer) -> None:
    """Several connections kept idle, Redis restarted empty: every claim after it, each on
    whichever connection it gets, answers only once memory_since is past the restart; the
    first one answers at all (its retry does not take another dead connection)."""
    store = RedisStore.from_url(own_redis.url)
    client = own_redis.client()
    try:
        assert all(await asyncio.gather(*(store.claim_once(f"jti:{i}", 60) for i in range(30))))
        kept = len(client.client_list()) - 1
        assert kept >= 2, "the store keeps several connections"
        client.close()
        between = restart_empty(own_redis)

        async def claim(index: int) -> tuple[bool, float]:
            accepted = await store.claim_once(f"jti:{index}", 60)
            return accepted, store.memory_since

        answers = [await claim(0), *await asyncio.gather(*(claim(i) for i in range(1, 30)))]
        assert [True] * 30 == [accepted for accepted, _ in answers]
        assert all(since >= between for _, since in answers)
        assert marker(own_redis) == store.memory_since
    finally:
        client.close()
        await store.close()


async def test_stores_sharing_one_redis_agree(own_redis: RedisServer) -> None:
    """Three stores (three replicas) on one Redis: one marker, one value of memory_since,
    one reset counted among them at first start and one after a restart."""
    stores = [RedisStore.from_url(own_redis.url) for _ in range(3)]
    try:
        await asyncio.gather(*(store.ping() for store in stores))
        assert [marker(own_redis)] * 3 == [store.memory_since for store in stores]
        assert 1 == sum(store.memory_resets for store in stores)
        restart_empty(own_redis)
        for store in stores:
            assert await store.claim_once("jti:shared-after", 60) is (store is stores[0])
        assert [marker(own_redis)] * 3 == [store.memory_since for store in stores]
        assert 2 == sum(store.memory_resets for store in stores)
    finally:
        for store in stores:
            await store.close()


async def test_a_marker_that_is_not_a_time_fails_closed(own_redis: RedisServer) -> None:
    """Something else wrote jargate:since: the store cannot know its memory and refuses
    (StoreUnavailable), and the claim is not trusted."""
    client = own_redis.client()
    client.set(MARKER, "yesterday")
    client.close()
    store = RedisStore.from_url(own_redis.url)
    try:
        with pytest.raises(StoreUnavailable):
            await store.claim_once("jti:x", 60)
    finally:
        await store.close()


async def test_gateway_learns_the_memory_at_start_and_counts_resets(
    gateway: GatewayFactory, aiohttp_client: AiohttpClient, own_redis: RedisServer
) -> None:
    """The gateway reaches its store once at start: the marker is there before the first
    request, and jargate_store_resets_total counts it (0 for the memory store)."""
    metrics = Metrics()
    await gateway(store=RedisStore.from_url(own_redis.url), metrics=metrics)
    assert marker(own_redis) > 0
    scrape = await (await aiohttp_client(metrics_app(metrics))).get("/metrics")
    assert "jargate_store_resets_total 1.0" in (await scrape.text()).splitlines()
    in_memory = Metrics()
    await gateway(metrics=in_memory)
    scrape = await (await aiohttp_client(metrics_app(in_memory))).get("/metrics")
    assert "jargate_store_resets_total 0.0" in (await scrape.text()).splitlines()


def test_cluster_marker_is_in_a_slot_the_master_serves() -> None:
    """CLUSTER NODES of a master: its marker key hashes into one of its own slots (not one
    being migrated); a replica has none."""
    nodes = (
        "a1 127.0.0.1:7000@17000 master - 0 0 1 connected 0-5460\n"
        "b2 127.0.0.1:7001@17001 myself,master - 0 0 2 connected 5461 9000-10922"
        " [5462->-a1]\n"
        "c3 127.0.0.1:7002@17002 slave a1 0 0 1 connected\n"
    )
    key = master_marker(nodes)
    assert key is not None
    assert key.startswith(MARKER + ":{")
    slot = key_slot(key.encode())
    assert slot == 5461 or 9000 <= slot <= 10922
    assert (
        master_marker(nodes.replace("myself,master", "master").replace("slave", "myself,slave"))
        is None
    )


@pytest.mark.slow
async def test_sentinel_master_restarted_empty_is_detected(tmp_path: Path) -> None:
    """Through Sentinel: the master restarted empty at its address, the next claim answers
    once memory_since is past the restart."""
    master = RedisServer().start()
    with sentinel_watching(master, tmp_path) as sentinel_port:
        store = RedisStore.from_url(f"redis+sentinel://127.0.0.1:{sentinel_port}/jargate")
        try:
            assert await store.claim_once("jti:s", 60)
            between = restart_empty(master)
            assert await store.claim_once("jti:s", 60)
            assert between <= store.memory_since == marker(master)
        finally:
            await store.close()


async def _cluster_ready(node: RedisServer) -> None:
    client = node.client()
    try:
        deadline = time.monotonic() + 10
        while client.execute_command("CLUSTER INFO").get("cluster_state") not in ("ok", b"ok"):  # type: ignore[no-untyped-call]
            assert time.monotonic() < deadline, "cluster did not come up"
            await asyncio.sleep(0.1)
    finally:
        client.close()


@pytest.mark.slow
async def test_cluster_node_restarted_empty_is_detected() -> None:
    """A Cluster: each master keeps its own marker, checked on every new connection to it;
    the node restarted empty (keeping its slots), the next claim answers once
    memory_since is past the restart."""
    node = RedisServer(port=_cluster_port(), extra=["--cluster-enabled", "yes"]).start()
    try:
        client = node.client()
        client.execute_command("CLUSTER ADDSLOTS", *range(16384))  # type: ignore[no-untyped-call]
        client.close()
        await _cluster_ready(node)
        store = RedisStore.from_url(f"redis+cluster://127.0.0.1:{node.port}")
        try:
            assert await store.claim_once("jti:c", 60)
            client = node.client()
            (key,) = [k.decode() for k in client.keys(MARKER + ":*")]  # type: ignore[union-attr]
            client.close()
            assert marker(node, key) == store.memory_since
            between = restart_empty(node)
            await _cluster_ready(node)
            deadline = time.monotonic() + 10
            while True:
                try:
                    accepted = await store.claim_once("jti:c", 60)
                    break
                except StoreUnavailable:  # the client finds the node again in its own time
                    assert time.monotonic() < deadline, "the cluster client did not recover"
                    await asyncio.sleep(0.2)
            assert accepted
            assert between <= store.memory_since == marker(node, key)
        finally:
            await store.close()
    finally:
        node.stop()
