"""The streaming reverse proxy to the legacy authorization server, and header hygiene.

Every request the gateway does not own goes to ``JARGATE_UPSTREAM_URL`` as it came:
the method, the raw request target (query string byte for byte), the body streamed
(never buffered whole), the client's ``Host``; hop-by-hop headers removed (RFC 9110
§7.6.1) and ``X-Forwarded-*`` set, believing incoming ones only from
``JARGATE_TRUSTED_PROXIES`` (as uvicorn's ProxyHeadersMiddleware does). The answer
comes back as it left the upstream: status, every header (each ``Set-Cookie``), no
redirect followed, no decompression, the body streamed. GET and HEAD without a body to an
``http://`` upstream go out on kept-alive connections (:mod:`proxy.keepalive`), the rest
through one pooled aiohttp session.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import Protocol

import aiohttp
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from .errors import (
    InvalidRequest,
    ServerError,
    UpstreamTimeout,
    UpstreamUnavailable,
    UpstreamUncheckable,
)
from .keepalive import METHODS as KEPT_METHODS
from .keepalive import KeptConnections
from .latency import Latency, upstream_seconds
from .persistence import GuardedConnector
from .settings import Network, Settings

#: RFC 9110 §7.6.1 hop-by-hop fields, plus the non-standard ones proxies still see.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
#: Headers that tell a server where a request came from, or which scheme, host or prefix it
#: was sent to (beyond every ``X-Forwarded-*``): believed only from trusted proxies. Rack,
#: Werkzeug, Spring and IIS/ARR each read some of them.
_FORWARDING = frozenset(
    {
        "forwarded",
        "x-real-ip",
        "x-client-ip",
        "client-ip",
        "true-client-ip",
        "x-cluster-client-ip",
        "x-originating-ip",
        "x-original-forwarded-for",
        "x-original-host",
        "x-host",
        "x-url-scheme",
        "x-scheme",
        "front-end-https",
    }
)
#: Headers that make a server route to another path or method than the request line names
#: (Symfony, IIS, Express method-override; CVE-2018-14773): the gateway routes by the
#: request line, so the upstream must too. Never forwarded, not even from trusted proxies.
_OVERRIDES = frozenset(
    {
        "x-original-url",
        "x-rewrite-url",
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
    }
)
#: aiohttp's client adds these on its own; never when the client did not send them.
_AUTO_HEADERS = ("Accept", "Accept-Encoding", "User-Agent")
#: Methods aiohttp never gives a default Content-Type when they carry no body (for others,
#: POST, PUT, PATCH, it may).
_BODYLESS = frozenset({"GET", "HEAD"})
_CHUNK = 64 * 1024
#: Bytes kept from one chunk to the next when looking for something in a streamed body.
_OVERLAP = 16


def end_to_end(headers: CIMultiDictProxy[str] | CIMultiDict[str]) -> CIMultiDict[str]:
    """A copy of ``headers`` without hop-by-hop fields (including those named in
    ``Connection``). The copy and the removals run in multidict's C code: this runs for
    every proxied request, twice."""
    result = CIMultiDict(headers)
    named = headers.getall("Connection", ())
    drop = HOP_BY_HOP.union(
        token.strip() for value in named for token in value.split(",") if token.strip()
    )
    for name in drop:
        if name in result:
            del result[name]
    return result


def is_trusted(peer: str | None, trusted: tuple[Network, ...]) -> bool:
    """True when the direct peer is one of the configured trusted proxies."""
    if not peer or not trusted:
        return False
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return False
    return any(address in network for network in trusted)


def client_address(request: web.BaseRequest, trusted: tuple[Network, ...]) -> str:
    """The address the request came from: the direct peer, or behind trusted proxies the
    nearest address in ``X-Forwarded-For`` that is not one of them ("" when unknown)."""
    address = request.remote or ""
    if not is_trusted(address, trusted):
        return address
    chain = [
        hop.strip()
        for value in request.headers.getall("X-Forwarded-For", ())
        for hop in value.split(",")
    ]
    for hop in reversed(chain):
        if hop and not is_trusted(hop, trusted):
            return hop
    return address


def address_group(address: str) -> str:
    """The unit a budget counts by: an IPv4 address, or the /64 an IPv6 address is in (one
    subscriber's share)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is None:
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip.ipv4_mapped or ip) if isinstance(ip, ipaddress.IPv6Address) else str(ip)


