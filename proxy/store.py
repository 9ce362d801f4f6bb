"""The store: replay claims, pushed and fetched request objects, flows in flight.

One small :class:`Store` protocol with two implementations that pass the same tests:

- :class:`MemoryStore`, in-process, TTL-aware and bounded: one replica and the demo.
- :class:`RedisStore`, redis.asyncio: several replicas. Every operation is a single
  atomic command (``SET NX PX``, ``SET PX``, ``GETDEL``, ``GET``, ``PING``); ``put_many``
  pipelines several ``SET PX`` (unverified ones: with their source's counter). A
  standalone or Sentinel server is spoken to on redis-py's own connections, each kept
  by the store between commands (:class:`~proxy.redis_connections.Connections`); a
  Cluster through redis-py's client, which routes each key.

Keys are namespaced ``jargate:``; callers hash any part that comes from outside
(:func:`hashed_key`). An unreachable or failing store raises
:class:`~proxy.errors.StoreUnavailable`, which the gateway answers with 503
``temporarily_unavailable``: it fails closed.

Each store says from when on it is known to remember every claim (``memory_since``): a
Redis that restarted empty, or was emptied, has forgotten every ``jti`` claimed before;
each claim's round trip learns it.

What anyone can make the gateway keep (the flow of a plain authorization request waiting
at a login page: ``put_many(..., unverified_source=...)``) is bounded per source
(:class:`~proxy.errors.TooManyPendingFlows` beyond it) and, in memory, kept apart from
everything that comes after a signature or client authentication, which it can never
crowd out.
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Protocol
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import RedisClusterException, RedisError

from .errors import StoreUnavailable, TooManyPendingFlows
from .latency import Latency, store_seconds
from .redis_connections import Command, Connections, StoreMemory, sentinel_master, watch_cluster

PREFIX = "jargate:"
#: ``JARGATE_MAX_PENDING_PLAIN_FLOWS_PER_ADDRESS``'s default.
MAX_PENDING_PER_SOURCE = 256


def hashed_key(kind: str, *parts: str) -> str:
    """A store key for values from outside: ``<kind>:<sha256 of the parts>``."""
    digest = hashlib.sha256("\x00".join(parts).encode()).hexdigest()
    return f"{kind}:{digest}"


class Store(Protocol):
    """What the gateway needs from a store. TTLs are in seconds (> 0)."""

    #: Where each operation's time goes (the gateway gives its metrics' histogram).
    latency: Latency

    @property
    def memory_since(self) -> float:
        """Unix time from which on the store is known to remember every claim."""
        ...

    @property
    def memory_resets(self) -> int:
        """How many times this store found its memory gone and began it again."""
        ...

    async def claim_once(self, key: str, ttl: float) -> bool:
        """Record ``key`` until ``ttl``; True only for the first claim (replay defence)."""
        ...

    async def put(self, key: str, value: str, ttl: float) -> None:
        """Store ``value`` under ``key`` for ``ttl`` seconds, replacing any old value."""
        ...

    async def put_many(
        self, entries: Sequence[tuple[str, str, float]], *, unverified_source: str | None = None
    ) -> None:
        """:meth:`put` for each ``(key, value, ttl)``, in one round trip. With
        ``unverified_source`` (an opaque string: who made the request) the entries are what
        an unauthenticated caller made the gateway keep: bounded per source, and
        :class:`~proxy.errors.TooManyPendingFlows` (nothing kept) beyond it."""
        ...

    async def take(self, key: str) -> str | None:
        """Return and delete the value: at most one caller ever gets it."""
        ...

    async def peek(self, key: str) -> str | None:
        """Return the value without consuming it."""
        ...

    async def ping(self) -> None:
        """Raise :class:`StoreUnavailable` unless the store answers (readiness)."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


def _ttl_ms(ttl: float) -> int:
    if ttl <= 0:
        raise ValueError("ttl must be positive")
    return max(1, int(ttl * 1000))


