"""The store: replay claims, pushed and fetched request objects, flows in flight.

One small :class:`Store` protocol with two implementations that pass the same tests:

- :class:`MemoryStore`, in-process, TTL-aware and bounded: one replica and the demo.
- :class:`RedisStore`, redis.asyncio: several replicas. Every operation is a single
  atomic command (``SET NX PX``, ``SET PX``, ``GETDEL``, ``GET``, ``PING``); ``put_many``
  pipelines several ``SET PX``.

Keys are namespaced ``jargate:``; callers hash any part that comes from outside
(:func:`hashed_key`). An unreachable or failing store raises
:class:`~proxy.errors.StoreUnavailable`, which the gateway answers with 503
``temporarily_unavailable``: it fails closed.
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import time
from collections.abc import Sequence
from typing import Protocol
from urllib.parse import parse_qs, unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from .errors import StoreUnavailable

PREFIX = "jargate:"


def hashed_key(kind: str, *parts: str) -> str:
    """A store key for values from outside: ``<kind>:<sha256 of the parts>``."""
    digest = hashlib.sha256("\x00".join(parts).encode()).hexdigest()
    return f"{kind}:{digest}"


class Store(Protocol):
    """What the gateway needs from a store. TTLs are in seconds (> 0)."""

    async def claim_once(self, key: str, ttl: float) -> bool:
        """Record ``key`` until ``ttl``; True only for the first claim (replay defence)."""
        ...

    async def put(self, key: str, value: str, ttl: float) -> None:
        """Store ``value`` under ``key`` for ``ttl`` seconds, replacing any old value."""
        ...

    async def put_many(self, entries: Sequence[tuple[str, str, float]]) -> None:
        """:meth:`put` for each ``(key, value, ttl)``, in one round trip."""
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


class MemoryStore:
    """In-process store. Expired entries are evicted; when full, it refuses (fails closed).

    Evicting a live entry to make room could forget a replay claim, so a full store
    raises :class:`StoreUnavailable` instead.
    """

    def __init__(self, max_entries: int = 100_000) -> None:
        self._data: dict[str, tuple[str, float]] = {}
        self._expiry: list[tuple[float, str]] = []
        self._max = max_entries

    def __len__(self) -> int:
        return len(self._data)

    def _live(self, key: str, now: float) -> tuple[str, float] | None:
        entry = self._data.get(key)
        if entry is not None and entry[1] <= now:
            del self._data[key]
            return None
        return entry

    def _evict_expired(self, now: float) -> None:
        while self._expiry and self._expiry[0][0] <= now:
            expires, key = heapq.heappop(self._expiry)
            entry = self._data.get(key)
            if entry is not None and entry[1] == expires:
                del self._data[key]

    def _set(self, key: str, value: str, ttl: float, now: float) -> None:
        self._evict_expired(now)
        if key not in self._data and len(self._data) >= self._max:
            raise StoreUnavailable("the in-memory store is full")
        expires = now + _ttl_ms(ttl) / 1000
        self._data[key] = (value, expires)
        heapq.heappush(self._expiry, (expires, key))
        if len(self._expiry) > 2 * self._max:
            # Overwritten keys leave stale heap entries; rebuild now and then.
            self._expiry = [(exp, k) for k, (_, exp) in self._data.items()]
            heapq.heapify(self._expiry)

    async def claim_once(self, key: str, ttl: float) -> bool:
        now = time.monotonic()
        if self._live(key, now) is not None:
            return False
        self._set(key, "1", ttl, now)
        return True

    async def put(self, key: str, value: str, ttl: float) -> None:
        self._set(key, value, ttl, time.monotonic())

    async def put_many(self, entries: Sequence[tuple[str, str, float]]) -> None:
        now = time.monotonic()
        for key, value, ttl in entries:
            self._set(key, value, ttl, now)

    async def take(self, key: str) -> str | None:
        entry = self._live(key, time.monotonic())
        if entry is None:
            return None
        del self._data[key]
        return entry[0]

    async def peek(self, key: str) -> str | None:
        entry = self._live(key, time.monotonic())
        return None if entry is None else entry[0]

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None


class RedisStore:
    """Redis-backed store; each operation is one atomic command."""

    def __init__(
        self,
        client: aioredis.Redis | RedisCluster,
        sentinel: Sentinel | None = None,
        timeout: float = 1.0,
    ) -> None:
        self._redis = client
        self._sentinel = sentinel
        #: Every operation's deadline, retries and reconnects included (``asyncio.timeout``;
        #: its ``TimeoutError`` is an ``OSError``, so it fails closed like the rest). One
        #: timer an operation: redis-py's ``socket_timeout`` costs a task for every write
        #: and a timer for every read, 55 k instructions a command against 26 k
        #: (bench/analysis.md). Cancelled at the deadline, redis-py drops the connection,
        #: so no late reply is read by the next command.
        self._timeout = timeout

    @classmethod
    def from_url(cls, url: str, timeout: float = 1.0) -> RedisStore:
        """Build from ``redis://``, ``rediss://``, ``unix://``, ``redis+sentinel://`` or
        ``redis+cluster://`` (``rediss+…`` for TLS).

        Sentinel: ``redis+sentinel://[:password@]host:port[,host:port…]/service_name[/db]``.
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
            return cls(cluster, timeout=timeout)
        if scheme.endswith("+sentinel"):
            sentinel, master = _sentinel_master(url, scheme.startswith("rediss"), timeout)
            return cls(master, sentinel, timeout)
        return cls(aioredis.Redis.from_url(url, **options), timeout=timeout)  # type: ignore[arg-type]

    async def claim_once(self, key: str, ttl: float) -> bool:
        try:
            async with asyncio.timeout(self._timeout):
                return bool(await self._redis.set(PREFIX + key, "1", nx=True, px=_ttl_ms(ttl)))
        except (RedisError, OSError) as exc:
            raise StoreUnavailable() from exc

    async def put(self, key: str, value: str, ttl: float) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                await self._redis.set(PREFIX + key, value, px=_ttl_ms(ttl))
        except (RedisError, OSError) as exc:
            raise StoreUnavailable() from exc

    async def put_many(self, entries: Sequence[tuple[str, str, float]]) -> None:
        try:
            pipeline = self._redis.pipeline(transaction=False)
            for key, value, ttl in entries:
                pipeline.set(PREFIX + key, value, px=_ttl_ms(ttl))
            async with asyncio.timeout(self._timeout):
                await pipeline.execute()
        except (RedisError, OSError) as exc:
            raise StoreUnavailable() from exc

    async def take(self, key: str) -> str | None:
        try:
            async with asyncio.timeout(self._timeout):
                value = await self._redis.getdel(PREFIX + key)
        except (RedisError, OSError) as exc:
            raise StoreUnavailable() from exc
        return _text(value)

    async def peek(self, key: str) -> str | None:
        try:
            async with asyncio.timeout(self._timeout):
                value = await self._redis.get(PREFIX + key)
        except (RedisError, OSError) as exc:
            raise StoreUnavailable() from exc
        return _text(value)

    async def ping(self) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                await self._redis.ping()
        except (RedisError, OSError) as exc:
            raise StoreUnavailable() from exc

    async def close(self) -> None:
        await self._redis.aclose()
        if self._sentinel is not None:
            for connection in self._sentinel.sentinels:
                await connection.aclose()


