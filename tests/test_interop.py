"""Interoperability: real relying-party library (panva's openid-client) -> jargate -> a real
OpenID provider that knows nothing of JAR, PAR or JARM (panva's oidc-provider), and the
same flows against a Spring-style server that bounces through its login page.

Node and the pinned packages (`npm ci` in tests/interop, run by `make test`) are needed;
without them these tests are skipped, and `make test` says so in one loud line.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from joserfc.jwk import ECKey, RSAKey

from proxy.app import create_app
from proxy.clients import load_registry
from proxy.demo.legacy import LEGACY
from proxy.store import MemoryStore
from tests.conftest import AiohttpServer
from tests.legacy_upstream import Recorder, legacy_app
from tests.support import REPO, free_port, make_settings

INTEROP = REPO / "tests" / "interop"


def _node_problem() -> str | None:
    node = shutil.which("node")
    if node is None:
        return "node is not installed"
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=False)
    major = int(version.stdout.strip().lstrip("v").split(".")[0] or 0)
    if major < 20:
        return f"node {version.stdout.strip()} is older than 20"
    if not (INTEROP / "node_modules" / "oidc-provider").is_dir():
        return "tests/interop/node_modules is missing (make test runs npm ci there)"
    return None


NODE_PROBLEM = _node_problem()
pytestmark = pytest.mark.skipif(NODE_PROBLEM is not None, reason=f"interop: {NODE_PROBLEM}")

PS256_KEY = RSAKey.generate_key(2048, parameters={"kid": "rp-ps256"})
ES256_KEY = ECKey.generate_key("P-256", parameters={"kid": "rp-es256"})
SECRET = "interop-secret-0123456789"


@dataclass
class Peers:
    """A running gateway with its upstream, and how to reach them."""

    issuer: str
    rp_port: int
    kind: str

    async def run(
        self, flow: str, client_id: str = "jar-ps256", jarm_alg: str | None = None
    ) -> dict[str, Any]:
        """Run one openid-client flow in Node and return its outcome."""
        key, alg = (PS256_KEY, "PS256") if client_id == "jar-ps256" else (ES256_KEY, "ES256")
        client = {
            "client_id": client_id,
            "client_secret": SECRET,
            "key": {**key.as_dict(private=True), "kid": key.kid},
            "alg": alg,
            "jarm_alg": jarm_alg or alg,
        }
        process = await asyncio.create_subprocess_exec(
            "node",
            "flows.mjs",
            flow,
            cwd=INTEROP,
            env={
                **os.environ,
                "ISSUER": self.issuer,
                "RP_PORT": str(self.rp_port),
                "CLIENT": json.dumps(client),
            },
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
        lines = stdout.decode().strip().splitlines()
        assert lines, stderr.decode()
        outcome: dict[str, Any] = json.loads(lines[-1])
        return outcome


def _clients(redirect_uri: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The same clients for jargate's registry and for the upstream."""
    gateway, upstream = [], []
    for client_id, key, alg in (
        ("jar-ps256", PS256_KEY, "PS256"),
        ("jar-es256", ES256_KEY, "ES256"),
        ("plain-rp", None, None),
    ):
        entry: dict[str, Any] = {
            "client_id": client_id,
            "redirect_uris": [redirect_uri],
            "client_secret": SECRET,
            "token_endpoint_auth_method": "client_secret_basic",
        }
        if key is not None:
            entry["jwks"] = {"keys": [key.as_dict(private=False)]}
            entry["authorization_signed_response_alg"] = alg
            entry["require_signed_request_object"] = True
        gateway.append(entry)
        upstream.append(
            {
                "client_id": client_id,
                "client_secret": SECRET,
                "redirect_uris": [redirect_uri],
                "token_endpoint_auth_method": "client_secret_basic",
            }
        )
    return gateway, upstream


