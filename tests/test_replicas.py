"""Several replicas sharing one Redis, and what a running gateway logs and counts.

The gateways here are real `jargate serve` processes with a shared key file and registry,
the way a Deployment with several pods runs them.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import aiohttp
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet

from proxy.keyring import generate_private_jwks
from tests.conftest import Legacy
from tests.jar import ISSUER, REDIRECT, Claims, private_key, public_jwks, sign
from tests.support import GatewayProcess
from tests.test_par import CLIENTS as PAR_CLIENTS
from tests.test_par import assertion, pushed_params

pytestmark = pytest.mark.slow

Replicas = Callable[..., Awaitable[list[GatewayProcess]]]
#: Response parameters that are credentials (and so must never be logged).
CREDENTIALS = frozenset({"code", "response", "access_token", "id_token", "refresh_token"})


@pytest.fixture
async def replicas(tmp_path: Path, legacy: Legacy, clean_redis: str) -> AsyncIterator[Replicas]:
    """Start ``n`` gateways sharing Redis, keys and registry; stopped after the test."""
    keys = tmp_path / "keys.json"
    keys.write_text(
        json.dumps(
            {
                "keys": [
                    *generate_private_jwks(["ES256"])["keys"],
                    *generate_private_jwks(["RS256"])["keys"],
                ]
            }
        )
    )
    clients = tmp_path / "clients.json"
    app_client = {
        "client_id": "app",
        "jwks": public_jwks(private_key("p256")),
        "redirect_uris": [REDIRECT],
        "authorization_signed_response_alg": "ES256",
    }
    clients.write_text(json.dumps({"clients": [app_client, *PAR_CLIENTS[:3]]}))
    running: list[GatewayProcess] = []

    async def start(n: int, **env: str) -> list[GatewayProcess]:
        for _ in range(n):
            process = GatewayProcess(
                JARGATE_UPSTREAM_URL=legacy.url,
                JARGATE_ISSUER=ISSUER,
                JARGATE_REDIS_URL=clean_redis,
                JARGATE_KEYS_FILE=str(keys),
                JARGATE_CLIENTS_FILE=str(clients),
                **env,
            )
            running.append(await process.__aenter__())
        return running

    yield start
    for process in running:
        await process.stop()


async def test_one_object_raced_against_two_replicas_is_accepted_once(
    replicas: Replicas, legacy: Legacy
) -> None:
    """Ten requests with one object, spread over two replicas: exactly one is forwarded."""
    a, b = await replicas(2)
    token = sign(Claims().build(), "ES256")
    query = urlencode({"client_id": "app", "request": token})
    async with aiohttp.ClientSession() as session:

        async def one(base: str) -> str:
            async with session.get(f"{base}/authorize?{query}", allow_redirects=False) as response:
                return response.headers["Location"]

        locations = await asyncio.gather(*(one(r.url) for r in (a, b) * 5))
    accepted = [loc for loc in locations if "code=" in loc]
    assert 1 == len(accepted)
    assert 9 == sum("invalid_request_object" in loc for loc in locations)
    assert 1 == len([p for p in legacy.recorder.paths() if p.startswith("/authorize")])


async def test_flow_started_on_one_replica_completes_on_another(
    replicas: Replicas, legacy: Legacy
) -> None:
    """Start on A, log in and finish on B: B completes A's flow with the shared keys."""
    a, b = await replicas(2)
    claims = Claims().build(prompt="login", response_mode="jwt")
    query = urlencode({"client_id": "app", "request": sign(claims, "ES256")})
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as browser:
        async with browser.get(f"{a.url}/authorize?{query}", allow_redirects=False) as first:
            location = first.headers["Location"]
        while location.startswith("/"):
            async with browser.get(b.url + location, allow_redirects=False) as hop:
                location = hop.headers["Location"]
        async with browser.get(f"{a.url}/.well-known/jargate/jwks.json") as keys:
            published = KeySet.import_key_set(await keys.json())
    token = parse_qs(urlsplit(location).query)["response"][0]
    verified = jwt.decode(token, published, algorithms=["ES256"])
    assert claims["state"] == verified.claims["state"]
    assert "code" in verified.claims


