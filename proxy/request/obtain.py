"""Obtaining the request object: by value, by reference, or from a PAR handle.

By reference (RFC 9101 §5.2, §10.4) the gateway fetches the object itself, so it guards
against being turned into a request forgery tool (SSRF): only ``https`` (unless
``JARGATE_REQUEST_URI_ALLOW_HTTP``), only under one of the client's registered
``request_uris`` prefixes, never to loopback, private, link-local or otherwise
non-public addresses after DNS resolution, checked again on the connection itself so
DNS rebinding cannot slip past (unless ``JARGATE_REQUEST_URI_ALLOW_PRIVATE_NETWORKS``),
no redirects, bounded size and time, and only the JWT media types. Fetched objects are
cached in the store for a short time (the request_uri cache).

One client's slow host cannot hold the fetches of others: each client has at most
:data:`MAX_FETCHES_PER_CLIENT` fetches in progress (beyond that a fetch is refused at once,
never queued), each host at most :data:`CONNECTIONS_PER_HOST` connections, twice what one
client may hold, and there is no limit across hosts to wait for.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from proxy.bodies import BodyTooLarge, read_body
from proxy.clients import RegisteredClient
from proxy.errors import InvalidRequestObject, InvalidRequestUri, RequestUriNotSupported
from proxy.persistence import GuardedConnector
from proxy.settings import Settings
from proxy.store import Store, hashed_key

from .pushed import PAR_URN_PREFIX

ACCEPTED_MEDIA_TYPES = frozenset({"application/oauth-authz-req+jwt", "application/jwt"})
MAX_REQUEST_URI_LENGTH = 2048
REQUEST_URI_CACHE_SECONDS = 60
#: The whole fetch, and the socket connect (``connect`` would count waiting for a
#: pooled connection too).
FETCH_TIMEOUT = aiohttp.ClientTimeout(total=5, sock_connect=3)
MAX_FETCHES_PER_CLIENT = 10
CONNECTIONS_PER_HOST = 2 * MAX_FETCHES_PER_CLIENT


def check_request_object_size(token: str, limit: int) -> str:
    """Refuse request objects larger than ``limit`` bytes, before any parsing."""
    if len(token) > limit:
        raise InvalidRequestObject(
            f"the request object is larger than {limit} bytes", rule="request_object.size"
        )
    return token


def is_public_address(address: str) -> bool:
    """False for loopback, private, link-local, multicast, reserved and unspecified addresses
    (IPv4-mapped IPv6 addresses are judged by the IPv4 address they carry)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_unspecified)


class GuardedResolver(AbstractResolver):
    """A resolver that refuses non-public addresses: the SSRF guard sits on the connection
    itself, so a name that resolves differently the second time cannot slip past."""

    def __init__(self, allow_private: bool) -> None:
        self._inner = DefaultResolver()
        self._allow_private = allow_private

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if not self._allow_private:
            for result in results:
                if not is_public_address(result["host"]):
                    raise InvalidRequestUri(
                        "the request_uri resolves to a non-public address",
                        rule="request_uri.address",
                    )
        return results

    async def close(self) -> None:
        await self._inner.close()


def create_fetch_session(settings: Settings) -> aiohttp.ClientSession:
    """The session for request_uri fetches: guarded resolver, no cookies, no env proxies,
    connections bounded per host only."""
    connector = GuardedConnector(
        resolver=GuardedResolver(settings.request_uri_allow_private_networks),
        use_dns_cache=False,
        limit=0,
        limit_per_host=CONNECTIONS_PER_HOST,
    )
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        trust_env=False,
        timeout=FETCH_TIMEOUT,
    )


