"""Discovery documents and published keys."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from proxy import metadata
from proxy.algorithms import SIGNING_ALGS
from proxy.app import create_app
from proxy.keyring import Keyring
from proxy.metadata import DISCOVERY_PATHS
from proxy.store import MemoryStore
from tests.conftest import AiohttpClient, AiohttpServer, Legacy
from tests.jar import ISSUER
from tests.legacy_upstream import Received
from tests.support import REPO, RawServer, clean_env, http_answer, make_settings, raw_url

JWT_MODES = ["query.jwt", "fragment.jwt", "form_post.jwt", "jwt"]
RawServerFactory = Callable[..., Awaitable[RawServer]]


@pytest.fixture(scope="module")
def keyring() -> Keyring:
    return Keyring.throwaway(["PS256", "ECDH-ES"])


async def gateway(
    aiohttp_client: AiohttpClient, upstream_url: str, keyring: Keyring, **settings: Any
) -> TestClient[Any, Any]:
    app = create_app(make_settings(upstream_url, **settings), keyring=keyring, store=MemoryStore())
    return await aiohttp_client(app)


@pytest.mark.parametrize(
    "path", ["/.well-known/openid-configuration", "/.well-known/oauth-authorization-server"]
)
async def test_upstream_document_is_augmented(
    aiohttp_client: AiohttpClient, legacy: Legacy, keyring: Keyring, path: str
) -> None:
    """The gateway sets what it really supports; the upstream's other fields are untouched."""
    client = await gateway(aiohttp_client, legacy.url, keyring, upstream_jwks_path="/jwks")
    document = await (await client.get(path)).json()
    assert "http://127.0.0.1:8000/token" == document["token_endpoint"]
    assert "http://127.0.0.1:8000/jwks" == document["jwks_uri"]
    assert ["code", "id_token", "code id_token", "token"] == document["response_types_supported"]
    assert document["request_parameter_supported"] is True
    assert document["request_uri_parameter_supported"] is True
    assert document["require_request_uri_registration"] is True
    # RFC 9207 section 2.4: not claimed while unregistered clients pass through without it.
    assert document["authorization_response_iss_parameter_supported"] is False
    assert list(SIGNING_ALGS) == document["request_object_signing_alg_values_supported"]
    assert {"ES256", "RS256", "PS256"} == set(
        document["authorization_signing_alg_values_supported"]
    )
    assert {"RSA-OAEP-256", "ECDH-ES"} == set(
        document["request_object_encryption_alg_values_supported"]
    )
    assert ["query", "fragment", "form_post", *sorted(JWT_MODES)] == document[
        "response_modes_supported"
    ]
    assert "http://127.0.0.1:8000/par" == document["pushed_authorization_request_endpoint"]
    assert document["require_pushed_authorization_requests"] is False
    for name, value in document.items():
        if name.endswith("_alg_values_supported"):
            assert "none" not in value, name
            assert not any(alg.startswith("HS") for alg in value), name


async def test_document_built_when_upstream_has_none(
    aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer, keyring: Keyring
) -> None:
    """No upstream document anywhere: one is built from the settings with what RFC 8414
    requires (a token endpoint), pointing at the gateway's keys."""
    upstream = await aiohttp_server(web.Application())
    client = await gateway(aiohttp_client, str(upstream.make_url("")).rstrip("/"), keyring)
    response = await client.get("/.well-known/oauth-authorization-server")
    document = await response.json()
    assert "http://127.0.0.1:8000" == document["issuer"]
    assert "http://127.0.0.1:8000/authorize" == document["authorization_endpoint"]
    assert "http://127.0.0.1:8000/token" == document["token_endpoint"]
    assert "http://127.0.0.1:8000/.well-known/jargate/jwks.json" == document["jwks_uri"]
    assert document["request_uri_parameter_supported"] is True
    assert set(JWT_MODES) <= set(document["response_modes_supported"])


async def test_discovery_is_cached_briefly(
    aiohttp_client: AiohttpClient, legacy: Legacy, keyring: Keyring
) -> None:
    """A second discovery request within the cache time does not ask the upstream again."""
    client = await gateway(aiohttp_client, legacy.url, keyring)
    for _ in range(3):
        assert 200 == (await client.get("/.well-known/openid-configuration")).status
    assert 1 == legacy.recorder.paths().count("/.well-known/openid-configuration")


async def test_gateway_jwks(
    aiohttp_client: AiohttpClient, legacy: Legacy, keyring: Keyring
) -> None:
    """The public keys at JARGATE_JWKS_PATH: every key, public halves only."""
    client = await gateway(aiohttp_client, legacy.url, keyring)
    jwks = await (await client.get("/.well-known/jargate/jwks.json")).json()
    assert [k.kid for k in keyring.keys] == [k["kid"] for k in jwks["keys"]]
    assert not any("d" in key for key in jwks["keys"])
    assert [] == legacy.recorder.requests


