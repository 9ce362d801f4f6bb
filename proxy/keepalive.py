"""GET and HEAD without a body, to a plain-HTTP upstream, on connections the gateway keeps.

These are most of what reaches the upstream: pages passed through, and the
authorization endpoint the gateway calls server-side. aiohttp's
``ClientSession.request`` spends most of its work on these on what a reverse proxy never
uses (cookies, redirects, tracing, middlewares, auth, proxies, URL building). So these
requests are written
on aiohttp's own client protocol (:class:`aiohttp.client_proto.ResponseHandler`), whose
parser frames, bounds and times the answer exactly as the session's does; only writing
the request line and headers (with aiohttp's own serialiser, which refuses control
characters) and keeping the connections are done here.

A connection is kept only when its answer was read to the end, nothing is left after
it and neither side asked to close it, for at most :data:`KEEPALIVE_SECONDS` of idleness
(aiohttp's own default); a byte arriving while it is kept closes it
(:class:`proxy.persistence.GuardedResponseHandler`).
A kept connection that the upstream closed meanwhile is retried once on a new one, as
aiohttp does for idempotent requests (RFC 9112 §9.3.1). Requests with a body, other
methods and ``https://`` upstreams go through the session.

``ResponseHandler.set_response_params`` and ``http_writer._serialize_headers`` are
aiohttp's internals: pyproject.toml pins aiohttp to its 3.14 series, and
tests/test_keepalive.py fails loudly if a release changes them.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

from aiohttp import ClientOSError, ServerDisconnectedError
from aiohttp.http_parser import RawResponseMessage
from aiohttp.http_writer import _serialize_headers
from aiohttp.streams import StreamReader
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from .persistence import GuardedResponseHandler

#: Idle connections older than this are closed, not reused (aiohttp's TCPConnector default).
KEEPALIVE_SECONDS = 15.0
#: The methods sent here: no body, idempotent (safe to retry on a fresh connection).
METHODS = frozenset({"GET", "HEAD"})


class Answer:
    """The upstream's answer, with the parts of :class:`aiohttp.ClientResponse` the gateway
    reads; ``content`` is aiohttp's stream, fed by aiohttp's parser."""

    __slots__ = ("_pool", "_protocol", "content", "content_length", "headers", "reason", "status")

    def __init__(
        self,
        message: RawResponseMessage,
        content: StreamReader,
        protocol: GuardedResponseHandler,
        pool: KeptConnections,
    ) -> None:
        self.status: int = message.code
        self.reason: str | None = message.reason
        self.headers: CIMultiDictProxy[str] = message.headers
        self.content = content
        length = message.headers.get("Content-Length")
        self.content_length = int(length) if length is not None else None
        self._protocol: GuardedResponseHandler | None = protocol
        self._pool = pool

    def release(self) -> None:
        """Done with the answer: its connection is kept if the answer was read to the end
        and may be followed by another, else closed."""
        protocol, self._protocol = self._protocol, None
        if protocol is not None:
            self._pool.give_back(protocol)


class KeptConnections:
    """Kept-alive connections to one ``http://`` upstream, and requests on them."""

    def __init__(self, base: URL, connect_timeout: float | None, read_timeout: float | None):
        if base.scheme != "http" or base.host is None:
            raise ValueError("kept connections are for http:// upstreams")
        self._host = base.host
        self._port = base.port or 80
        self._netloc = base.raw_authority
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        #: Idle connections and when each went idle, the most recent last: the most recent
        #: is used first, the oldest are closed once expired.
        self._idle: deque[tuple[GuardedResponseHandler, float]] = deque()

    async def request(self, method: str, target: str, headers: CIMultiDict[str]) -> Answer:
        """Send ``method target`` with exactly ``headers`` (``Host`` added when missing) and
        return the answer once its head arrived. Raises what aiohttp's client raises:
        :class:`TimeoutError` (connect or read timeout), :class:`aiohttp.ClientError` or
        :class:`OSError` (unreachable, closed, reset), ``HttpProcessingError`` (malformed)."""
        if method not in METHODS:
            raise ValueError(f"{method} is not sent on kept connections")
        if not target.startswith("/") or " " in target:
            raise ValueError("a request target is a path and query without spaces")
        if "Host" not in headers:
            headers["Host"] = self._netloc
        # aiohttp's serialiser refuses control characters (CR, LF, NUL...) anywhere.
        head = _serialize_headers(f"{method} {target} HTTP/1.1", headers)
        for attempt in (1, 2):
            protocol, kept = await self._connection()
            protocol.set_response_params(
                skip_payload=method == "HEAD",
                read_until_eof=True,
                auto_decompress=False,
                read_timeout=self._read_timeout,
            )
            try:
                if protocol.transport is None:
                    raise ServerDisconnectedError()
                protocol.transport.write(head)
                protocol.start_timeout()
                message, content = await protocol.read()
                while 100 <= message.code < 200 and message.code != 101:  # 1xx: not the answer
                    message, content = await protocol.read()
            except (ServerDisconnectedError, ClientOSError):
                protocol.close()
                if kept and attempt == 1:
                    continue  # the upstream closed it while it was idle
                raise
            except BaseException:
                protocol.close()
                raise
            return Answer(message, content, protocol, self)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _connection(self) -> tuple[GuardedResponseHandler, bool]:
        """A connection to send on, and whether it was kept from an earlier request."""
        now = time.monotonic()
        while self._idle:
            protocol, since = self._idle.pop()
            if protocol.is_connected() and now - since < KEEPALIVE_SECONDS:
                protocol.idle = False
                return protocol, True
            protocol.close()
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self._connect_timeout):
            _, protocol = await loop.create_connection(
                lambda: GuardedResponseHandler(loop), self._host, self._port
            )
        return protocol, False

    def give_back(self, protocol: GuardedResponseHandler) -> None:
        """Keep ``protocol`` for the next request, or close it (when anything is left
        after its answer, see :mod:`proxy.persistence`); close the oldest idle
        connections that expired meanwhile (the most recent are used first, so under a
        steady light load the others would otherwise stay open)."""
        now = time.monotonic()
        if protocol.should_close or not protocol.is_connected():
            protocol.close()
        else:
            protocol.idle = True
            self._idle.append((protocol, now))
        while self._idle and now - self._idle[0][1] >= KEEPALIVE_SECONDS:
            self._idle.popleft()[0].close()

    def close(self) -> None:
        """Close every idle connection (at shutdown)."""
        while self._idle:
            self._idle.pop()[0].close()
