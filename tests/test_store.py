"""The store protocol: one suite, run against the memory store and a real Redis."""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from proxy.errors import StoreUnavailable, TooManyPendingFlows
from proxy.store import MemoryStore, RedisStore, Store, build_store, hashed_key
from tests.support import RedisServer, free_port, sentinel_watching


async def test_claim_once_is_true_only_the_first_time(store: Store) -> None:
    """A key can be claimed once; every later claim within its TTL fails (replay defence)."""
    assert await store.claim_once("jti:a", 10)
    assert not await store.claim_once("jti:a", 10)
    assert await store.claim_once("jti:b", 10)


async def test_claim_expires(store: Store) -> None:
    """After its TTL a claim is forgotten."""
    assert await store.claim_once("jti:short", 0.05)
    await asyncio.sleep(0.12)
    assert await store.claim_once("jti:short", 0.05)


async def test_concurrent_claims_have_one_winner(store: Store) -> None:
    """Twenty concurrent claims of one key: exactly one wins."""
    results = await asyncio.gather(*(store.claim_once("jti:race", 10) for _ in range(20)))
    assert sum(results) == 1


async def test_put_peek_take(store: Store) -> None:
    """peek reads without consuming; take returns the value once, then nothing."""
    await store.put("flow:x", '{"a": 1}', 10)
    assert await store.peek("flow:x") == '{"a": 1}'
    assert await store.peek("flow:x") == '{"a": 1}'
    assert await store.take("flow:x") == '{"a": 1}'
    assert await store.take("flow:x") is None
    assert await store.peek("flow:x") is None


async def test_put_replaces(store: Store) -> None:
    """A second put replaces the value."""
    await store.put("k", "one", 10)
    await store.put("k", "two", 10)
    assert await store.take("k") == "two"


async def test_concurrent_takes_have_one_winner(store: Store) -> None:
    """Twenty concurrent takes of one value: exactly one gets it."""
    await store.put("flow:once", "v", 10)
    results = await asyncio.gather(*(store.take("flow:once") for _ in range(20)))
    assert [r for r in results if r is not None] == ["v"]


async def test_values_expire(store: Store) -> None:
    """A value is gone after its TTL."""
    await store.put("short", "v", 0.05)
    await asyncio.sleep(0.12)
    assert await store.peek("short") is None
    assert await store.take("short") is None


async def test_ping_answers(store: Store) -> None:
    """A reachable store answers ping without raising."""
    await store.ping()


async def test_unicode_values_round_trip(store: Store) -> None:
    """Values are text and come back exactly."""
    value = "état=✓ " + "x" * 5000
    await store.put("u", value, 10)
    assert value == await store.take("u")


async def test_non_positive_ttl_is_refused(store: Store) -> None:
    """A TTL of zero is a programming error, not a silent forever."""
    with pytest.raises(ValueError, match="ttl"):
        await store.put("k", "v", 0)


def test_hashed_key_hides_outside_values() -> None:
    """Keys built from outside values carry a digest, not the values."""
    key = hashed_key("jti", "client", "the-jti")
    assert key.startswith("jti:")
    assert "the-jti" not in key
    assert key != hashed_key("jti", "clien", "tthe-jti")


async def test_memory_store_evicts_expired_entries() -> None:
    """Expired entries leave the memory store; it does not grow without bound."""
    store = MemoryStore(max_entries=10)
    for index in range(10):
        await store.put(f"k{index}", "v", 0.02)
    await asyncio.sleep(0.05)
    await store.put("fresh", "v", 10)
    assert len(store) == 1


async def test_memory_store_full_fails_closed() -> None:
    """A full memory store refuses new entries instead of forgetting replay claims."""
    store = MemoryStore(max_entries=3)
    for index in range(3):
        assert await store.claim_once(f"jti:{index}", 10)
    with pytest.raises(StoreUnavailable):
        await store.claim_once("jti:new", 10)
    assert not await store.claim_once("jti:0", 10)