async def test_upstream_jwks_merge(
    aiohttp_client: AiohttpClient, legacy: Legacy, keyring: Keyring
) -> None:
    """At JARGATE_UPSTREAM_JWKS_PATH the upstream's keys come first, the gateway's follow."""
    client = await gateway(aiohttp_client, legacy.url, keyring, upstream_jwks_path="/jwks")
    jwks = await (await client.get("/jwks")).json()
    kids = [key["kid"] for key in jwks["keys"]]
    assert 1 + len(keyring.keys) == len(kids)
    assert kids[1:] == [k.kid for k in keyring.keys]
    assert ["/jwks"] == legacy.recorder.paths()


FORGED = [
    ({"Host": "evil.example"}, ()),
    ({"X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https"}, ()),
    ({"X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https"}, ("127.0.0.1/32",)),
]
FORGED_IDS = ["host", "forwarded-host-untrusted-peer", "forwarded-host-trusted-peer"]
#: Sent along with the forged headers: none of it may reach the upstream.
CREDENTIALS = {"Cookie": "sid=victim", "Authorization": "Bearer victim"}


def assert_asked_as_issuer(received: Received, path: str) -> None:
    """The upstream got ``path`` with the issuer's Host and forwarding headers, nothing else
    from the request that caused the fetch."""
    assert path == received.raw_path
    assert "127.0.0.1:8000" == received.headers["Host"]
    assert "127.0.0.1:8000" == received.headers["X-Forwarded-Host"]
    assert "http" == received.headers["X-Forwarded-Proto"]
    assert not {"Cookie", "Authorization", "X-Forwarded-For"} & set(received.headers)


@pytest.mark.parametrize(("forged", "trusted"), FORGED, ids=FORGED_IDS)
@pytest.mark.parametrize("path", DISCOVERY_PATHS)
async def test_discovery_never_depends_on_the_requests_host(
    aiohttp_client: AiohttpClient,
    reflecting_legacy: Legacy,
    keyring: Keyring,
    forged: dict[str, str],
    trusted: tuple[str, ...],
    path: str,
) -> None:
    """A request with a forged Host or X-Forwarded-Host gets, and leaves cached for the next
    client, the document the upstream gives the issuer."""
    client = await gateway(
        aiohttp_client, reflecting_legacy.url, keyring, trusted_proxies=",".join(trusted)
    )
    first = await (await client.get(path, headers={**forged, **CREDENTIALS})).json()
    later = await (await client.get(path)).json()
    for document in (first, later):
        assert "http://127.0.0.1:8000/authorize" == document["authorization_endpoint"]
        assert "http://127.0.0.1:8000/token" == document["token_endpoint"]
        assert "http://127.0.0.1:8000/jwks" == document["jwks_uri"]
    (received,) = reflecting_legacy.recorder.requests
    assert_asked_as_issuer(received, DISCOVERY_PATHS[0])  # the one document, served at both


@pytest.mark.parametrize(("forged", "trusted"), FORGED, ids=FORGED_IDS)
async def test_merged_jwks_never_depends_on_the_requests_host(
    aiohttp_client: AiohttpClient,
    reflecting_legacy: Legacy,
    keyring: Keyring,
    forged: dict[str, str],
    trusted: tuple[str, ...],
) -> None:
    """The merged JWKS is the upstream's for the issuer whatever Host, forwarding headers or
    query a request brings, fetched once and cached for the next client."""
    client = await gateway(
        aiohttp_client,
        reflecting_legacy.url,
        keyring,
        upstream_jwks_path="/jwks",
        trusted_proxies=",".join(trusted),
    )
    first = await (await client.get("/jwks?tenant=evil", headers={**forged, **CREDENTIALS})).json()
    later = await (await client.get("/jwks")).json()
    gateway_kids = [key.kid for key in keyring.keys]
    for jwks in (first, later):
        assert ["legacy-http://127.0.0.1:8000", *gateway_kids] == [k["kid"] for k in jwks["keys"]]
    (received,) = reflecting_legacy.recorder.requests
    assert_asked_as_issuer(received, "/jwks")


async def test_discovery_is_cached_under_the_gateways_own_path(
    aiohttp_client: AiohttpClient, legacy: Legacy, keyring: Keyring
) -> None:
    """Every spelling of a discovery path is served the one document cached for it, fetched
    once from the upstream at the gateway's own path."""
    client = await gateway(aiohttp_client, legacy.url, keyring)
    for spelling in (
        "/.well-known//openid-configuration",
        "/.well-known/openid-configuration/",
        "/.well-known/./openid-configuration",
        "/.well-known/openid-configuration",
    ):
        response = await client.session.get(raw_url(client, spelling))
        assert "http://127.0.0.1:8000/token" == (await response.json())["token_endpoint"]
    assert ["/.well-known/openid-configuration"] == legacy.recorder.paths()


