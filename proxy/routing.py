"""The gateway's own paths, in every spelling a server stack behind it might route the same.

A reverse proxy that owns a path must own every spelling of it the upstream would treat as
that path, or a refused request reaches the upstream by another door. Servers disagree on
what is the same path: servlet containers drop ``;`` parameters, nginx merges slashes,
WSGI servers percent-decode ``%2F`` into ``/``, IIS and Express route case-insensitively,
Windows ignores trailing dots and spaces, Spring and Rails match format suffixes
(``/authorize.json``). :func:`route_key` folds all of these at once; a request whose key
is an owned path's key is the gateway's, whatever the method (unsupported ones get 405
and are never forwarded). Everything else is passed through to the upstream.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import unquote_to_bytes

from aiohttp import web

from .errors import GatewayError, InvalidRequest, MethodNotAllowed

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: Where the dispatcher leaves the name of the route it chose (metrics and logs).
ROUTE: web.RequestKey[str] = web.RequestKey("route")
#: Set for a back-channel route: its answers go to a program, JSON only (PAR, token).
BACK_CHANNEL: web.RequestKey[bool] = web.RequestKey("back_channel")
#: How an error becomes a response (:func:`proxy.boundary.answer`).
Answer = Callable[[web.Request, GatewayError], Awaitable[web.StreamResponse]]
#: The route name of everything passed through to the upstream.
PASS_THROUGH = "proxy"  # noqa: S105 - a route name
#: Percent-decoding rounds: servers and proxies in front of them may each decode once.
_DECODE_ROUNDS = 3
_CONTROL = frozenset(chr(c) for c in (*range(0x20), 0x7F))


def route_key(raw_path: str) -> str:
    """The path as the most lenient server stack would route it (see the module docstring).

    ``raw_path`` is the request target's path as sent (percent-encoded), its query ignored.
    Short paths are cached: every request asks, and the cache is bounded."""
    path = raw_path.partition("?")[0]
    return _route_key_cached(path) if len(path) <= 256 else _route_key(path)


@lru_cache(maxsize=2048)
def _route_key_cached(raw_path: str) -> str:
    return _route_key(raw_path)


def _route_key(path: str) -> str:
    for _ in range(_DECODE_ROUNDS):
        if "%" not in path:
            break
        path = _decode(path)
    # C-based servers end a path at NUL; no sane path holds a control character.
    for index, char in enumerate(path):
        if char in _CONTROL:
            path = path[:index]
            break
    path = unicodedata.normalize("NFKC", path.replace("\\", "/")).casefold()
    segments: list[str] = []
    for raw in path.split("/"):
        segment = raw.split(";", 1)[0]
        if segment in ("", "."):
            continue
        if segment == "..":
            if segments:
                segments.pop()
            continue
        # Windows ignores trailing dots and spaces; a segment of only those is empty.
        segment = segment.rstrip(". \t")
        if segment:
            segments.append(segment)
    if segments and not segments[-1].startswith("."):
        # Format suffixes: /authorize.json routes to /authorize in Spring and Rails.
        segments[-1] = segments[-1].split(".", 1)[0]
    return "/" + "/".join(segments)


def _decode(path: str) -> str:
    raw = unquote_to_bytes(path)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


@dataclass(frozen=True, slots=True)
class Route:
    """One of the gateway's own paths: its name (for metrics), the methods it answers and
    its handler. GET routes answer HEAD too unless ``head`` is False."""

    name: str
    methods: frozenset[str]
    handler: Handler
    head: bool = True
    back_channel: bool = False

    def allows(self, method: str) -> bool:
        """True when the route answers ``method`` itself."""
        return method in self.methods or (method == "HEAD" and self.head and "GET" in self.methods)

    @property
    def allow_header(self) -> str:
        """The ``Allow`` header of a 405 (RFC 9110 section 15.5.6)."""
        methods = set(self.methods) | ({"HEAD"} if self.head and "GET" in self.methods else set())
        return ", ".join(sorted(methods))


class Router:
    """Sends each request to the route its path's key names, or to the pass-through."""

    def __init__(
        self,
        routes: Iterable[tuple[str, Route]],
        pass_through: Handler,
        answer: Answer,
        unexpected: Handler,
    ) -> None:
        self._routes: dict[str, Route] = {}
        for path, route in routes:
            self.own(path, route)
        self._pass_through = pass_through
        self._answer = answer
        self._unexpected = unexpected

    def own(self, path: str, route: Route) -> None:
        """Answer ``path``, in every spelling, with ``route`` (at start, before serving)."""
        key = route_key(path)
        if key in self._routes:
            raise ValueError(f"{path!r} is another spelling of an owned path")
        self._routes[key] = route

    def route_for(self, raw_path: str) -> Route | None:
        """The owned route a raw path reaches, or None (the upstream's)."""
        return self._routes.get(route_key(raw_path))

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        """The one handler aiohttp calls: the owned route, a 405, or the pass-through; any
        error they raise is answered here, the error boundary."""
        try:
            return await self._route(request)
        except GatewayError as err:
            return await self._answer(request, err)
        except web.HTTPException:
            raise
        except Exception:
            return await self._unexpected(request)

    async def _route(self, request: web.Request) -> web.StreamResponse:
        target = request.raw_path
        if not target.startswith("/"):
            # An absolute-form target (RFC 9112 section 3.2.2) is for forward proxies.
            raise InvalidRequest(
                "the request target must be a path (origin-form)", rule="route.target"
            )
        route = self.route_for(target)
        if route is None:
            request[ROUTE] = PASS_THROUGH
            return await self._pass_through(request)
        request[ROUTE] = route.name
        request[BACK_CHANNEL] = route.back_channel
        if not route.allows(request.method):
            raise MethodNotAllowed(
                f"method {request.method} is not allowed here", allow=route.allow_header
            )
        return await route.handler(request)