class _Entries:
    """Values with an expiry, oldest first, at most ``limit``, and how many each source has.

    Expired entries leave on every write (a heap finds them); :meth:`pop` is the one way
    out, so the per-source counts stay exact.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        #: key -> (value, expiry on the monotonic clock, source or None).
        self.values: OrderedDict[str, tuple[str, float, str | None]] = OrderedDict()
        self.per_source: dict[str, int] = {}
        self._expiry: list[tuple[float, str]] = []

    def __len__(self) -> int:
        return len(self.values)

    def live(self, key: str, now: float) -> str | None:
        entry = self.values.get(key)
        if entry is None:
            return None
        if entry[1] <= now:
            self.pop(key)
            return None
        return entry[0]

    def pop(self, key: str) -> str | None:
        entry = self.values.pop(key, None)
        if entry is None:
            return None
        self._forget(entry[2])
        return entry[0]

    def pop_oldest(self) -> None:
        _, (_, _, source) = self.values.popitem(last=False)
        self._forget(source)

    def _forget(self, source: str | None) -> None:
        if source is not None:
            left = self.per_source[source] - 1
            if left:
                self.per_source[source] = left
            else:
                del self.per_source[source]

    def evict_expired(self, now: float) -> None:
        while self._expiry and self._expiry[0][0] <= now:
            expires, key = heapq.heappop(self._expiry)
            entry = self.values.get(key)
            if entry is not None and entry[1] == expires:
                self.pop(key)

    def add(self, key: str, value: str, expires: float, source: str | None) -> None:
        self.pop(key)
        self.values[key] = (value, expires, source)
        if source is not None:
            self.per_source[source] = self.per_source.get(source, 0) + 1
        heapq.heappush(self._expiry, (expires, key))
        if len(self._expiry) > 2 * self.limit:
            # Replaced and taken keys leave stale heap entries; rebuild now and then.
            self._expiry = [(exp, k) for k, (_, exp, _) in self.values.items()]
            heapq.heapify(self._expiry)


class MemoryStore:
    """In-process store, bounded in two budgets.

    Verified state (everything that comes after a signature or client authentication)
    holds at most ``max_entries``; when full it refuses (fails closed): evicting a live
    entry could forget a replay claim. Unverified state (``put_many`` with a source) has
    a budget of its own on top, ``max_unverified_entries`` (half of ``max_entries`` unless
    given), so it can never refuse a verified request; each source holds at most
    ``max_pending_per_source`` of it, and when the budget is full the oldest unverified
    entry makes room. An entry taken or expired frees its source's slot.
    """

    def __init__(
        self,
        max_entries: int = 100_000,
        max_pending_per_source: int = MAX_PENDING_PER_SOURCE,
        max_unverified_entries: int | None = None,
    ) -> None:
        unverified = max_entries // 2 if max_unverified_entries is None else max_unverified_entries
        self._verified = _Entries(max_entries)
        self._unverified = _Entries(unverified)
        self._per_source = max_pending_per_source
        #: Nothing is remembered from before the store was made.
        self.memory_since = time.time()
        self.memory_resets = 0
        self.latency = store_seconds()

    def __len__(self) -> int:
        return len(self._verified) + len(self._unverified)

    def _live(self, key: str, now: float) -> str | None:
        value = self._verified.live(key, now)
        return self._unverified.live(key, now) if value is None else value

    def _add(
        self, entries: Sequence[tuple[str, str, float]], expiries: list[float], source: str | None
    ) -> None:
        region, other = self._verified, self._unverified
        if source is not None:
            region, other = other, region
        for (key, value, _), expires in zip(entries, expiries, strict=True):
            other.pop(key)
            region.add(key, value, expires, source)

    def _put_verified(self, entries: Sequence[tuple[str, str, float]], now: float) -> None:
        expiries = [now + _ttl_ms(ttl) / 1000 for _, _, ttl in entries]
        region = self._verified
        region.evict_expired(now)
        added = sum(1 for key, _, _ in entries if key not in region.values)
        if len(region) + added > region.limit:
            raise StoreUnavailable("the in-memory store is full")
        self._add(entries, expiries, None)

    def _put_unverified(
        self, entries: Sequence[tuple[str, str, float]], source: str, now: float
    ) -> None:
        expiries = [now + _ttl_ms(ttl) / 1000 for _, _, ttl in entries]
        region = self._unverified
        region.evict_expired(now)
        if region.per_source.get(source, 0) + len(entries) > self._per_source:
            raise TooManyPendingFlows()
        if len(entries) > region.limit:
            raise StoreUnavailable("the in-memory store is full")
        while len(region) + len(entries) > region.limit:
            region.pop_oldest()
        self._add(entries, expiries, source)

    async def claim_once(self, key: str, ttl: float) -> bool:
        started = now = time.monotonic()
        try:
            if self._live(key, now) is not None:
                return False
            self._put_verified(((key, "1", ttl),), now)
            return True
        finally:
            self.latency.observe(time.monotonic() - started, "claim_once")

    async def put(self, key: str, value: str, ttl: float) -> None:
        started = time.monotonic()
        try:
            self._put_verified(((key, value, ttl),), started)
        finally:
            self.latency.observe(time.monotonic() - started, "put")

    async def put_many(
        self, entries: Sequence[tuple[str, str, float]], *, unverified_source: str | None = None
    ) -> None:
        started = time.monotonic()
        try:
            if unverified_source is None:
                self._put_verified(entries, started)
            else:
                self._put_unverified(entries, unverified_source, started)
        finally:
            self.latency.observe(time.monotonic() - started, "put_many")

    async def take(self, key: str) -> str | None:
        started = time.monotonic()
        try:
            for region in (self._verified, self._unverified):
                if region.live(key, started) is not None:
                    return region.pop(key)
            return None
        finally:
            self.latency.observe(time.monotonic() - started, "take")

    async def peek(self, key: str) -> str | None:
        started = time.monotonic()
        try:
            return self._live(key, started)
        finally:
            self.latency.observe(time.monotonic() - started, "peek")

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None


class RedisStore:
    """Redis-backed store; each operation is one atomic command (``put_many``: one
    pipeline).

    Unverified entries (``put_many`` with a source): one counter key a source, set and
    incremented in the entries' own pipeline (``SET NX PX`` for a fixed window of the
    entries' TTL, ``INCRBY`` their number); past ``max_pending_per_source`` in a window
    the entries just written are deleted and the call refused. Redis's own memory is
    bounded by its ``maxmemory``, with ``noeviction`` (any eviction policy may evict
    replay claims).
    """

    def __init__(
        self,
        client: aioredis.Redis | RedisCluster,
        sentinel: Sentinel | None = None,
        timeout: float = 1.0,
        max_pending_per_source: int = MAX_PENDING_PER_SOURCE,
    ) -> None:
        self._redis = client
        self._sentinel = sentinel
        #: Every operation's deadline, retries and reconnects included (``asyncio.timeout``;
        #: its ``TimeoutError`` is an ``OSError``, so it fails closed like the rest): one
        #: timer an operation, not redis-py's socket timeout's task a write and timer a
        #: read. Cancelled at the deadline, the connection is dropped, so no late reply is
        #: read by the next command.
        self._timeout = timeout
        self._per_source = max_pending_per_source
        self._memory = StoreMemory()
        self.latency = store_seconds()
        #: Standalone and Sentinel: commands on the pool's connections. A Cluster client
        #: routes every key to its node, so its commands go through the client.
        self._connections: Connections | None = None
        if isinstance(client, aioredis.Redis):
            self._connections = Connections(client.connection_pool, self._memory)
        else:
            watch_cluster(client, self._memory)

    @property
    def memory_since(self) -> float:
        return self._memory.since

    @property
    def memory_resets(self) -> int:
        return self._memory.resets

    async def _call(self, operation: str, *args: str | int) -> Any:
        """One command within the deadline; any failure is :class:`StoreUnavailable`."""
        return (await self._pipeline(operation, (args,)))[0]

    async def _pipeline(
        self, operation: str, commands: Sequence[Command], *, check_memory: bool = False
    ) -> list[Any]:
        """Commands in one round trip (a Cluster: one a node), within the deadline, timed
        under ``operation``; any failure (an error reply included) is
        :class:`StoreUnavailable`. ``check_memory``: the marker checked in the same round
        trip (:class:`~proxy.redis_connections.Connections`)."""
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._timeout):
                if self._connections is not None:
                    return await self._connections.pipeline(commands, check_memory=check_memory)
                if len(commands) == 1:
                    return [await self._redis.execute_command(*commands[0])]
                pipeline = self._redis.pipeline(transaction=False)
                for command in commands:
                    pipeline.execute_command(*command)
                return await pipeline.execute()
        # A Cluster's own failures (no node reachable, a slot uncovered) are no RedisError.
        except (RedisError, RedisClusterException, OSError) as exc:
            raise StoreUnavailable() from exc
        finally:
            self.latency.observe(time.perf_counter() - started, operation)

    @classmethod
    def from_url(
        cls, url: str, timeout: float = 1.0, max_pending_per_source: int = MAX_PENDING_PER_SOURCE
    ) -> RedisStore:
        """Build from ``redis://``, ``rediss://``, ``unix://``, ``redis+sentinel://`` or
        ``redis+cluster://`` (``rediss+…`` for TLS).

        Sentinel: ``redis+sentinel://[:password@]host:port[,host:port…]/service_name[/db]``
        (``?sentinel_password=``, ``?max_connections=``).
        Cluster: ``redis+cluster://[:password@]host:port`` (any one node; the rest is
        discovered).
        """
        # No socket timeout (redis-py's default is 5 s): the operation's deadline bounds
        # it. No health check PING after idle: a connection found dead is retried once on
        # a new one (the check cost two event-loop lookups, each a getpid(), a command).
        options = {
            "socket_timeout": None,
            "socket_connect_timeout": timeout,
            "retry": Retry(NoBackoff(), 1),
        }
        scheme = urlsplit(url).scheme
        if scheme.endswith("+cluster"):
            plain = url.replace(scheme, scheme.split("+")[0], 1)
            cluster = RedisCluster.from_url(
                plain, socket_timeout=None, socket_connect_timeout=timeout
            )
            return cls(cluster, timeout=timeout, max_pending_per_source=max_pending_per_source)
        if scheme.endswith("+sentinel"):
            sentinel, master = sentinel_master(url, scheme.startswith("rediss"), timeout)
            return cls(master, sentinel, timeout, max_pending_per_source)
        client = aioredis.Redis.from_url(url, **options)  # type: ignore[arg-type]
        return cls(client, timeout=timeout, max_pending_per_source=max_pending_per_source)

    async def claim_once(self, key: str, ttl: float) -> bool:
        # SET NX answers OK when it set the key and nil when the key was there (the
        # cluster client's reply callback turns OK into True).
        # The marker is checked in the claim's round trip: a server emptied under live
        # connections has forgotten every claim, and the caller must know it at once.
        command = ("SET", PREFIX + key, "1", "NX", "PX", _ttl_ms(ttl))
        (claimed,) = await self._pipeline("claim_once", (command,), check_memory=True)
        return bool(claimed)

    async def put(self, key: str, value: str, ttl: float) -> None:
        await self._call("put", "SET", PREFIX + key, value, "PX", _ttl_ms(ttl))

    async def put_many(
        self, entries: Sequence[tuple[str, str, float]], *, unverified_source: str | None = None
    ) -> None:
        writes = [("SET", PREFIX + key, value, "PX", _ttl_ms(ttl)) for key, value, ttl in entries]
        if not writes:
            return
        if unverified_source is None:
            await self._pipeline("put_many", writes)
            return
        counter = PREFIX + hashed_key("pending", unverified_source)
        window = max(write[4] for write in writes)
        replies = await self._pipeline(
            "put_many",
            [("SET", counter, 0, "NX", "PX", window), ("INCRBY", counter, len(writes)), *writes],
        )
        if int(replies[1]) > self._per_source:
            await self._pipeline("put_many", [("DEL", write[1]) for write in writes])
            raise TooManyPendingFlows()

    async def take(self, key: str) -> str | None:
        return _text(await self._call("take", "GETDEL", PREFIX + key))

    async def peek(self, key: str) -> str | None:
        return _text(await self._call("peek", "GET", PREFIX + key))

    async def ping(self) -> None:
        await self._call("ping", "PING")

    async def close(self) -> None:
        if self._connections is not None:
            await self._connections.close()
        await self._redis.aclose()
        if self._sentinel is not None:
            for connection in self._sentinel.sentinels:
                await connection.aclose()


def _text(value: bytes | str | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return value.decode()


def build_store(
    redis_url: str | None, max_pending_per_source: int = MAX_PENDING_PER_SOURCE
) -> Store:
    """The store the settings ask for: Redis when a URL is set, else memory."""
    if redis_url is None:
        return MemoryStore(max_pending_per_source=max_pending_per_source)
    return RedisStore.from_url(redis_url, max_pending_per_source=max_pending_per_source)