async def test_redis_keys_are_namespaced(clean_redis: str) -> None:
    """Everything the gateway writes to Redis lives under jargate:, with a TTL but for the
    store's memory marker, which must outlive everything else."""
    store = RedisStore.from_url(clean_redis)
    try:
        await store.put("flow:abc", "v", 30)
        await store.claim_once("jti:x", 30)
    finally:
        await store.close()
    client = redis.Redis.from_url(clean_redis)
    keys = sorted(k.decode() for k in client.keys("*"))  # type: ignore[union-attr]
    assert keys == ["jargate:flow:abc", "jargate:jti:x", "jargate:since"]
    assert 0 < client.pttl("jargate:flow:abc") <= 30000
    assert -1 == client.pttl("jargate:since")
    client.close()


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A Redis of the test's own: its connections are only the test's."""
    server = RedisServer().start()
    yield server
    server.stop()


def _our_connections(client: redis.Redis) -> int:
    """Clients connected to this Redis other than ``client`` itself."""
    return len(client.client_list()) - 1


async def test_redis_connections_are_kept_and_replies_never_cross(own_redis: RedisServer) -> None:
    """Commands go out on connections the store keeps: sequential operations use one
    connection, and every reply reaches the command that asked for it (200 concurrent
    takes of 200 distinct values)."""
    store = RedisStore.from_url(own_redis.url)
    client = redis.Redis.from_url(own_redis.url)
    try:
        for index in range(50):
            await store.put(f"seq:{index}", str(index), 30)
            assert await store.take(f"seq:{index}") == str(index)
        assert _our_connections(client) == 1
        await asyncio.gather(*(store.put(f"c:{i}", f"value-{i}", 30) for i in range(200)))
        taken = await asyncio.gather(*(store.take(f"c:{i}") for i in range(200)))
        assert taken == [f"value-{i}" for i in range(200)]
        assert 1 <= _our_connections(client) <= 100  # redis-py's default max_connections
    finally:
        await store.close()
        client.close()


async def test_redis_commands_beyond_max_connections_wait_for_one(own_redis: RedisServer) -> None:
    """More concurrent commands than ``max_connections`` wait for a connection to come
    back (they used to fail with 503): 300 claims on 4 connections all answer right."""
    store = RedisStore.from_url(own_redis.url + "?max_connections=4")
    client = redis.Redis.from_url(own_redis.url)
    try:
        first = await asyncio.gather(*(store.claim_once(f"jti:w{i}", 30) for i in range(300)))
        again = await asyncio.gather(*(store.claim_once(f"jti:w{i}", 30) for i in range(0, 300, 3)))
        assert all(first)
        assert not any(again)
        assert _our_connections(client) <= 4
    finally:
        await store.close()
        client.close()


async def test_redis_connection_closed_while_idle_is_replaced(own_redis: RedisServer) -> None:
    """The server drops the store's idle connection (a restart, an idle timeout, CLIENT
    KILL): the next command is sent again once on a new connection and succeeds."""
    store = RedisStore.from_url(own_redis.url)
    client = redis.Redis.from_url(own_redis.url)
    try:
        assert await store.claim_once("jti:before-kill", 30)
        killed = client.client_kill_filter(_type="normal", skipme=True)
        assert killed == 1
        assert await store.claim_once("jti:after-kill", 30)
        assert not await store.claim_once("jti:before-kill", 30)
    finally:
        await store.close()
        client.close()


async def test_redis_error_reply_fails_closed_and_drops_the_connection(
    own_redis: RedisServer,
) -> None:
    """An error reply (here WRONGTYPE: the key holds a list) is StoreUnavailable; the
    connection it came on is closed, and the next commands read their own replies."""
    store = RedisStore.from_url(own_redis.url)
    client = redis.Redis.from_url(own_redis.url)
    try:
        await store.put("flow:ok", "v", 30)
        before = {entry["id"] for entry in client.client_list()}
        client.lpush("jargate:flow:list", "x")
        with pytest.raises(StoreUnavailable):
            await store.take("flow:list")
        assert await store.peek("flow:ok") == "v"
        deadline = time.monotonic() + 2  # the server sees the close when it sees it
        while len(before - {entry["id"] for entry in client.client_list()}) != 1:
            assert time.monotonic() < deadline, "the connection that saw the error is closed"
            await asyncio.sleep(0.01)
        assert await store.take("flow:ok") == "v"
    finally:
        await store.close()
        client.close()


@pytest.mark.slow
async def test_redis_going_away_fails_closed_then_recovers() -> None:
    """Redis stopped: every operation raises StoreUnavailable; restarted: the same store works."""
    server = RedisServer().start()
    store = RedisStore.from_url(server.url)
    try:
        assert await store.claim_once("jti:before", 60)
        server.stop()
        for operation in (
            store.claim_once("jti:during", 60),
            store.put("k", "v", 60),
            store.take("k"),
            store.peek("k"),
            store.ping(),
        ):
            with pytest.raises(StoreUnavailable):
                await operation
        server.start()
        deadline = time.monotonic() + 5
        while True:
            try:
                await store.ping()
                break
            except StoreUnavailable:
                assert time.monotonic() < deadline, "did not recover within 5 s"
                await asyncio.sleep(0.1)
        assert await store.claim_once("jti:after", 60)
    finally:
        await store.close()
        server.stop()


async def test_unreachable_redis_fails_fast() -> None:
    """A Redis that never answers raises StoreUnavailable within the bounded timeout."""
    store = build_store(f"redis://127.0.0.1:{free_port()}/0")
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        await store.claim_once("x", 10)
    await store.close()
    assert time.monotonic() - started < 5


@pytest.mark.slow
async def test_sentinel_url(tmp_path: Path) -> None:
    """redis+sentinel://host:port/service finds the master through a real Sentinel, and
    opens at most ``?max_connections=`` connections to it."""
    master = RedisServer().start()
    with sentinel_watching(master, tmp_path) as sentinel_port:
        store = RedisStore.from_url(
            f"redis+sentinel://127.0.0.1:{sentinel_port}/jargate?max_connections=2"
        )
        client = master.client()
        try:
            await asyncio.gather(*(store.put(f"through-sentinel-{i}", "v", 30) for i in range(20)))
            ours = [
                entry
                for entry in client.client_list()
                if not entry.get("name", "").startswith("sentinel")
            ]
            assert len(ours) - 1 <= 2, "max_connections from the Sentinel URL holds"
        finally:
            await store.close()
        assert client.get("jargate:through-sentinel-19") == b"v"
        client.close()


def _cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too."""
    for _ in range(100):
        port = free_port()
        if port <= 55535 and _is_free(port + 10000):
            return port
    raise RuntimeError("no port pair for a cluster node")