class RequestUriFetches:
    """The fetch session, and each client's request_uri fetches in progress."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session
        self._in_progress: dict[str, int] = {}

    @contextmanager
    def slot(self, client_id: str) -> Iterator[None]:
        """One of the client's :data:`MAX_FETCHES_PER_CLIENT` fetches, or
        ``invalid_request_uri`` at once when they are all in progress."""
        count = self._in_progress.get(client_id, 0)
        if count >= MAX_FETCHES_PER_CLIENT:
            raise InvalidRequestUri(
                "too many request_uri fetches of this client are in progress",
                rule="request_uri.fetches",
            )
        self._in_progress[client_id] = count + 1
        try:
            yield
        finally:
            remaining = self._in_progress[client_id] - 1
            if remaining:
                self._in_progress[client_id] = remaining
            else:
                del self._in_progress[client_id]


def check_request_uri(uri: str, client: RegisteredClient, settings: Settings) -> None:
    """The rules a request_uri must pass before anything is fetched."""
    prefixes = client.meta.request_uris
    if not prefixes:
        raise RequestUriNotSupported(
            "this client registered no request_uris", rule="request_uri.not_registered"
        )
    if len(uri) > MAX_REQUEST_URI_LENGTH:
        raise InvalidRequestUri("the request_uri is too long", rule="request_uri.length")
    parts = urlsplit(uri)
    allowed_schemes = {"https", "http"} if settings.request_uri_allow_http else {"https"}
    if parts.scheme not in allowed_schemes:
        raise InvalidRequestUri("the request_uri must be an https URL", rule="request_uri.scheme")
    if not parts.hostname or parts.username is not None or parts.password is not None:
        raise InvalidRequestUri(
            "the request_uri must name a host and no credentials", rule="request_uri.host"
        )
    segments = parts.path.lower().replace("%2e", ".").split("/")
    if "." in segments or ".." in segments or "\\" in uri:
        raise InvalidRequestUri(
            "the request_uri must not contain dot segments", rule="request_uri.dot_segments"
        )
    for prefix in prefixes:
        allowed = urlsplit(prefix)
        same_origin = (parts.scheme, parts.netloc.lower()) == (
            allowed.scheme,
            allowed.netloc.lower(),
        )
        if same_origin and uri.startswith(prefix) and parts.path.startswith(allowed.path):
            break
    else:
        raise InvalidRequestUri(
            "the request_uri is not under one of the client's registered request_uris",
            rule="request_uri.prefix",
        )
    host = parts.hostname
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        return
    if not settings.request_uri_allow_private_networks and not is_public_address(str(literal)):
        raise InvalidRequestUri(
            "the request_uri points at a non-public address", rule="request_uri.address"
        )


async def fetch_request_object(
    uri: str,
    client: RegisteredClient,
    settings: Settings,
    fetches: RequestUriFetches,
    store: Store,
) -> str:
    """The request object behind ``uri`` (RFC 9101 §5.2.3), from the cache or fetched once."""
    check_request_uri(uri, client, settings)
    cache_key = hashed_key("ruri", client.client_id, uri)
    cached = await store.peek(cache_key)
    if cached is not None:
        return cached
    with fetches.slot(client.client_id):
        body = await _fetch(uri, fetches.session, settings.max_request_object_bytes)
    try:
        token = body.decode("ascii").strip()
    except UnicodeDecodeError:
        raise InvalidRequestUri(
            "the request_uri did not answer a JWT", rule="request_uri.content"
        ) from None
    await store.put(cache_key, token, REQUEST_URI_CACHE_SECONDS)
    return token


async def _fetch(uri: str, session: aiohttp.ClientSession, limit: int) -> bytes:
    """The whole body behind ``uri``: 200, a JWT media type, complete, at most ``limit``."""
    try:
        async with session.get(
            uri.split("#", 1)[0],
            allow_redirects=False,
            headers={"Accept": "application/oauth-authz-req+jwt, application/jwt"},
        ) as response:
            if response.status != 200:
                raise InvalidRequestUri(
                    f"fetching the request_uri answered HTTP {response.status}",
                    rule="request_uri.status",
                )
            if response.content_type not in ACCEPTED_MEDIA_TYPES:
                raise InvalidRequestUri(
                    "the request_uri must answer application/oauth-authz-req+jwt, "
                    f"not {response.content_type!r}",
                    rule="request_uri.content_type",
                )
            return await read_body(response, limit)
    except InvalidRequestUri:
        raise
    except BodyTooLarge:
        raise InvalidRequestUri(
            f"the request object at request_uri exceeds {limit} bytes", rule="request_uri.size"
        ) from None
    except (TimeoutError, aiohttp.ClientError, OSError, UnicodeError):
        raise InvalidRequestUri(
            "the request_uri could not be fetched", rule="request_uri.fetch"
        ) from None


def describe_source(params: dict[str, Any]) -> str:
    """How the request object came: ``value``, ``par``, ``reference`` or ``plain``."""
    if "request" in params:
        return "value"
    uri = params.get("request_uri")
    if uri is None:
        return "plain"
    return "par" if uri.startswith(PAR_URN_PREFIX) else "reference"
