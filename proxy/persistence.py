"""Persistent connections to the upstream (RFC 9112 section 9.3), on both paths, and the
rule that makes keeping them safe: no byte the upstream sent outside the answer to a
request is ever read as the answer to another (RFC 9112 section 6.3: a client must not
process extra data after a response as a separate response).

aiohttp's client protocol parses whatever arrives, whenever it arrives: bytes written
after a complete answer (a body longer than its ``Content-Length``, a body on a HEAD, 204
or 304 answer, a second answer glued to the first, anything written later on an idle
connection) are queued as the next answer, or held half-parsed in the parser. The next
request on that connection, another user's, would read them as its own answer: an
attacker's redirect and cookie, or the previous user's page. So
:class:`GuardedResponseHandler`, the protocol of both :class:`proxy.keepalive.KeptConnections`
and the session's :class:`GuardedConnector`:

- is ``idle`` while its connection is kept with no request on it; any byte arriving then
  closes the connection at once, unread (``is_connected()`` is then False, and both pools
  drop it when they come to it);
- reports ``should_close`` when anything is left once the answer was read (queued,
  held by the parser, or an error), so that neither pool keeps it. aiohttp's session
  releases a connection from inside the parser, at the answer's end, before the rest of
  that read is parsed: what that rest leaves behind closes the connection right after.

``ResponseHandler``'s ``_parser``, ``_should_close`` and ``data_received``, the parsers'
state read by :func:`holds_a_message_start` and ``TCPConnector``'s ``_factory``, ``_get``
and ``_release`` are aiohttp's internals: pyproject.toml pins aiohttp to its 3.14 series,
and tests/test_keepalive.py fails loudly if a release changes them.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any, cast

from aiohttp import TCPConnector
from aiohttp.client_proto import ResponseHandler
from aiohttp.client_reqrep import ConnectionKey
from aiohttp.connector import Connection
from aiohttp.http_parser import HttpParser, HttpResponseParserPy
from aiohttp.tracing import Trace


def holds_a_message_start(parser: HttpParser[Any] | None) -> bool:
    """Whether aiohttp's response ``parser``, between two messages, holds the start of
    another one. Only valid once the last message is complete and outside ``feed_data``.
    aiohttp's C parser tells it only through ``feed_eof``, which builds the message it
    started (or raises on it) and returns None when it started none."""
    if parser is None:
        return False
    if isinstance(parser, HttpResponseParserPy):
        return bool(parser._lines or parser._tail)
    try:
        return parser.feed_eof() is not None
    except Exception:
        return True


class GuardedResponseHandler(ResponseHandler):
    """aiohttp's client protocol for a connection that is kept between requests: nothing
    that arrives while it is idle, or after an answer, is read as another answer."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        #: Kept with no request on it: set by the pool that keeps it, cleared by the one
        #: that takes it for a request.
        self.idle = False
        self._parsing = False

    @property
    def should_close(self) -> bool:
        """aiohttp's reasons, plus the start of another message held by the parser."""
        if super().should_close:
            return True
        if self._parsing or not holds_a_message_start(self._parser):
            return False
        self._should_close = True
        return True

    def data_received(self, data: bytes) -> None:
        # Without data, aiohttp resumes parsing what it held: judged after, as any read.
        if self.idle and data:
            self.refuse()
            return
        self._parsing = True
        try:
            super().data_received(data)
        finally:
            self._parsing = False
        # Released by the answer's end inside this read: what followed it is left over.
        if self.idle and self.should_close:
            self.refuse()

    def refuse(self) -> None:
        """Close the connection now, without reading what it holds."""
        self._should_close = True
        self.close()


class GuardedConnector(TCPConnector):
    """aiohttp's connector on :class:`GuardedResponseHandler`: its connections are idle
    while pooled, and one with anything unread is closed, never pooled."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        guarded = functools.partial(GuardedResponseHandler, loop=self._loop)
        self._factory = cast("functools.partial[ResponseHandler]", guarded)

    async def _get(self, key: ConnectionKey, traces: list[Trace]) -> Connection | None:
        connection = await super()._get(key, traces)
        if connection is not None and isinstance(connection.protocol, GuardedResponseHandler):
            connection.protocol.idle = False
        return connection

    def _release(
        self, key: ConnectionKey, protocol: ResponseHandler, *, should_close: bool = False
    ) -> None:
        if isinstance(protocol, GuardedResponseHandler):
            protocol.idle = True
        super()._release(key, protocol, should_close=should_close)