def _is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@pytest.mark.slow
async def test_cluster_url() -> None:
    """redis+cluster://host:port talks to a (one-node) Redis Cluster, unverified put_many
    (its source's counter in the same pipeline) included."""
    node = RedisServer(port=_cluster_port(), extra=["--cluster-enabled", "yes"]).start()
    try:
        client = node.client()
        client.execute_command("CLUSTER ADDSLOTS", *range(16384))  # type: ignore[no-untyped-call]
        deadline = time.monotonic() + 10
        while client.execute_command("CLUSTER INFO").get("cluster_state") not in (  # type: ignore[no-untyped-call]
            "ok",
            b"ok",
        ):
            assert time.monotonic() < deadline, "cluster did not come up"
            await asyncio.sleep(0.1)
        client.close()
        store = RedisStore.from_url(f"redis+cluster://127.0.0.1:{node.port}")
        try:
            assert await store.claim_once("jti:c", 30)
            assert not await store.claim_once("jti:c", 30)
            await store.put("flow:c", "v", 30)
            assert await store.take("flow:c") == "v"
            await store.put_many([("flow:u", "v", 30)], unverified_source="192.0.2.9")
            assert await store.take("flow:u") == "v"
            await store.ping()
        finally:
            await store.close()
    finally:
        node.stop()


async def test_put_many_stores_every_entry_with_its_own_ttl(store: Store) -> None:
    """One round trip, several entries; each expires on its own."""
    await store.put_many([("flow:pm1", "v1", 0.2), ("par:pm2", "v2", 10)])
    assert "v1" == await store.peek("flow:pm1")
    assert "v2" == await store.peek("par:pm2")
    await asyncio.sleep(0.3)
    assert await store.peek("flow:pm1") is None
    assert "v2" == await store.take("par:pm2")


#: What an unauthenticated caller may have kept per source (the setting's default).
PER_SOURCE = 256


async def fill(store: Store, source: str, count: int) -> list[str]:
    """``count`` unverified flows from ``source``, one put_many each; their keys."""
    keys = [f"flow:{source}:{index}" for index in range(count)]
    for key in keys:
        await store.put_many([(key, "pending", 60)], unverified_source=source)
    return keys


