"""The Redis store's plumbing: kept connections, the store's memory marker, Sentinel URLs.

The marker ``jargate:since`` holds the Unix time from which the server is known to
remember every key the gateway writes: written with ``SET NX`` when missing, never
expiring. A server that restarts empty (no persistence) has lost every connection along
with its data, so the store checks the marker on every connection new to it, in the
round trip of the connection's first command (standalone, Sentinel) or while the
connection is set up (Cluster); a server emptied under live connections (``FLUSHDB``,
eviction) keeps them, so every claim's round trip carries the check too (standalone,
Sentinel): a claim made against a reset server comes back only after the reset is known
(:attr:`StoreMemory.since`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from itertools import count
from math import isfinite
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import redis.asyncio as aioredis
from hiredis import pack_command
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection, Connection, ConnectionPool
from redis.asyncio.sentinel import Sentinel
from redis.crc import key_slot
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger("jargate.store")

#: The marker of a standalone or Sentinel server; a Cluster has one per master, in a hash
#: slot the master serves (``jargate:since:{n}``).
MARKER = "jargate:since"

#: A command and its arguments: a tuple, as hiredis packs it.
Command = tuple[str | int, ...]


class StoreMemory:
    """From when on the store is known to remember everything, as its marker says, and
    how many times this process found the marker missing and wrote it."""

    def __init__(self) -> None:
        self._created = time.time()
        self._since: float | None = None
        self.resets = 0

    @property
    def since(self) -> float:
        """The marker's time; before the store was first reached, this object's creation."""
        return self._created if self._since is None else self._since

    def commands(self, key: str = MARKER) -> tuple[Command, Command]:
        """Set the marker to now if it is missing, then read it."""
        return ("SET", key, repr(time.time()), "NX"), ("GET", key)

    def learn(self, written: Any, value: Any, key: str = MARKER) -> None:
        """The replies to :meth:`commands`. Raises :class:`RedisError` (the store fails
        closed) when the marker does not hold a time."""
        try:
            since = float(value)
        except (TypeError, ValueError):
            raise RedisError(f"{key} does not hold a time") from None
        if not isfinite(since):
            raise RedisError(f"{key} does not hold a time")
        # Never backwards: a reply read late must not undo a reset another connection saw.
        self._since = since if self._since is None else max(self._since, since)
        if written is not None:
            self.resets += 1
            log.warning(
                "the store's memory begins now: first start, or it lost its data (restarted"
                " empty, flushed or evicted); what it remembered before is gone",
                extra={"marker": key, "since": since},
            )


class Connections:
    """Commands sent on redis-py's connections directly, not through ``execute_command``.

    redis-py's client wraps every command in its pool's lock (twice), an event dispatch,
    observability hooks and a retry closure, which a store of single commands does not
    need. The store keeps the connections it used and takes one for each round trip; none is shared
    by two at once, so replies cannot cross. New connections come from the client's pool
    (which connects them: for Sentinel, to the current master), at most its
    ``max_connections`` (100 unless the URL says otherwise); beyond that a command waits
    for one to come back, within its deadline, instead of failing.

    A connection on which anything goes wrong (an error reply, a lost connection, the
    deadline's cancellation) is closed and given back to the pool, never reused: no late
    reply can be read by the next command, and after a failover the next connection goes
    to the new master. A connection found closed (the server restarted, or dropped it
    while idle) is replaced once by a new one and the commands sent again, as redis-py's
    one retry did. The first round trip on a connection new to the store carries the
    marker's check (:class:`StoreMemory`) ahead of its commands.
    """

    def __init__(self, pool: ConnectionPool, memory: StoreMemory) -> None:
        self._pool = pool
        self._memory = memory
        self._idle: list[AbstractConnection] = []
        #: At most ``max_connections`` round trips at once, so at most that many connections
        #: open (one is made only when none is idle); the others wait for a slot.
        self._slots = asyncio.Semaphore(pool.max_connections)

    async def pipeline(
        self, commands: Sequence[Command], *, check_memory: bool = False
    ) -> list[Any]:
        """Send ``commands`` in one round trip and return their replies (raises
        :class:`RedisError` or :class:`OSError`); the marker is checked in it on a new
        connection, or always with ``check_memory``."""
        async with self._slots:
            for attempt in (1, 2):
                # The retry takes a new connection: the others kept may have died with the
                # one that failed (a restart closes them all).
                kept = self._idle.pop() if self._idle and attempt == 1 else None
                connection = kept or await self._pool.get_connection()  # type: ignore[no-untyped-call]
                check = check_memory or kept is None or not kept.is_connected
                try:
                    replies = await self._round_trip(connection, commands, check)
                except (RedisConnectionError, RedisTimeoutError, OSError):
                    await self._drop(connection)
                    if attempt == 2:
                        raise
                    continue
                except BaseException:
                    await self._drop(connection)
                    raise
                self._idle.append(connection)
                return replies
        raise AssertionError("unreachable")  # pragma: no cover

    async def _round_trip(
        self, connection: AbstractConnection, commands: Sequence[Command], check: bool
    ) -> list[Any]:
        sent = [*self._memory.commands(), *commands] if check else commands
        # hiredis packs a command in C (a tenth of redis-py's Python packer's time); the
        # pool's connections check no health (their interval is 0), so none is asked for.
        packed = b"".join(map(pack_command, sent))  # type: ignore[arg-type]  # stub: 1-tuple
        await connection.send_packed_command(packed, check_health=False)
        replies = [await connection.read_response() for _ in sent]
        if not check:
            return replies
        self._memory.learn(replies[0], replies[1])
        return replies[2:]

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


def watch_cluster(cluster: RedisCluster, memory: StoreMemory) -> None:
    """Check a master's marker on every connection the cluster client makes to it, while
    the connection is set up (two round trips a connection, none a command).

    The client routes each command itself, so the check cannot ride with a command; a
    connection is set up before its first command is sent. Each master keeps its own
    marker, in a slot it serves (:func:`master_marker`); replicas (no slots) have none.
    """

    async def on_connect(connection: Connection) -> None:
        await connection.on_connect()
        await connection.send_command("CLUSTER", "NODES")
        key = master_marker(await connection.read_response())
        if key is None:
            return
        await connection.send_packed_command(connection.pack_commands(memory.commands(key)))
        memory.learn(await connection.read_response(), await connection.read_response(), key)

    # Nodes made later copy the client's connection settings; those made already, their own.
    cluster.connection_kwargs["redis_connect_func"] = on_connect
    for node in cluster.startup_nodes:
        node.connection_kwargs["redis_connect_func"] = on_connect


def master_marker(nodes: bytes | str) -> str | None:
    """The marker key of the node that answered ``CLUSTER NODES``: in the first of its own
    slots that a key ``jargate:since:{<n>}`` falls into; None when it serves none."""
    text = nodes.decode() if isinstance(nodes, bytes) else nodes
    ranges: list[tuple[int, int]] = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 8 or "myself" not in fields[2].split(","):
            continue
        for item in fields[8:]:
            if not item.startswith("["):  # a slot being migrated or imported
                first, _, last = item.partition("-")
                ranges.append((int(first), int(last or first)))
    if not ranges:
        return None
    for n in count():
        slot = key_slot(str(n).encode())
        if any(first <= slot <= last for first, last in ranges):
            return f"{MARKER}:{{{n}}}"
    raise AssertionError("unreachable")  # pragma: no cover


def sentinel_master(url: str, tls: bool, timeout: float) -> tuple[Sentinel, aioredis.Redis]:
    """The Sentinels of a ``redis+sentinel://`` URL and a client of the master they name."""
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
    sentinel = Sentinel(  # type: ignore[no-untyped-call,unused-ignore]  # typed from redis 8.2
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
