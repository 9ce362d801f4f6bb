"""request_uri by reference: the fetch rules, the request_uri cache, and the SSRF guard.

SSRF attempts aim at a canary listener on loopback that must see no connection.
Non-loopback addresses are only ever judged by the guard function, never connected to.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from proxy.keyring import Keyring
from proxy.request import obtain
from proxy.request.obtain import is_public_address
from proxy.store import MemoryStore, Store
from tests.conftest import AiohttpClient, AiohttpServer, Legacy
from tests.jar import (
    APP_KEYS,
    Claims,
    client_registry,
    location_params,
    private_key,
    public_jwks,
    sign,
)
from tests.support import RawServer, chunked, http_answer
from tests.test_jar import assert_accepted, assert_refused, authorize


@dataclass
class ObjectHost:
    """A client's request_uri host on loopback: serves objects and counts fetches."""

    objects: dict[str, str] = field(default_factory=dict)
    hits: dict[str, int] = field(default_factory=dict)
    content_type: str = "application/oauth-authz-req+jwt"

    def app(self) -> web.Application:
        async def serve(request: web.Request) -> web.StreamResponse:
            name = request.match_info["name"]
            self.hits[name] = self.hits.get(name, 0) + 1
            if name == "redirect":
                return web.Response(status=302, headers={"Location": "/ro/target"})
            if name == "slow":
                await asyncio.sleep(2)
            if name == "huge":
                return web.Response(body=b"a" * 70_000, content_type=self.content_type)
            if name not in self.objects:
                return web.Response(status=404)
            return web.Response(text=self.objects[name], content_type=self.content_type)

        app = web.Application()
        app.router.add_get("/ro/{name}", serve)
        return app


@pytest.fixture
async def host(aiohttp_server: AiohttpServer) -> tuple[ObjectHost, str]:
    """The object host and its base URL."""
    served = ObjectHost()
    server = await aiohttp_server(served.app())
    return served, str(server.make_url("/ro/"))


@pytest.fixture
async def canary() -> AsyncIterator[dict[str, Any]]:
    """A TCP listener on 127.0.0.1 that counts connections; SSRF tests aim at it."""
    seen = {"connections": 0}

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen["connections"] += 1
        writer.close()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    seen["port"] = server.sockets[0].getsockname()[1]
    yield seen
    server.close()
    await server.wait_closed()


def byref_client(prefix: str) -> dict[str, Any]:
    return {
        "client_id": "byref",
        "jwks": public_jwks(*(private_key(kind) for kind in APP_KEYS)),
        "redirect_uris": ["https://rp.example/cb"],
        "request_uris": [prefix],
    }


async def gateway_with(
    aiohttp_client: AiohttpClient,
    legacy: Legacy,
    store: Store,
    prefix: str,
    **settings: Any,
) -> TestClient[Any, Any]:
    from proxy.app import create_app
    from tests.support import make_settings

    settings.setdefault("request_uri_allow_http", True)
    registry = client_registry(extra_clients=[byref_client(prefix)], **settings)
    app = create_app(
        make_settings(legacy.url, **settings),
        registry=registry,
        keyring=Keyring.throwaway(),
        store=store,
    )
    return await aiohttp_client(app)