async def test_par_handle_pushed_to_one_replica_is_used_on_another(
    replicas: Replicas, legacy: Legacy
) -> None:
    """A request_uri pushed to A works at B's authorization endpoint, once."""
    a, b = await replicas(2)
    form = {"client_id": "post", "client_secret": "s3cret-post", **pushed_params()}
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{a.url}/par", data=form) as pushed:
            assert 201 == pushed.status
            request_uri = (await pushed.json())["request_uri"]
        query = urlencode({"client_id": "post", "request_uri": request_uri})
        async with session.get(f"{b.url}/authorize?{query}", allow_redirects=False) as used:
            assert "code=" in used.headers["Location"]
        async with session.get(f"{a.url}/authorize?{query}", allow_redirects=False) as again:
            assert "invalid_request_uri" == (await again.json())["error"]


async def test_logs_and_metrics_never_carry_secrets(replicas: Replicas, legacy: Legacy) -> None:
    """Run flows of every kind at debug level, then scan everything logged and every metric:
    no request object, code, token, JARM response, client secret or assertion appears."""
    (gateway,) = await replicas(1, JARGATE_LOG_LEVEL="debug")
    secrets_seen: list[str] = ["s3cret-post", "s3cret:basic/1"]
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as browser:

        async def follow(url: str) -> str:
            async with browser.get(url, allow_redirects=False) as response:
                location = response.headers.get("Location", "")
            for name, values in parse_qs(urlsplit(location).query).items():
                if name in CREDENTIALS:
                    secrets_seen.extend(values)
            return location

        object_jar = sign(Claims().build(response_mode="jwt"), "ES256")
        secrets_seen.append(object_jar)
        await follow(
            f"{gateway.url}/authorize?" + urlencode({"client_id": "app", "request": object_jar})
        )
        plain = {
            "client_id": "app",
            "response_type": "code",
            "redirect_uri": REDIRECT,
            "state": secrets.token_hex(8),
        }
        location = await follow(f"{gateway.url}/authorize?" + urlencode(plain))
        code = parse_qs(urlsplit(location).query)["code"][0]
        async with browser.post(
            f"{gateway.url}/token",
            data={"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT},
        ) as token_response:
            tokens: dict[str, Any] = await token_response.json()
        secrets_seen.extend(str(v) for k, v in tokens.items() if k.endswith("token"))
        signed_assertion = assertion()
        secrets_seen.append(signed_assertion)
        pkjwt = {
            "client_id": "pkjwt",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": signed_assertion,
            **pushed_params(),
        }
        for form in (
            pkjwt,
            {"client_id": "post", "client_secret": "s3cret-post", **pushed_params()},
        ):
            async with browser.post(f"{gateway.url}/par", data=form) as pushed:
                request_uri = (await pushed.json())["request_uri"]
            secrets_seen.append(request_uri)
            await follow(
                f"{gateway.url}/authorize?"
                + urlencode({"client_id": form["client_id"], "request_uri": request_uri})
            )
        async with browser.get(f"http://127.0.0.1:{gateway.metrics_port}/metrics") as scrape:
            metrics = await scrape.text()
    logs = await gateway.stop()
    assert "authorization decision" in logs  # the logs were there to be scanned
    assert "jargate_authorization_decisions_total" in metrics
    assert len(secrets_seen) > 8
    for secret in secrets_seen:
        assert secret not in logs, f"logged: {secret[:24]}…"
        assert secret not in metrics, f"in metrics: {secret[:24]}…"


async def test_two_workers_share_one_port(replicas: Replicas, legacy: Legacy) -> None:
    """JARGATE_WORKERS=2: two worker processes on one port; they serve and drain on SIGTERM."""
    (gateway,) = await replicas(1, JARGATE_WORKERS="2")
    assert gateway.process is not None
    children = Path(f"/proc/{gateway.process.pid}/task/{gateway.process.pid}/children")
    assert 2 == len(children.read_text().split())  # noqa: ASYNC240 - /proc reads do not block
    async with aiohttp.ClientSession() as session:
        for _ in range(20):
            token = sign(Claims().build(), "ES256")
            query = urlencode({"client_id": "app", "request": token})
            async with session.get(f"{gateway.url}/authorize?{query}", allow_redirects=False) as r:
                assert "code=" in r.headers["Location"]
    await gateway.stop()
    assert 0 == gateway.process.returncode
