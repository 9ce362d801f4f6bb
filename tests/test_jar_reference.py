"""request_uri by reference: the fetch rules, the request_uri cache, and the SSRF guard.

SSRF attempts aim at a canary listener on loopback that must see no connection.
Non-loopback addresses are only ever judged by the guard function, never connected to.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from proxy.keyring import Keyring
from proxy.request import obtain
from proxy.request.obtain import is_public_address
from proxy.store import Store
from tests.conftest import AiohttpClient, AiohttpServer, Legacy
from tests.jar import APP_KEYS, Claims, client_registry, private_key, public_jwks, sign
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