async def test_by_reference_is_fetched_once_and_cached(
    aiohttp_client: AiohttpClient, legacy: Legacy, store: Store, host: tuple[ObjectHost, str]
) -> None:
    """The object is fetched, verified and forwarded; a second use comes from the request_uri
    cache (no second fetch) and is refused as a replay."""
    served, base = host
    claims = Claims("byref").build()
    served.objects["one"] = sign(claims, "ES256")
    client = await gateway_with(
        aiohttp_client, legacy, store, base, request_uri_allow_private_networks=True
    )
    response = await authorize(client, client_id="byref", request_uri=base + "one")
    assert_accepted(response, legacy, claims)
    legacy.recorder.requests.clear()
    again = await authorize(client, client_id="byref", request_uri=base + "one")
    await assert_refused(again, legacy, "invalid_request_object", "https://rp.example/cb")
    assert served.hits == {"one": 1}


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("missing", "HTTP 404"),
        ("redirect", "HTTP 302"),
        ("huge", "exceeds"),
        ("slow", "could not be fetched"),
    ],
)
async def test_fetch_failures_are_invalid_request_uri(
    aiohttp_client: AiohttpClient,
    legacy: Legacy,
    store: Store,
    host: tuple[ObjectHost, str],
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    reason: str,
) -> None:
    """404, redirects (never followed), oversized bodies and timeouts are invalid_request_uri."""
    import aiohttp

    monkeypatch.setattr(obtain, "FETCH_TIMEOUT", aiohttp.ClientTimeout(total=0.3))
    served, base = host
    client = await gateway_with(
        aiohttp_client, legacy, store, base, request_uri_allow_private_networks=True
    )
    response = await authorize(client, client_id="byref", request_uri=base + name)
    params = await assert_refused(response, legacy, "invalid_request_uri")
    assert reason in params["error_description"][0]
    assert "target" not in served.hits


async def test_wrong_media_type_is_refused(
    aiohttp_client: AiohttpClient, legacy: Legacy, store: Store, host: tuple[ObjectHost, str]
) -> None:
    """Only application/oauth-authz-req+jwt and application/jwt are accepted."""
    served, base = host
    served.content_type = "application/json"
    served.objects["one"] = sign(Claims("byref").build(), "ES256")
    client = await gateway_with(
        aiohttp_client, legacy, store, base, request_uri_allow_private_networks=True
    )
    response = await authorize(client, client_id="byref", request_uri=base + "one")
    params = await assert_refused(response, legacy, "invalid_request_uri")
    assert "application/json" in params["error_description"][0]


JWT_TYPE = "application/oauth-authz-req+jwt"


def _object_answers() -> dict[str, tuple[list[bytes], bool]]:
    """Hostile or awkward answers carrying a valid object: the parts written (0.3 s apart)
    and whether the connection is then held open."""
    token = sign(Claims("byref").build(), "ES256").encode()
    whole = http_answer(token, JWT_TYPE)
    chunked_head = f"HTTP/1.1 200 OK\r\nContent-Type: {JWT_TYPE}\r\nTransfer-Encoding: chunked"
    first, rest = chunked(token, b"." * 70_000)
    return {
        "declares-10-gb-and-stalls": (
            [http_answer(token, JWT_TYPE, Content_Length="10000000000")],
            True,
        ),
        "stalls-short-of-its-length": (
            [http_answer(token, JWT_TYPE, Content_Length=str(len(token) + 100))],
            True,
        ),
        "cut-short": ([http_answer(token, JWT_TYPE, Content_Length=str(len(token) + 100))], False),
        "chunks-past-the-limit": (
            [chunked_head.encode() + b"\r\n\r\n" + first, rest],
            False,
        ),
        "split-across-segments": ([whole[: len(whole) - 200], whole[-200:]], False),
    }


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("declares-10-gb-and-stalls", "exceeds"),
        ("stalls-short-of-its-length", "could not be fetched"),
        ("cut-short", "could not be fetched"),
        ("chunks-past-the-limit", "exceeds"),
    ],
)
async def test_incomplete_object_body_is_invalid_request_uri(
    aiohttp_client: AiohttpClient,
    legacy: Legacy,
    store: Store,
    raw_server: Callable[..., Awaitable[RawServer]],
    monkeypatch: pytest.MonkeyPatch,
    case: str,
    reason: str,
) -> None:
    """Only a complete body within the limit counts: a valid object followed by a declared
    length over the limit, a stall, a closed connection or more chunks than the limit is
    invalid_request_uri, and nothing reaches the upstream."""
    import aiohttp

    monkeypatch.setattr(obtain, "FETCH_TIMEOUT", aiohttp.ClientTimeout(total=1))
    parts, hold = _object_answers()[case]
    host = await raw_server(parts, pause=0.3, hold=hold)
    client = await gateway_with(
        aiohttp_client, legacy, store, host.url + "/ro/", request_uri_allow_private_networks=True
    )
    response = await asyncio.wait_for(
        authorize(client, client_id="byref", request_uri=host.url + "/ro/x"), 5
    )
    params = await assert_refused(response, legacy, "invalid_request_uri")
    assert reason in params["error_description"][0]


