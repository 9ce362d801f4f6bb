"""The store: replay claims, pushed and fetched request objects, flows in flight.

One small :class:`Store` protocol with two implementations that pass the same tests:

- :class:`MemoryStore`, in-process, TTL-aware and bounded: one replica and the demo.
- :class:`RedisStore`, redis.asyncio: several replicas. Every operation is a single
  atomic command (``SET NX PX``, ``SET PX``, ``GETDEL``, ``GET``, ``PING``); ``put_many``
  pipelines several ``SET PX``. A standalone or Sentinel server is spoken to on
  redis-py's own connections, each kept by the store between commands
  (:class:`_Connections`); a Cluster through redis-py's client, which routes each key.

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
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection, ConnectionPool
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

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


class _Connections:
    """Commands sent on redis-py's connections directly, not through ``execute_command``.

    redis-py's client wraps every command in its pool's lock (twice), an event dispatch,
    observability hooks and a retry closure: 61 µs of CPU a ``SET NX PX`` here against
    18 µs for the same command on a connection (bench/analysis.md, eighth session). The
    store keeps the connections it used and takes one for each command; none is shared
    by two commands at once, so replies cannot cross. New connections come from the
    client's pool (which connects them: for Sentinel, to the current master), at most
    its ``max_connections`` (100 unless the URL says otherwise); beyond that a command
    waits for one to come back, within its deadline, instead of failing.

    A connection on which anything goes wrong (an error reply, a lost connection, the
    deadline's cancellation) is closed and given back to the pool, never reused: no late
    reply can be read by the next command, and after a failover the next connection goes
    to the new master. A connection found closed (the server restarted, or dropped it
    while idle) is replaced once and the command sent again, as redis-py's one retry did.
    """

    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool
        self._idle: list[AbstractConnection] = []
        #: At most ``max_connections`` commands at once, so at most that many connections
        #: open (one is made only when none is idle); the others wait for a slot.
        self._slots = asyncio.Semaphore(pool.max_connections)

    async def call(self, *args: str | int) -> Any:
        """Send one command and return its reply (raises :class:`RedisError` or
        :class:`OSError`)."""
        async with self._slots:
            for attempt in (1, 2):
                if self._idle:
                    connection = self._idle.pop()
                else:
                    connection = await self._pool.get_connection()  # type: ignore[no-untyped-call]
                try:
                    await connection.send_command(*args)
                    reply = await connection.read_response()
                except (RedisConnectionError, RedisTimeoutError, OSError):
                    await self._drop(connection)
                    if attempt == 2:
                        raise
                    continue
                except BaseException:
                    await self._drop(connection)
                    raise
                self._idle.append(connection)
                return reply
        raise AssertionError("unreachable")  # pragma: no cover

    async def _drop(self, connection: AbstractConnection) -> None:
        # Shielded: a second cancellation while closing must not leave the pool counting
        # the connection as in use (it would refuse new ones once it counted too many).
        await asyncio.shield(self._close(connection))

    async def _close(self, connection: AbstractConnection) -> None:
        await connection.disconnect(nowait=True)
        await self._pool.release(connection)

    async def close(self) -> None:
        while self._idle:
            await self._drop(self._idle.pop())


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
        #: (bench/analysis.md). Cancelled at the deadline, the connection is dropped, so
        #: no late reply is read by the next command.
        self._timeout = timeout
        #: Standalone and Sentinel: commands on the pool's connections. A Cluster client
        #: routes every key to its node, so its commands go through the client.
        self._connections = (
            _Connections(client.connection_pool) if isinstance(client, aioredis.Redis) else None
        )

    async def _call(self, *args: str | int) -> Any:
        """One command within the deadline; any failure is :class:`StoreUnavailable`."""
        try:
            async with asyncio.timeout(self._timeout):
                if self._connections is not None:
                    return await self._connections.call(*args)
                return await self._redis.execute_command(*args)
        except (RedisError, OSError) as exc:
            raise StoreUnavailable() from exc

    @classmethod
    def from_url(cls, url: str, timeout: float = 1.0) -> RedisStore:
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
            return cls(cluster, timeout=timeout)
        if scheme.endswith("+sentinel"):
            sentinel, master = _sentinel_master(url, scheme.startswith("rediss"), timeout)
            return cls(master, sentinel, timeout)
        return cls(aioredis.Redis.from_url(url, **options), timeout=timeout)  # type: ignore[arg-type]

    async def claim_once(self, key: str, ttl: float) -> bool:
        # SET NX answers OK when it set the key and nil when the key was there (the
        # cluster client's reply callback turns OK into True).
        return bool(await self._call("SET", PREFIX + key, "1", "NX", "PX", _ttl_ms(ttl)))

    async def put(self, key: str, value: str, ttl: float) -> None:
        await self._call("SET", PREFIX + key, value, "PX", _ttl_ms(ttl))

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
        return _text(await self._call("GETDEL", PREFIX + key))

    async def peek(self, key: str) -> str | None:
        return _text(await self._call("GET", PREFIX + key))

    async def ping(self) -> None:
        await self._call("PING")

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
    max_connections = int(query["max_connections"][0]) if "max_connections" in query else None
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
        max_connections=max_connections,
    )
    return sentinel, master


def build_store(redis_url: str | None) -> Store:
    """The store the settings ask for: Redis when a URL is set, else memory."""
    if redis_url is None:
        return MemoryStore()
    return RedisStore.from_url(redis_url)