@pytest.fixture(params=["oidc-provider", "spring-style"])
async def peers(
    request: pytest.FixtureRequest, aiohttp_server: AiohttpServer
) -> AsyncIterator[Peers]:
    """jargate in front of oidc-provider (Node) or of a Spring-style legacy server."""
    gateway_port, upstream_port, rp_port = free_port(), free_port(), free_port()
    issuer = f"http://127.0.0.1:{gateway_port}"
    registry_clients, upstream_clients = _clients(f"http://127.0.0.1:{rp_port}/cb")
    process = None
    if request.param == "oidc-provider":
        process = await asyncio.create_subprocess_exec(
            "node",
            "provider.mjs",
            cwd=INTEROP,
            env={
                **os.environ,
                "PORT": str(upstream_port),
                "ISSUER": issuer,
                "CLIENTS": json.dumps(upstream_clients),
            },
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert process.stdout is not None
        assert b"ready" in await asyncio.wait_for(process.stdout.readline(), timeout=30)
        authorization_path = "/auth"
    else:
        legacy = legacy_app(issuer=issuer)
        legacy[LEGACY].login_required = True
        await aiohttp_server(legacy, port=upstream_port)
        authorization_path = "/authorize"
    settings = make_settings(
        f"http://127.0.0.1:{upstream_port}",
        issuer=issuer,
        authorization_path=authorization_path,
        upstream_jwks_path="/jwks",
        clients=json.dumps({"clients": registry_clients}),
    )
    app = create_app(settings, registry=load_registry(settings), store=MemoryStore())
    await aiohttp_server(app, port=gateway_port)
    try:
        yield Peers(issuer=issuer, rp_port=rp_port, kind=request.param)
    finally:
        if process is not None:
            process.terminate()
            await process.wait()
            assert process.stderr is not None
            log = (await process.stderr.read()).decode()
            # Shown with the test's output when it fails: what the provider complained of.
            print("oidc-provider stderr:\n" + log)


def assert_success(outcome: dict[str, Any], method: str = "GET") -> None:
    assert outcome.get("ok") is True, json.dumps(outcome)[:3000]
    assert outcome["method"] == method
    assert outcome["nonce_checked"] is True
    assert outcome["access_token"] is True


@pytest.mark.parametrize("client_id", ["jar-ps256", "jar-es256"])
async def test_jar_by_value_with_query_jwt(peers: Peers, client_id: str) -> None:
    """(1) JAR by value, JARM query.jwt validated by the library, code exchanged, nonce checked."""
    outcome = await peers.run("jar-query-jwt", client_id)
    assert_success(outcome)
    assert ["response"] == outcome["query"]
    assert peers.issuer == outcome["id_token_iss"]


async def test_par_with_signed_request_object(peers: Peers) -> None:
    """(2) PAR with a signed request object and response_mode=jwt."""
    outcome = await peers.run("par-jwt", "jar-es256")
    assert_success(outcome)
    assert {"client_id", "request_uri"} == set(outcome["authorization_url_params"])


async def test_form_post_jwt_posted_back(peers: Peers) -> None:
    """(3) form_post.jwt: the browser posts the response back to the relying party."""
    outcome = await peers.run("form-post-jwt", "jar-ps256")
    assert_success(outcome, method="POST")


async def test_plain_request_still_works(peers: Peers) -> None:
    """(4) A client without JAR keeps working; the response carries iss (RFC 9207)."""
    outcome = await peers.run("plain", "plain-rp")
    assert_success(outcome)
    assert {"code", "state", "iss"} <= set(outcome["query"])


async def test_discovery_read_by_the_library(peers: Peers) -> None:
    """(5) The library reads jargate's discovery with the JAR, PAR and JARM fields."""
    metadata = (await peers.run("discovery"))["metadata"]
    assert peers.issuer == metadata["issuer"]
    assert metadata["request_parameter_supported"] is True
    assert peers.issuer + "/par" == metadata["pushed_authorization_request_endpoint"]
    assert {"query.jwt", "fragment.jwt", "form_post.jwt", "jwt"} <= set(
        metadata["response_modes_supported"]
    )
    # RFC 9207 section 2.4: claimed only when every response has iss, which an upstream
    # passing unregistered clients through must say itself (oidc-provider does).
    claimed = metadata["authorization_response_iss_parameter_supported"]
    assert (peers.kind == "oidc-provider") is claimed


async def test_tampered_request_object_ends_without_a_code(peers: Peers) -> None:
    """(6) A request object changed after signing never gets a code."""
    outcome = await peers.run("tampered", "jar-es256")
    assert outcome.get("ok") is not True, outcome
    assert "code" not in outcome.get("query", [])
    assert "invalid_request_object" in (outcome.get("gateway_error") or "")
    # One hop, answered by the gateway: the browser never reached the upstream's pages,
    # and the gateway (which alone calls the upstream's authorization endpoint) refused.
    assert 1 == len(outcome["trail"]), outcome["trail"]
    assert outcome["trail"][0].endswith("-> 400")


FAPI_CLIENT = "fapi2-rp"
UPSTREAM_SECRET = "only-the-legacy-server-knows-this"


@pytest.fixture(params=["fapi2-message-signing", "fapi2"])
async def fapi_peers(
    request: pytest.FixtureRequest, aiohttp_server: AiohttpServer
) -> tuple[Peers, Recorder]:
    """jargate under a FAPI 2.0 profile (``JARGATE_PROFILE``) in front of the bundled legacy
    server, which ignores PKCE and knows the client only by a secret."""
    gateway_port, upstream_port, rp_port = free_port(), free_port(), free_port()
    issuer = f"http://127.0.0.1:{gateway_port}"
    recorder = Recorder()
    legacy = legacy_app(recorder, issuer=issuer)
    legacy[LEGACY].check_pkce = False
    legacy[LEGACY].client_secrets = {FAPI_CLIENT: UPSTREAM_SECRET}
    await aiohttp_server(legacy, port=upstream_port)
    entry = {
        "client_id": FAPI_CLIENT,
        "redirect_uris": [f"http://127.0.0.1:{rp_port}/cb"],
        "jwks": {"keys": [ES256_KEY.as_dict(private=False)]},
        "token_endpoint_auth_method": "private_key_jwt",
        "require_signed_request_object": True,
        "require_pushed_authorization_requests": True,
        "authorization_signed_response_alg": "PS256",
        "upstream_token_endpoint_auth_method": "client_secret_basic",
        "upstream_client_secret": UPSTREAM_SECRET,
    }
    settings = make_settings(
        f"http://127.0.0.1:{upstream_port}",
        issuer=issuer,
        upstream_jwks_path="/jwks",
        profile=request.param,
        clients=json.dumps({"clients": [entry]}),
    )
    app = create_app(settings, registry=load_registry(settings), store=MemoryStore())
    await aiohttp_server(app, port=gateway_port)
    return Peers(issuer=issuer, rp_port=rp_port, kind=request.param), recorder


async def test_fapi2_message_signing_with_the_librarys_own_settings(
    fapi_peers: tuple[Peers, Recorder],
) -> None:
    """(7) openid-client as FAPI 2.0 Message Signing asks (private_key_jwt, a signed request
    object pushed, PKCE S256, JARM, the ID token's signature checked) through the gateway's
    FAPI 2.0 profiles; the legacy server sees plain requests, and its secret in Basic."""
    peers, recorder = fapi_peers
    outcome = await peers.run("fapi2", FAPI_CLIENT, jarm_alg="PS256")
    assert_success(outcome)
    assert ["response"] == outcome["query"]
    assert peers.issuer == outcome["id_token_iss"]
    assert {"client_id", "request"} == set(outcome["pushed"])
    assert {"client_id", "request_uri"} == set(outcome["authorization_url_params"])
    (exchange,) = [r for r in recorder.requests if r.raw_path == "/token"]
    basic = base64.b64encode(f"{FAPI_CLIENT}:{UPSTREAM_SECRET}".encode()).decode()
    assert "Basic " + basic == exchange.headers["Authorization"]
    sent = dict(parse_qsl(exchange.body.decode()))
    assert {"grant_type", "code", "redirect_uri", "code_verifier"} == set(sent)
    for received in recorder.requests:
        names = {name for name, _ in parse_qsl(urlsplit(received.raw_path).query)}
        names |= {name for name, _ in parse_qsl(received.body.decode())}
        assert not names & {"request", "request_uri"}, received.raw_path
    assert any(r.raw_path.startswith("/authorize?") for r in recorder.requests)