#: Content codings the gateway can read when it must check an answer (zlib's).
_READABLE_CODINGS = ("gzip", "deflate")


def readable_codings(offered: list[str]) -> str:
    """The browser's ``Accept-Encoding`` narrowed to what the gateway can read."""
    tokens = {
        item.split(";", 1)[0].strip().lower() for value in offered for item in value.split(",")
    }
    kept = [coding for coding in _READABLE_CODINGS if coding in tokens]
    return ", ".join(kept) if kept else "identity"


def _is_forwarding(name: str) -> bool:
    return name.startswith("x-forwarded") or name in _FORWARDING


@lru_cache(maxsize=512)
def _dropped(name: str, peer_trusted: bool) -> bool:
    """Whether a request header named ``name`` stays behind. CGI-style servers read
    ``X_Forwarded_For`` as ``X-Forwarded-For``: a spelling with underscores of a forwarding
    or override header never passes, since the gateway's own header would disagree with it."""
    lowered = name.lower()
    normal = lowered.replace("_", "-")
    if normal in _OVERRIDES or normal in ("expect", "x-forwarded-for"):
        return True  # 100-continue was answered by aiohttp; X-Forwarded-For is rebuilt
    if _is_forwarding(normal):
        return "_" in lowered or not peer_trusted
    return False


def forwarded_request_headers(
    request: web.BaseRequest, trusted: tuple[Network, ...], request_id: str | None = None
) -> CIMultiDict[str]:
    """The headers to send upstream for ``request``."""
    headers = end_to_end(request.headers)
    peer_trusted = is_trusted(request.remote, trusted)
    for name in [name for name in headers if _dropped(name, peer_trusted)]:
        headers.popall(name, None)
    prior = request.headers.getall("X-Forwarded-For", ()) if peer_trusted else ()
    chain = [p.strip() for item in prior for p in item.split(",") if p.strip()]
    if request.remote:
        chain.append(request.remote)
    if chain:
        headers["X-Forwarded-For"] = ", ".join(chain)
    if "X-Forwarded-Proto" not in headers:
        headers["X-Forwarded-Proto"] = request.scheme
    if "X-Forwarded-Host" not in headers and request.host:
        headers["X-Forwarded-Host"] = request.host
    if request_id is not None:
        headers["X-Request-Id"] = request_id
    return headers


def _not_invented(headers: CIMultiDict[str], method: str, body: bool) -> list[str] | None:
    """The headers aiohttp would add on its own that the client did not send: they are
    not invented for it. None when there are none (aiohttp's cheaper path: the usual
    browser request carries them all)."""
    missing = [name for name in _AUTO_HEADERS if name not in headers]
    if (body or method not in _BODYLESS) and "Content-Type" not in headers:
        missing.append("Content-Type")
    return missing or None


class UpstreamAnswer(Protocol):
    """What the gateway reads of an upstream answer: an :class:`aiohttp.ClientResponse`,
    or a :class:`proxy.keepalive.Answer` (the body is aiohttp's stream either way)."""

    @property
    def status(self) -> int: ...
    @property
    def reason(self) -> str | None: ...
    @property
    def headers(self) -> CIMultiDictProxy[str]: ...
    @property
    def content(self) -> aiohttp.StreamReader: ...
    @property
    def content_length(self) -> int | None: ...
    def release(self) -> object: ...


