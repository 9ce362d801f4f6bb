"""Discovery where the upstream keeps it, served wherever a client looks, and RFC 9207's
claim only where it is true.

Each upstream here is a small aiohttp app that serves one OpenID Connect document at one
path (django-oauth-toolkit's ``/o/``, Keycloak's ``/realms/NAME/``, an operator's own) and
records what it is asked.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from proxy.app import create_app
from proxy.keyring import Keyring
from proxy.store import MemoryStore
from tests.conftest import AiohttpClient, AiohttpServer, GatewayFactory, Legacy
from tests.support import make_settings


def upstream_app(at: str, issuer: str, **fields: Any) -> tuple[web.Application, list[str]]:
    """An upstream whose only document is at ``at``; the paths it was asked."""
    asked: list[str] = []

    async def anything(request: web.Request) -> web.Response:
        asked.append(request.path)
        if request.path != at:
            return web.Response(status=404)
        document = {
            "issuer": issuer,
            "authorization_endpoint": issuer + "/authorize/",
            "token_endpoint": issuer + "/token/",
            "jwks_uri": issuer + "/jwks/",
            "response_types_supported": ["code"],
            **fields,
        }
        return web.json_response(document)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", anything)
    return app, asked


async def gateway(
    aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer, at: str, **settings: Any
) -> tuple[TestClient[Any, Any], list[str], str]:
    issuer = settings.pop("issuer", "http://127.0.0.1:8000")
    app, asked = upstream_app(at, issuer, **settings.pop("fields", {}))
    upstream = await aiohttp_server(app)
    settings.setdefault("token_path", None)
    full = make_settings(str(upstream.make_url("")).rstrip("/"), issuer=issuer, **settings)
    client = await aiohttp_client(
        create_app(full, keyring=Keyring.throwaway(["ES256"]), store=MemoryStore())
    )
    return client, asked, issuer


async def served(client: TestClient[Any, Any], path: str) -> dict[str, Any]:
    response = await client.get(path)
    assert 200 == response.status, path
    document: dict[str, Any] = await response.json()
    assert document["request_parameter_supported"] is True, path
    return document


async def test_document_under_the_authorization_endpoints_parent(
    aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer
) -> None:
    """django-oauth-toolkit keeps its document under /o/: found there at start, and the
    rewritten document is served at the root, at /o/ and as RFC 8414's document."""
    client, asked, issuer = await gateway(
        aiohttp_client,
        aiohttp_server,
        "/o/.well-known/openid-configuration",
        authorization_path="/o/authorize/",
    )
    for path in (
        "/.well-known/openid-configuration",
        "/.well-known/oauth-authorization-server",
        "/o/.well-known/openid-configuration",
        "/o/.well-known/oauth-authorization-server",
    ):
        document = await served(client, path)
        assert (issuer + "/token/", issuer + "/par") == (
            document["token_endpoint"],
            document["pushed_authorization_request_endpoint"],
        )
    # Once at start (the token endpoint's path), once when first served, then cached.
    assert 2 == asked.count("/o/.well-known/openid-configuration")


async def test_document_under_the_issuers_path(
    aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer
) -> None:
    """Keycloak keeps its document under the issuer's path (/realms/NAME/): served there,
    at the root, and at RFC 8414's path-inserted location."""
    client, _, issuer = await gateway(
        aiohttp_client,
        aiohttp_server,
        "/realms/bank/.well-known/openid-configuration",
        issuer="http://127.0.0.1:8000/realms/bank",
    )
    for path in (
        "/realms/bank/.well-known/openid-configuration",
        "/.well-known/oauth-authorization-server/realms/bank",
        "/.well-known/openid-configuration",
    ):
        assert issuer == (await served(client, path))["issuer"]


async def test_document_at_the_configured_path(
    aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer
) -> None:
    """JARGATE_UPSTREAM_DISCOVERY_PATH names a place no convention would find; it is asked
    first and served there and at the root."""
    client, asked, issuer = await gateway(
        aiohttp_client,
        aiohttp_server,
        "/plugins/oidc/config.json",
        upstream_discovery_path="/plugins/oidc/config.json",
    )
    assert (
        issuer + "/token/" == (await served(client, "/plugins/oidc/config.json"))["token_endpoint"]
    )
    assert (
        issuer + "/token/"
        == (await served(client, "/.well-known/openid-configuration"))["token_endpoint"]
    )
    assert "/plugins/oidc/config.json" == asked[0]


async def test_built_document_points_at_the_merged_keys(
    aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer
) -> None:
    """No document anywhere: the built one has RFC 8414's token_endpoint and a jwks_uri
    where the upstream's keys are (merged with the gateway's), not the gateway's alone."""
    client, _, issuer = await gateway(
        aiohttp_client, aiohttp_server, "/nowhere", upstream_jwks_path="/jwks/"
    )
    document = await served(client, "/.well-known/openid-configuration")
    assert (issuer + "/token", issuer + "/jwks/") == (
        document["token_endpoint"],
        document["jwks_uri"],
    )


@pytest.mark.parametrize(
    ("strict", "upstream_claims", "claimed"),
    [(False, False, False), (True, False, True), (False, True, True)],
    ids=["unregistered-pass-through", "registered-only", "upstream-adds-iss-itself"],
)
async def test_iss_response_parameter_is_claimed_only_when_true(
    aiohttp_client: AiohttpClient,
    aiohttp_server: AiohttpServer,
    strict: bool,
    upstream_claims: bool,
    claimed: bool,
) -> None:
    """RFC 9207 section 2.4: a client must reject responses without iss when discovery
    claims them; the claim is made only when every response through the gateway has iss
    (registered clients only, or an upstream that adds it for the rest)."""
    fields = {"authorization_response_iss_parameter_supported": True} if upstream_claims else {}
    client, _, _ = await gateway(
        aiohttp_client,
        aiohttp_server,
        "/.well-known/openid-configuration",
        require_registered_clients=strict,
        fields=fields,
    )
    document = await served(client, "/.well-known/openid-configuration")
    assert claimed is document["authorization_response_iss_parameter_supported"]


async def test_registered_clients_only_refuses_the_rest(
    gateway: GatewayFactory, legacy: Legacy
) -> None:
    """With JARGATE_REQUIRE_REGISTERED_CLIENTS an unknown client is refused on the gateway's
    page (unauthorized_client), never passed through."""
    client = await gateway(require_registered_clients=True)
    response = await client.get(
        "/authorize?client_id=stranger&response_type=code&redirect_uri=https://s.example/cb",
        allow_redirects=False,
    )
    body = json.loads(await response.text())
    assert (400, "unauthorized_client") == (response.status, body["error"])
    assert "Location" not in response.headers
    assert [] == legacy.recorder.requests