async def test_object_split_across_segments_is_read_whole(
    aiohttp_client: AiohttpClient,
    legacy: Legacy,
    store: Store,
    raw_server: Callable[..., Awaitable[RawServer]],
) -> None:
    """An object whose body arrives in two segments, with a pause between them, is read to
    its end and accepted."""
    parts, _ = _object_answers()["split-across-segments"]
    host = await raw_server(parts, pause=0.3)
    client = await gateway_with(
        aiohttp_client, legacy, store, host.url + "/ro/", request_uri_allow_private_networks=True
    )
    response = await authorize(client, client_id="byref", request_uri=host.url + "/ro/x")
    assert 302 == response.status
    assert "code" in location_params(response)[1]


async def test_one_clients_slow_fetches_never_hold_another_clients(
    aiohttp_client: AiohttpClient, legacy: Legacy, aiohttp_server: AiohttpServer
) -> None:
    """With 110 of one client's request_uri fetches held by its slow host, those beyond the
    per-client bound are invalid_request_uri at once (the upstream sees none of them), and
    another client's fetch from another host is answered at once."""
    from proxy.app import create_app
    from tests.support import make_settings

    release = asyncio.Event()
    held = ObjectHost()

    async def slow(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        held.hits[name] = 1
        await asyncio.wait_for(release.wait(), 10)
        return web.Response(text=held.objects[name], content_type=JWT_TYPE)

    slow_app = web.Application()
    slow_app.router.add_get("/ro/{name}", slow)
    slow_base = str((await aiohttp_server(slow_app)).make_url("/ro/"))
    fast = ObjectHost()
    fast_base = str((await aiohttp_server(fast.app())).make_url("/ro/"))
    other = {**byref_client(fast_base), "client_id": "other-byref"}
    settings = {"request_uri_allow_http": True, "request_uri_allow_private_networks": True}
    app = create_app(
        make_settings(legacy.url, **settings),
        registry=client_registry(extra_clients=[byref_client(slow_base), other], **settings),
        keyring=Keyring.throwaway(),
        store=MemoryStore(),
    )
    client = await aiohttp_client(app)
    # Made after the gateway's store: a memory store remembers only from its start.
    for index in range(110):
        held.objects[str(index)] = sign(Claims("byref").build(), "ES256")
    claims = Claims("other-byref").build()
    fast.objects["one"] = sign(claims, "ES256")
    gateway_url = f"http://127.0.0.1:{client.port}/authorize"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as browser:

        async def use(client_id: str, uri: str) -> aiohttp.ClientResponse:
            params = {"client_id": client_id, "request_uri": uri}
            return await browser.get(gateway_url, params=params, allow_redirects=False)

        slow_uses = [asyncio.create_task(use("byref", slow_base + str(i))) for i in range(110)]
        try:
            done: set[asyncio.Task[aiohttp.ClientResponse]] = set()
            pending = set(slow_uses)
            while len(done) < 110 - obtain.MAX_FETCHES_PER_CLIENT:
                more, pending = await asyncio.wait(
                    pending, timeout=5, return_when=asyncio.FIRST_COMPLETED
                )
                assert more, "the fetches beyond the bound must be refused at once"
                done |= more
            assert 110 - obtain.MAX_FETCHES_PER_CLIENT == len(done)
            for task in done:
                refused = task.result()
                params = await assert_refused(refused, legacy, "invalid_request_uri")
                assert "too many request_uri fetches" in params["error_description"][0]
            for _ in range(100):  # the held fetches reach the slow host
                if len(held.hits) == obtain.MAX_FETCHES_PER_CLIENT:
                    break
                await asyncio.sleep(0.05)
            assert obtain.MAX_FETCHES_PER_CLIENT == len(held.hits)
            response = await asyncio.wait_for(use("other-byref", fast_base + "one"), 5)
            assert_accepted(response, legacy, claims)
        finally:
            release.set()
            await asyncio.gather(*slow_uses, return_exceptions=True)
        assert [302] * obtain.MAX_FETCHES_PER_CLIENT == [task.result().status for task in pending]


@pytest.mark.parametrize(
    "target",
    [
        "http://127.0.0.1:{port}/ro/x",
        "http://localhost:{port}/ro/x",
        "http://2130706433:{port}/ro/x",
        "http://[::ffff:127.0.0.1]:{port}/ro/x",
        "http://[::1]:{port}/ro/x",
        "http://0.0.0.0:{port}/ro/x",
    ],
)
async def test_ssrf_to_non_public_addresses_never_connects(
    aiohttp_client: AiohttpClient, legacy: Legacy, store: Store, canary: dict[str, Any], target: str
) -> None:
    """A request_uri resolving to loopback (in any spelling) is refused before any connection."""
    uri = target.format(port=canary["port"])
    prefix = uri.rsplit("/", 1)[0] + "/"
    client = await gateway_with(aiohttp_client, legacy, store, prefix)
    response = await authorize(client, client_id="byref", request_uri=uri)
    params = await assert_refused(response, legacy, "invalid_request_uri")
    # The decimal spelling does not even resolve here; every other one meets the guard.
    expected = "could not be fetched" if "2130706433" in uri else "non-public"
    assert expected in params["error_description"][0]
    await asyncio.sleep(0.05)
    assert canary["connections"] == 0


@pytest.mark.parametrize(
    ("client_id", "uri", "error", "reason"),
    [
        ("app", "http://rp.example/requests/1", "invalid_request_uri", "https"),
        ("app", "https://rp.example/elsewhere/1", "invalid_request_uri", "registered request_uris"),
        ("app", "https://rp.example.evil.example/requests/1", "invalid_request_uri", "registered"),
        ("app", "https://rp.example/requests/../admin", "invalid_request_uri", "dot segments"),
        ("app", "https://rp.example/requests/%2e%2e/admin", "invalid_request_uri", "dot segments"),
        ("app", "https://user:pw@rp.example/requests/1", "invalid_request_uri", "credentials"),
        ("app", "https://rp.example/requests/" + "a" * 2100, "invalid_request_uri", "too long"),
        ("plain", "https://rp.example/requests/1", "request_uri_not_supported", "no request_uris"),
    ],
)
async def test_request_uri_rules(
    aiohttp_client: AiohttpClient,
    legacy: Legacy,
    store: Store,
    canary: dict[str, Any],
    client_id: str,
    uri: str,
    error: str,
    reason: str,
) -> None:
    """https only, under a registered prefix (origin and path), no tricks; nothing is fetched."""
    from proxy.app import create_app
    from tests.jar import client_registry as registry_of
    from tests.support import make_settings

    app = create_app(
        make_settings(legacy.url),
        registry=registry_of(),
        keyring=Keyring.throwaway(),
        store=store,
    )
    client = await aiohttp_client(app)
    params = await assert_refused(
        await authorize(client, client_id=client_id, request_uri=uri), legacy, error
    )
    assert reason in params["error_description"][0]


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("10.0.0.1", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),
        ("100.64.0.1", False),
        ("127.0.0.1", False),
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("::1", False),
        ("fe80::1", False),
        ("fc00::1", False),
        ("::ffff:10.0.0.1", False),
        ("8.8.8.8", True),
        ("2001:4860:4860::8888", True),
    ],
)
def test_address_guard(address: str, public: bool) -> None:
    """The guard judges private, link-local, loopback, metadata and mapped addresses as non-public
    (judged, never connected to)."""
    assert public == is_public_address(address)
