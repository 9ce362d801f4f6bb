"""Client connections: a bound on request heads and idle keep-alive, and no Server banner.

aiohttp's :class:`~aiohttp.web_protocol.RequestHandler` keeps one timer per connection,
armed at its opening and after each answer (``keepalive_timeout``), and closes the
connection when it fires while no request is being handled. A head that never completes
leaves it waiting for that timer. :class:`GatewayRunner` serves with
:class:`GatewayRequestHandler`, which moves the timer to the request head timeout at the
connection's opening and, when bytes that do not complete a head arrive on an idle
kept-alive connection, brings it forward to the head timeout from then (a head that arrives
whole costs nothing more); after each answer the idle connection gets the keep-alive
timeout again. Bytes that arrive while the previous request is still being answered are
not seen as idle ones: a head begun then gets what an idle connection gets, the rest of the
keep-alive timeout. Bodies are not bounded here.

aiohttp writes ``Server: Python/x.y aiohttp/x.y.z`` on every answer that has no ``Server``
field. :func:`drop_server_banner` (an ``on_response_prepare`` handler of each app) removes
it from every answer the gateway writes, and leaves an upstream's own ``Server`` relayed
as it came; :class:`GatewayRequestHandler` does the same for the answers aiohttp writes
before any app sees the request (400 for a malformed request line or oversized header).

``_next_keepalive_close_time``, ``_keepalive_handle``, ``_process_keepalive``, ``_waiter``,
``Server._kwargs`` and ``StreamResponse._headers`` are aiohttp internals: pyproject.toml
pins aiohttp to its 3.14 series, a renamed slot raises at the first connection, and
tests/test_serving.py fails loudly if a release changes what they do.
"""

from __future__ import annotations

import asyncio
import logging
from http import HTTPStatus
from typing import Any

from aiohttp import hdrs, web
from aiohttp.http import SERVER_SOFTWARE
from aiohttp.web_protocol import RequestHandler
from multidict import CIMultiDict

from .settings import Settings

log = logging.getLogger("jargate.serving")


async def drop_server_banner(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: no ``Server`` field unless an upstream sent it.

    aiohttp has set its banner (its own string object) just before this signal; an
    upstream's field is a string parsed from the wire, a different object even when its
    text is the same, so it stays exactly as relayed."""
    if response.headers.get(hdrs.SERVER) is SERVER_SOFTWARE:
        del response.headers[hdrs.SERVER]


class _HeadersWithoutBanner(CIMultiDict[str]):
    """Header fields that never take aiohttp's default ``Server`` banner."""

    def setdefault(self, key: str, default: Any = None) -> Any:
        if default is SERVER_SOFTWARE:
            return self.get(key)
        return super().setdefault(key, default)


class GatewayRequestHandler(RequestHandler):
    """aiohttp's request handler with a request head timeout and no banner on its own
    error answers."""

    __slots__ = ("_request_head_timeout",)

    def __init__(self, manager: web.Server, *, request_head_timeout: float, **kwargs: Any):
        super().__init__(manager, **kwargs)
        self._request_head_timeout = request_head_timeout

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._close_if_idle_at(self._loop.time() + self._request_head_timeout)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            # Still no request in hand: these bytes began a head that is not complete.
            deadline = self._loop.time() + self._request_head_timeout
            if deadline < self._next_keepalive_close_time:
                self._close_if_idle_at(deadline)

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        # aiohttp would log the exception and echo the malformed bytes back: a request line
        # or header field may hold a code, a token or a cookie. Only the kind is said.
        log.warning(
            "malformed request refused",
            extra={"status": status, "kind": type(exc).__name__ if exc else None},
        )
        if request.writer.output_size > 0:
            raise ConnectionError("the answer has begun: the connection is closed instead")
        answer = web.Response(
            status=status, text=f"{status} {HTTPStatus(status).phrase}\n", content_type="text/plain"
        )
        answer.force_close()
        # Written before routing: no app's on_response_prepare runs for it.
        answer._headers = _HeadersWithoutBanner(answer.headers)
        return answer

    def _close_if_idle_at(self, when: float) -> None:
        """Close the connection at ``when`` if no request is being handled then."""
        self._next_keepalive_close_time = when
        if self._keepalive_handle is not None:
            self._keepalive_handle.cancel()
        self._keepalive_handle = self._loop.call_at(when, self._process_keepalive)


class GatewayServer(web.Server):
    """aiohttp's low-level server, making :class:`GatewayRequestHandler` connections."""

    def __init__(self, *args: Any, request_head_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.request_head_timeout = request_head_timeout

    def __call__(self) -> RequestHandler:
        return GatewayRequestHandler(
            self, loop=self._loop, request_head_timeout=self.request_head_timeout, **self._kwargs
        )


class GatewayRunner(web.AppRunner):
    """An :class:`aiohttp.web.AppRunner` whose connections are :class:`GatewayRequestHandler`:
    ``request_head_timeout`` to complete each request head, ``keepalive_timeout`` of
    idleness between requests."""

    __slots__ = ("_request_head_timeout",)

    def __init__(
        self,
        app: web.Application,
        *,
        request_head_timeout: float,
        keepalive_timeout: float,
        **kwargs: Any,
    ) -> None:
        super().__init__(app, keepalive_timeout=keepalive_timeout, **kwargs)
        self._request_head_timeout = request_head_timeout

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        return GatewayServer(
            server.request_handler,
            request_factory=server.request_factory,
            handler_cancellation=server.handler_cancellation,
            loop=asyncio.get_running_loop(),
            request_head_timeout=self._request_head_timeout,
            **server._kwargs,
        )


def gateway_runner(app: web.Application, settings: Settings, **kwargs: Any) -> GatewayRunner:
    """The runner of one of the gateway's apps: the settings' connection bounds, and no
    aiohttp access log (it would print query strings)."""
    return GatewayRunner(
        app,
        request_head_timeout=settings.request_head_timeout_seconds,
        keepalive_timeout=settings.keepalive_timeout_seconds,
        access_log=None,
        **kwargs,
    )