async def test_concurrent_misses_fetch_once(
    aiohttp_client: AiohttpClient, keyring: Keyring, raw_server: RawServerFactory
) -> None:
    """Twenty clients arriving while the document is not cached cause one upstream fetch."""
    body = json.dumps({"issuer": ISSUER, "token_endpoint": ISSUER + "/token"}).encode()
    answer = http_answer(body, "application/json")
    slow = await raw_server([answer[: -len(body)], answer[-len(body) :]], pause=0.3)
    client = await gateway(aiohttp_client, slow.url, keyring)
    responses = await asyncio.gather(
        *(client.get("/.well-known/openid-configuration") for _ in range(20))
    )
    for response in responses:
        assert ISSUER + "/token" == (await response.json())["token_endpoint"]
    assert 1 == len(slow.heads)


class FlakyUpstream:
    """An upstream whose discovery answers ``status`` and counts how often it is asked."""

    def __init__(self) -> None:
        self.status = 500
        self.hits = 0

    def app(self) -> web.Application:
        async def discovery(request: web.Request) -> web.Response:
            self.hits += 1
            document = {"issuer": ISSUER, "service_documentation": "t"}
            return web.json_response(document, status=self.status)

        app = web.Application()
        app.router.add_get("/.well-known/openid-configuration", discovery)
        return app


async def test_failures_stand_briefly_and_a_good_document_outlives_them(
    aiohttp_client: AiohttpClient,
    aiohttp_server: AiohttpServer,
    keyring: Keyring,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An upstream 5xx is answered 502 for a few seconds without asking again, never turned
    into a cached document; once a document was fetched, a later failure keeps serving it."""
    monkeypatch.setattr(metadata, "FAILURE_SECONDS", 0.3)
    monkeypatch.setattr(metadata, "CACHE_SECONDS", 0.3)
    flaky = FlakyUpstream()
    upstream = await aiohttp_server(flaky.app())
    client = await gateway(aiohttp_client, str(upstream.make_url("")).rstrip("/"), keyring)
    path = "/.well-known/openid-configuration"
    for _ in range(3):
        response = await client.get(path)
        assert 502 == response.status
        assert "temporarily_unavailable" == (await response.json())["error"]
    assert 1 == flaky.hits
    await asyncio.sleep(0.35)
    flaky.status = 200
    assert "t" == (await (await client.get(path)).json())["service_documentation"]
    assert 2 == flaky.hits
    await asyncio.sleep(0.35)
    flaky.status = 500
    for _ in range(3):
        assert "t" == (await (await client.get(path)).json())["service_documentation"]
    assert 3 == flaky.hits


DOCUMENT = json.dumps({"issuer": ISSUER, "token_endpoint": "https://evil.example/token"}).encode()


@pytest.mark.parametrize(
    ("content_length", "hold", "status"),
    [
        ("10000000000", True, 502),
        (str(len(DOCUMENT) + 100), False, 502),
        (str(len(DOCUMENT) + 100), True, 504),
    ],
    ids=["declares-10-gb-and-stalls", "cut-short", "stalls-short-of-its-length"],
)
async def test_incomplete_upstream_document_is_not_used(
    aiohttp_client: AiohttpClient,
    keyring: Keyring,
    raw_server: RawServerFactory,
    monkeypatch: pytest.MonkeyPatch,
    content_length: str,
    hold: bool,
    status: int,
) -> None:
    """A document whose body is not complete within the limit (a valid prefix, then a
    declared length over the limit, a closed connection or a stall) is never served."""
    monkeypatch.setattr(metadata, "DOCUMENT_TIMEOUT", aiohttp.ClientTimeout(total=0.5))
    answer = http_answer(DOCUMENT, "application/json", Content_Length=content_length)
    upstream = await raw_server([answer], hold=hold)
    client = await gateway(aiohttp_client, upstream.url, keyring)
    response = await asyncio.wait_for(client.get("/.well-known/openid-configuration"), 5)
    assert status == response.status
    assert "temporarily_unavailable" == (await response.json())["error"]
    assert 1 == len(upstream.heads)


def test_demo_runs_end_to_end() -> None:
    """`jargate demo` runs one signed-request, signed-response flow, and shows a tampered and a
    replayed object refused without the legacy server seeing them."""
    result = subprocess.run(
        [sys.executable, "-m", "proxy", "demo"],
        check=False,
        capture_output=True,
        text=True,
        env=clean_env(),
        cwd=REPO,
        timeout=60,
    )
    assert 0 == result.returncode, result.stderr
    for step in (
        "1. The client signs",
        "2. What the legacy server received",
        "3. The gateway's answer",
        "4. The client verifies",
        "5. The client exchanges the code",
        "6. The same with PAR",
        "7. Refused: a tampered request object, and one used twice",
        "the request object's signature does not verify",
        "this request object was already used (replay)",
        "the legacy server received nothing",
        "── Done",
    ):
        assert step in result.stdout
    assert '"code_challenge_method": "S256"' in result.stdout
    assert "Traceback" not in result.stderr