async def test_unverified_flood_from_one_source_is_refused_past_its_bound(store: Store) -> None:
    """One source keeps at most 256 unverified flows: the next is refused with 503
    temporarily_unavailable and not kept; another source is not affected."""
    kept = await fill(store, "198.51.100.7", PER_SOURCE)
    with pytest.raises(TooManyPendingFlows) as refused:
        await store.put_many([("flow:one-too-many", "v", 60)], unverified_source="198.51.100.7")
    assert ("temporarily_unavailable", 503) == (refused.value.error, refused.value.status)
    assert re.fullmatch(r"[\x20-\x21\x23-\x5b\x5d-\x7e]+", refused.value.description)
    assert await store.peek("flow:one-too-many") is None
    assert "pending" == await store.peek(kept[-1])
    await store.put_many([("flow:other", "v", 60)], unverified_source="198.51.100.8")
    assert "v" == await store.peek("flow:other")


async def test_verified_state_never_refused_while_unverified_is_at_its_cap(store: Store) -> None:
    """A source at its cap of unverified flows: claims, puts and verified put_many all
    succeed as before."""
    await fill(store, "2001:db8:1::/64", PER_SOURCE)
    with pytest.raises(TooManyPendingFlows):
        await fill(store, "2001:db8:1::/64", 1)
    assert await store.claim_once("jti:verified", 60)
    assert not await store.claim_once("jti:verified", 60)
    await store.put("par:verified", "pushed", 60)
    await store.put_many([("flow:verified", "signed", 60), ("par:mark", "m", 60)])
    assert ["pushed", "signed", "m"] == [
        await store.take(key) for key in ("par:verified", "flow:verified", "par:mark")
    ]


async def test_expired_unverified_entries_free_their_source(store: Store) -> None:
    """Once a source's unverified flows have expired (Redis: their window), it may keep
    as many again."""
    entries = [(f"flow:short:{index}", "v", 0.3) for index in range(PER_SOURCE)]
    await store.put_many(entries, unverified_source="192.0.2.1")  # one round trip: in time
    with pytest.raises(TooManyPendingFlows):
        await fill(store, "192.0.2.1", 1)
    await asyncio.sleep(0.4)
    assert PER_SOURCE == len(await fill(store, "192.0.2.1", PER_SOURCE))


async def test_memory_store_taken_unverified_entry_frees_its_slot() -> None:
    """In memory, a completed (taken) flow frees its source's slot at once."""
    store = MemoryStore()
    keys = await fill(store, "192.0.2.2", PER_SOURCE)
    assert "pending" == await store.take(keys[0])
    await store.put_many([("flow:next", "v", 60)], unverified_source="192.0.2.2")
    with pytest.raises(TooManyPendingFlows):
        await store.put_many([("flow:after", "v", 60)], unverified_source="192.0.2.2")


async def test_memory_store_unverified_flood_from_many_sources_evicts_only_its_own() -> None:
    """Unverified flows from many sources fill only their own budget (half of
    max_entries), the oldest leaving first; verified state keeps all of max_entries."""
    store = MemoryStore(max_entries=6)
    for index in range(8):
        await store.put_many([(f"flow:{index}", "v", 60)], unverified_source=f"10.0.0.{index}")
    assert [None] * 5 + ["v"] * 3 == [await store.peek(f"flow:{index}") for index in range(8)]
    assert all([await store.claim_once(f"jti:{index}", 60) for index in range(6)])
    with pytest.raises(StoreUnavailable):
        await store.claim_once("jti:seventh", 60)
    await store.put_many([("flow:8", "v", 60)], unverified_source="10.0.0.8")
    assert [None, "v", "v", "v"] == [await store.peek(f"flow:{index}") for index in range(5, 9)]
    assert not await store.claim_once("jti:0", 60)


async def test_build_store_takes_the_per_address_bound(clean_redis: str) -> None:
    """JARGATE_MAX_PENDING_PLAIN_FLOWS_PER_ADDRESS's value bounds either store built."""
    for built in (build_store(None, 1), build_store(clean_redis, 1)):
        await built.put_many([("flow:s1", "v", 30)], unverified_source="s")
        with pytest.raises(TooManyPendingFlows):
            await built.put_many([("flow:s2", "v", 30)], unverified_source="s")
        await built.close()
