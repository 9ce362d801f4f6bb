"""Discovery documents and published keys."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from proxy.app import create_app
from proxy.demo.legacy import legacy_app as bare_legacy_app
from proxy.keyring import Keyring
from proxy.settings import SIGNING_ALGS
from proxy.store import MemoryStore
from tests.conftest import AiohttpClient, AiohttpServer, Legacy
from tests.support import REPO, clean_env, make_settings

JWT_MODES = ["query.jwt", "fragment.jwt", "form_post.jwt", "jwt"]


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
    assert document["authorization_response_iss_parameter_supported"] is True
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
    """No upstream document: one is built from the settings, pointing at the gateway's keys."""
    upstream = await aiohttp_server(bare_legacy_app())
    client = await gateway(aiohttp_client, str(upstream.make_url("")).rstrip("/"), keyring)
    response = await client.get("/.well-known/oauth-authorization-server")
    document = await response.json()
    assert "http://127.0.0.1:8000" == document["issuer"]
    assert "http://127.0.0.1:8000/authorize" == document["authorization_endpoint"]
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


def test_demo_runs_end_to_end() -> None:
    """`jargate demo` runs one signed-request, signed-response flow and succeeds."""
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
        "── Done",
    ):
        assert step in result.stdout
    assert '"code_challenge_method": "S256"' in result.stdout
    assert "Traceback" not in result.stderr
