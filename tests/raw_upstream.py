"""A scripted raw HTTP/1.1 upstream on loopback, for what goes over the wire exactly.

It writes the bytes each test scripts and records every connection and every request
head it receives; request bodies (``Content-Length``) are read and left out of the heads."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from proxy.app import create_app
from proxy.keyring import Keyring
from proxy.store import MemoryStore
from tests.support import make_settings

OK = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"

#: What the upstream writes: bytes, or pieces written one by one, a number between two
#: pieces being the seconds to wait before the next.
Answer = bytes | tuple[bytes | float, ...]
#: What the upstream answers to the n-th request on a connection (0-based, per
#: connection), and whether it then closes that connection.
Script = Callable[[int, int], tuple[Answer, bool]]


@dataclass
class RawUpstream:
    """A scripted HTTP/1.1 upstream: ``script(connection, request)`` gives the answer."""

    script: Script
    #: Seconds before each answer (to make concurrent requests overlap).
    delay: float = 0.0
    heads: list[bytes] = field(default_factory=list)
    connections: int = 0
    #: How many requests each connection carried, in the order they were opened.
    served: list[int] = field(default_factory=list)
    #: Connections still open on the upstream's side.
    open: int = 0
    #: Answers the upstream is done with (every piece written, or the connection broke).
    written: int = 0
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    server: asyncio.Server | None = None
    writers: list[asyncio.StreamWriter] = field(default_factory=list)

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        number = self.connections
        self.connections += 1
        self.served.append(0)
        self.open += 1
        self.writers.append(writer)
        try:
            for index in range(100):
                head = await reader.readuntil(b"\r\n\r\n")
                self.heads.append(head)
                self.served[number] += 1
                await reader.readexactly(content_length(head))
                answer, close = self.script(number, index)
                await asyncio.sleep(self.delay)
                try:
                    await write(writer, answer)
                finally:
                    async with self.changed:
                        self.written += 1
                        self.changed.notify_all()
                if close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.open -= 1
            writer.close()

    async def wait_written(self, answers: int) -> None:
        """Until the upstream is done with ``answers`` answers (at most 5 s)."""
        async with asyncio.timeout(5), self.changed:
            await self.changed.wait_for(lambda: self.written >= answers)


async def write(writer: asyncio.StreamWriter, answer: Answer) -> None:
    """Write ``answer``'s pieces, waiting between them as it says."""
    for piece in (answer,) if isinstance(answer, bytes) else answer:
        if isinstance(piece, bytes):
            writer.write(piece)
            await writer.drain()
        else:
            await asyncio.sleep(piece)


def content_length(head: bytes) -> int:
    """The request body's length that ``head`` announces (0 without one)."""
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


async def through_gateway(
    aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]],
    upstream: RawUpstream,
    path: str = "",
) -> TestClient[Any, Any]:
    """The gateway in front of ``upstream`` (started here), with a 2 s read timeout."""
    upstream.server = await asyncio.start_server(upstream.handle, "127.0.0.1", 0)
    app: web.Application = create_app(
        make_settings(upstream.url + path, upstream_read_timeout_seconds=2.0),
        keyring=Keyring.throwaway(),
        store=MemoryStore(),
    )
    return await aiohttp_client(app)