class Upstream:
    """The connections to the upstream, and the relay of its answers."""

    def __init__(self, session: aiohttp.ClientSession, settings: Settings) -> None:
        self.session = session
        self.base = settings.upstream_url
        self.trusted = settings.trusted_proxies
        self.timeout = aiohttp.ClientTimeout(
            total=None,
            connect=settings.upstream_connect_timeout_seconds,
            sock_read=settings.upstream_read_timeout_seconds,
        )
        base = URL(self.base)
        #: GET and HEAD without a body: kept-alive connections, for a plain http:// upstream
        #: (no credentials in the URL, which aiohttp would turn into Basic authentication).
        self.kept = (
            KeptConnections(
                base,
                settings.upstream_connect_timeout_seconds,
                settings.upstream_read_timeout_seconds,
            )
            if base.scheme == "http" and not base.raw_user
            else None
        )
        #: The upstream URL's own path (no trailing slash), before every request target.
        self.prefix = base.raw_path.rstrip("/")
        #: Where each request's time to its answer's head goes (the gateway gives its
        #: metrics' histogram).
        self.latency: Latency = upstream_seconds()

    @staticmethod
    def create_session(settings: Settings) -> aiohttp.ClientSession:
        """The pooled session: no cookie jar (users must never share cookies), no
        decompression, no proxy from the environment; a pooled connection with anything
        unread is closed (:mod:`proxy.persistence`)."""
        return aiohttp.ClientSession(
            connector=GuardedConnector(limit=0, ttl_dns_cache=30),
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            trust_env=False,
        )

    def url_for(self, raw_target: str) -> URL:
        """The upstream URL for a raw request target (path and query, already encoded)."""
        return URL(self.base + raw_target, encoded=True)

    async def open(
        self,
        request: web.BaseRequest,
        *,
        raw_target: str | None = None,
        method: str | None = None,
        with_body: bool = True,
        request_id: str | None = None,
        credentials: bool = True,
        read_body: bytes | None = None,
        scanned: bool = False,
        authorization: str | None = None,
    ) -> UpstreamAnswer:
        """Send ``request`` upstream (optionally to another target or method) and
        return the response with its body not yet read. The caller releases it.
        ``credentials=False`` leaves the client's Authorization and cookies behind (for
        requests the gateway makes on its own behalf). ``read_body``: the body, when the
        gateway has already read it (a POSTed authorization request); else it streams.
        ``scanned``: the answer will be read to be checked, so only content codings the
        gateway can read are asked for. ``authorization``: the Authorization the gateway
        sends instead of the client's (it authenticates the client to the upstream)."""
        headers = forwarded_request_headers(request, self.trusted, request_id)
        if scanned and "Accept-Encoding" in headers:
            headers["Accept-Encoding"] = readable_codings(headers.getall("Accept-Encoding"))
        if not credentials:
            headers.popall("Authorization", None)
            headers.popall("Cookie", None)
        if authorization is not None:
            headers["Authorization"] = authorization
        body: bytes | aiohttp.StreamReader | None = None
        if with_body and read_body is not None:
            body = read_body
            headers["Content-Length"] = str(len(body))
        elif with_body and request.body_exists:
            body = request.content
        if body is None:
            headers.popall("Content-Length", None)
            if not with_body:
                headers.popall("Content-Type", None)
        method = method or request.method
        target = raw_target if raw_target is not None else request.raw_path
        if not target.startswith("/"):
            # An absolute-form target (RFC 9112 §3.2.2) is for forward proxies: a browser
            # never sends one to a site, and its host would not be the upstream's.
            raise InvalidRequest(
                "the request target must be a path (origin-form)", rule="route.target"
            )
        started = time.perf_counter()
        try:
            if body is None and self.kept is not None and method in KEPT_METHODS:
                return await self.kept.request(method, self.prefix + target, headers)
            return await self.session.request(
                method,
                self.url_for(target),
                headers=headers,
                data=body,
                allow_redirects=False,
                timeout=self.timeout,
                compress=None,
                skip_auto_headers=_not_invented(headers, method, body is not None),
            )
        except TimeoutError as exc:
            raise UpstreamTimeout() from exc
        except (aiohttp.ClientError, HttpProcessingError, OSError) as exc:
            raise UpstreamUnavailable() from exc
        finally:
            self.latency.observe(time.perf_counter() - started)

    async def relay(
        self,
        request: web.BaseRequest,
        upstream: UpstreamAnswer,
        extra_headers: Iterable[tuple[str, str]] = (),
        read: bytes | None = None,
        cut: Callable[[bytes], bool] | None = None,
    ) -> web.StreamResponse:
        """Stream the upstream's answer to the client unchanged, ``extra_headers`` added.

        ``read``: the body's start, already read (all of it unless ``cut`` is given: then
        the rest follows, and the connection is cut where ``cut`` finds something in it,
        overlapping chunk boundaries). A body whose length is known and fits in one stream
        chunk is sent with its headers in one write; anything else is streamed."""
        headers = end_to_end(upstream.headers)
        headers.extend(extra_headers)
        bodyless = request.method == "HEAD" or upstream.status in (204, 304)
        if read is not None and cut is None:
            headers.popall("Content-Length", None)
            return web.Response(
                status=upstream.status, reason=upstream.reason, body=read, headers=headers
            )
        length = upstream.content_length
        if read is None and length is not None and length <= _CHUNK and not bodyless:
            try:
                body = await upstream.content.readexactly(length)
            except TimeoutError as exc:
                raise UpstreamTimeout() from exc
            except (aiohttp.ClientError, asyncio.IncompleteReadError) as exc:
                raise UpstreamUnavailable() from exc
            headers.popall("Content-Length", None)
            return web.Response(
                status=upstream.status, reason=upstream.reason, body=body, headers=headers
            )
        response = web.StreamResponse(
            status=upstream.status, reason=upstream.reason, headers=headers
        )
        await response.prepare(request)
        if not bodyless:
            try:
                if read is not None:
                    await response.write(read)
                tail = read[-_OVERLAP:] if read else b""
                async for chunk in upstream.content.iter_chunked(_CHUNK):
                    if cut is not None and cut(tail + chunk):
                        raise UpstreamUncheckable()
                    tail = chunk[-_OVERLAP:]
                    await response.write(chunk)
            except (aiohttp.ClientError, TimeoutError, asyncio.IncompleteReadError, ServerError):
                # Headers are already sent: the only honest signal left is to cut the
                # connection so the client sees a truncated body, not a complete one.
                if request.transport is not None:
                    request.transport.close()
                raise
        await response.write_eof()
        return response

    async def pass_through(
        self, request: web.BaseRequest, request_id: str | None = None
    ) -> web.StreamResponse:
        """Proxy ``request`` unchanged and relay the answer."""
        upstream = await self.open(request, request_id=request_id)
        try:
            return await self.relay(request, upstream)
        finally:
            upstream.release()

    async def reachable(self, within: float = 2.0) -> bool:
        """Readiness: does the upstream answer HTTP at all (any status)?"""
        return await self.why_unreachable(within) is None

    async def why_unreachable(self, within: float = 2.0) -> str | None:
        """None when the upstream answers HTTP (any status); else what failed: its name
        (DNS), the connection (refused), or the answer (timeout)."""
        try:
            async with self.session.head(
                self.base + "/",
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=within),
            ):
                return None
        except aiohttp.ClientConnectorDNSError:
            return "its host name does not resolve (DNS)"
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, ConnectionRefusedError):
                return "the connection was refused (nothing listens there)"
            return f"the connection failed ({exc.os_error.strerror or type(exc.os_error).__name__})"
        except TimeoutError:
            return f"no answer within {within:g} s (timeout)"
        except (aiohttp.ClientError, OSError) as exc:
            return f"the answer could not be read ({type(exc).__name__})"