def _text(value: bytes | str | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return value.decode()


def _sentinel_master(url: str, tls: bool, timeout: float) -> tuple[Sentinel, aioredis.Redis]:
    parts = urlsplit(url)
    hosts_part = parts.netloc.rsplit("@", 1)[-1]
    password = unquote(parts.password) if parts.password else None
    username = unquote(parts.username) if parts.username else None
    hosts: list[tuple[str, int]] = []
    for item in hosts_part.split(","):
        host, _, port = item.rpartition(":")
        hosts.append((host.strip("[]") or item, int(port or 26379)))
    segments = [s for s in parts.path.split("/") if s]
    if not segments:
        raise ValueError("a Sentinel URL needs the service name as its path")
    service = segments[0]
    db = int(segments[1]) if len(segments) > 1 else 0
    query = parse_qs(parts.query)
    sentinel_password = query.get("sentinel_password", [None])[0]
    # The master's commands are bounded by RedisStore's deadline; the Sentinels' own
    # queries (only when a connection is made) by their socket timeout.
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        hosts,
        socket_timeout=None,
        socket_connect_timeout=timeout,
        sentinel_kwargs={"password": sentinel_password, "socket_timeout": timeout},
    )
    master: aioredis.Redis = sentinel.master_for(
        service,
        db=db,
        password=password,
        username=username,
        ssl=tls,
        socket_timeout=None,
        socket_connect_timeout=timeout,
    )
    return sentinel, master


def build_store(redis_url: str | None) -> Store:
    """The store the settings ask for: Redis when a URL is set, else memory."""
    if redis_url is None:
        return MemoryStore()
    return RedisStore.from_url(redis_url)
