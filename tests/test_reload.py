"""Reloading the registry and keys files without a restart (proxy/config.py): on a change
of a mounted ConfigMap or Secret (kubelet's ``..data`` symlink swap), and on SIGHUP; a
file that does not validate keeps the running configuration, is logged and counted, and
``/readyz`` says so."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote_plus, urlsplit

import aiohttp
import pytest
import yaml
from aiohttp import web

from proxy import appkeys
from proxy.app import create_app
from proxy.keyring import generate_private_jwks
from proxy.store import MemoryStore
from tests.conftest import AiohttpClient, AiohttpServer, Legacy
from tests.jar import ISSUER, REDIRECT
from tests.support import GatewayProcess, make_settings

OLD_SECRET = "old-client-secret-value"
NEW_SECRET = "new-client-secret-value"
LEAKED = "never-logged-secret-value"


class MountedVolume:
    """A directory laid out as the kubelet mounts a ConfigMap or Secret: each file a
    symlink through ``..data`` to a timestamped directory; an update writes a new one and
    swaps ``..data`` in one rename."""

    def __init__(self, root: Path, files: dict[str, str]) -> None:
        self.root = root
        self.version = 0
        root.mkdir()
        self.update(files)
        for name in files:
            (root / name).symlink_to(Path("..data") / name)

    def update(self, files: dict[str, str]) -> None:
        self.version += 1
        target = self.root / f"..2026_12_03_{self.version}"
        target.mkdir()
        for name, text in files.items():
            (target / name).write_text(text)
        link = self.root / "..data_tmp"
        link.symlink_to(target.name)
        link.replace(self.root / "..data")

    def path(self, name: str) -> Path:
        return self.root / name


def registry(*clients: dict[str, Any]) -> str:
    return yaml.safe_dump({"clients": list(clients)})


def basic_client(client_id: str, secret: str) -> dict[str, Any]:
    return {
        "client_id": client_id,
        "redirect_uris": [REDIRECT],
        "token_endpoint_auth_method": "client_secret_basic",
        "client_secret": secret,
    }


def keys(kid: str) -> str:
    return json.dumps(generate_private_jwks(["ES256"], kid=kid))


async def push(session: aiohttp.ClientSession, url: str, client_id: str, secret: str) -> int:
    """A pushed authorization request by a client_secret_basic client; its status."""
    raw = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    form = {"response_type": "code", "redirect_uri": REDIRECT, "state": "s", "scope": "openid"}
    headers = {"Authorization": "Basic " + base64.b64encode(raw).decode()}
    async with session.post(url + "/par", data=form, headers=headers) as response:
        return response.status


async def eventually(check: Callable[[], Awaitable[bool]], seconds: float = 15.0) -> None:
    """Until ``check`` holds; fails after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, "not within the bound"
        await asyncio.sleep(0.1)


async def scrape(session: aiohttp.ClientSession, gateway: GatewayProcess) -> dict[str, float]:
    """The gateway's reload metrics."""
    async with session.get(f"http://127.0.0.1:{gateway.metrics_port}/metrics") as response:
        text = await response.text()
    return {
        name: float(value)
        for name, value in (line.rsplit(" ", 1) for line in text.splitlines())
        if name.startswith("jargate_config_")
    }


def requests_seen(legacy: Legacy) -> list[str]:
    """What the upstream was asked, beyond the discovery the gateway reads at start and the
    readiness probe's ``/``."""
    paths = legacy.recorder.paths()
    return [path for path in paths if path != "/" and not path.startswith("/.well-known/")]


SUCCESS = 'jargate_config_reload_total{outcome="success"}'
FAILURE = 'jargate_config_reload_total{outcome="failure"}'
LAST_OK = "jargate_config_last_reload_successful"


def gateway(legacy: Legacy, clients: MountedVolume, secrets: MountedVolume, **env: str) -> Any:
    return GatewayProcess(
        JARGATE_UPSTREAM_URL=legacy.url,
        JARGATE_ISSUER=ISSUER,
        JARGATE_TOKEN_PATH="/token",
        JARGATE_JARM_DEFAULT_ALG="ES256",
        JARGATE_CLIENTS_FILE=str(clients.path("clients.yaml")),
        JARGATE_KEYS_FILE=str(secrets.path("keys.json")),
        **env,
    )


def volumes(tmp_path: Path) -> tuple[MountedVolume, MountedVolume]:
    clients = MountedVolume(
        tmp_path / "clients", {"clients.yaml": registry(basic_client("old", OLD_SECRET))}
    )
    secrets = MountedVolume(tmp_path / "keys", {"keys.json": keys("key-1")})
    return clients, secrets


@pytest.mark.slow
async def test_changed_registry_is_served_without_restart(tmp_path: Path, legacy: Legacy) -> None:
    """A ConfigMap update adds a client: it is accepted without a restart, the old one still
    is, and the reload is counted and logged; before, the new one was refused at the gateway
    (the upstream saw nothing)."""
    clients, secrets = volumes(tmp_path)
    async with (
        gateway(legacy, clients, secrets, JARGATE_RELOAD_INTERVAL_SECONDS="0.2") as running,
        aiohttp.ClientSession() as session,
    ):
        assert 401 == await push(session, running.url, "new", NEW_SECRET)
        assert [] == requests_seen(legacy)
        clients.update(
            {
                "clients.yaml": registry(
                    basic_client("old", OLD_SECRET), basic_client("new", NEW_SECRET)
                )
            }
        )

        async def accepted() -> bool:
            return 201 == await push(session, running.url, "new", NEW_SECRET)

        await eventually(accepted)
        assert 201 == await push(session, running.url, "old", OLD_SECRET)
        metrics = await scrape(session, running)
        assert (1.0, 0.0, 1.0) == (metrics[SUCCESS], metrics[FAILURE], metrics[LAST_OK])
        logs = await running.stop()
    (line,) = [json.loads(x) for x in logs.splitlines() if "configuration reloaded" in x]
    assert ("info", "file changed", 2) == (line["level"], line["trigger"], line["clients"])


@pytest.mark.slow
async def test_broken_registry_keeps_the_running_one(tmp_path: Path, legacy: Legacy) -> None:
    """A registry that does not parse is not used: the old client is still served, the
    failure is logged at error naming the problem (never the secret on the broken line),
    counted once (not at every poll), and /readyz reports it while staying ready; a fixed
    file is then taken."""
    clients, secrets = volumes(tmp_path)
    # PyYAML's own message would quote the broken line, secret included.
    broken = f"clients:\n  - client_id: old\n    client_secret: {LEAKED}: x\n"
    async with (
        gateway(legacy, clients, secrets, JARGATE_RELOAD_INTERVAL_SECONDS="0.2") as running,
        aiohttp.ClientSession() as session,
    ):
        clients.update({"clients.yaml": broken})

        async def counted() -> bool:
            return (await scrape(session, running))[FAILURE] == 1.0

        await eventually(counted)
        await asyncio.sleep(0.6)  # a few more polls of the same broken file
        metrics = await scrape(session, running)
        assert (0.0, 1.0, 0.0) == (metrics[SUCCESS], metrics[FAILURE], metrics[LAST_OK])
        assert 201 == await push(session, running.url, "old", OLD_SECRET)
        async with session.get(running.url + "/readyz") as ready:
            assert 200 == ready.status
            assert "reload_failed" == (await ready.json())["config"]
        clients.update({"clients.yaml": registry(basic_client("new", NEW_SECRET))})

        async def fixed() -> bool:
            async with session.get(running.url + "/readyz") as ready:
                return bool("ok" == (await ready.json())["config"])

        await eventually(fixed)
        assert 401 == await push(session, running.url, "old", OLD_SECRET)
        assert 201 == await push(session, running.url, "new", NEW_SECRET)
        assert [] == requests_seen(legacy)
        logs = await running.stop()
    assert LEAKED not in logs
    (line,) = [json.loads(x) for x in logs.splitlines() if "reload failed" in x]
    assert "error" == line["level"]
    assert "cannot parse (mapping values are not allowed here at line 3, column" in line["problem"]
    assert str(clients.path("clients.yaml")) in line["problem"]


@pytest.mark.slow
async def test_sighup_reloads(tmp_path: Path, legacy: Legacy) -> None:
    """With polling off, SIGHUP reloads (it used to kill the gateway) and the process goes on."""
    clients, secrets = volumes(tmp_path)
    async with (
        gateway(legacy, clients, secrets, JARGATE_RELOAD_INTERVAL_SECONDS="0") as running,
        aiohttp.ClientSession() as session,
    ):
        clients.update({"clients.yaml": registry(basic_client("new", NEW_SECRET))})
        await asyncio.sleep(0.5)
        assert 401 == await push(session, running.url, "new", NEW_SECRET), "no polling"
        assert running.process is not None
        running.process.send_signal(signal.SIGHUP)

        async def accepted() -> bool:
            return 201 == await push(session, running.url, "new", NEW_SECRET)

        await eventually(accepted)
        assert running.process.returncode is None
        assert (await scrape(session, running))[SUCCESS] == 1.0
        logs = await running.stop()
    assert any('"trigger":"SIGHUP"' in line for line in logs.splitlines())


@pytest.mark.slow
async def test_rotated_keys_are_published(tmp_path: Path, legacy: Legacy) -> None:
    """A Secret update publishes the new kid at the JWKS path (no restart); a keys file that
    lacks an alg the clients need is refused and the running keys stay."""
    clients, secrets = volumes(tmp_path)
    async with (
        gateway(legacy, clients, secrets, JARGATE_RELOAD_INTERVAL_SECONDS="0.2") as running,
        aiohttp.ClientSession() as session,
    ):

        async def kids() -> list[str]:
            async with session.get(running.url + "/.well-known/jargate/jwks.json") as response:
                return [key["kid"] for key in (await response.json())["keys"]]

        assert ["key-1"] == await kids()
        both = generate_private_jwks(["ES256"], kid="key-1")["keys"]
        both += generate_private_jwks(["ES256"], kid="key-2")["keys"]
        secrets.update({"keys.json": json.dumps({"keys": both})})

        async def published() -> bool:
            return ["key-1", "key-2"] == await kids()

        await eventually(published)
        # JARGATE_JARM_DEFAULT_ALG is ES256: an RS256 key alone cannot sign.
        secrets.update({"keys.json": json.dumps(generate_private_jwks(["RS256"], kid="rsa"))})

        async def refused() -> bool:
            return (await scrape(session, running))[FAILURE] == 1.0

        await eventually(refused)
        assert ["key-1", "key-2"] == await kids()
        logs = await running.stop()
    (line,) = [json.loads(x) for x in logs.splitlines() if "reload failed" in x]
    assert (
        "JARGATE_JARM_DEFAULT_ALG is ES256, but the gateway has no ES256 signing key"
        in (line["problem"])
    )
    assert '"d":' not in logs, "no private key material"


def jarm_kid(response: aiohttp.ClientResponse) -> str:
    """The kid in the header of the JARM response a redirect carries."""
    (token,) = parse_qs(urlsplit(response.headers["Location"]).query)["response"]
    header = token.split(".")[0]
    return str(json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))["kid"])


async def test_in_flight_request_keeps_the_keys_it_started_with(
    tmp_path: Path, aiohttp_server: AiohttpServer, aiohttp_client: AiohttpClient
) -> None:
    """A request waiting for the upstream when the keys are rotated is answered with the
    keys it started with (its JARM response signed by the old key, which stays published
    nowhere else); the next request gets the new key."""
    gate = asyncio.Event()
    asked = asyncio.Event()

    async def upstream_authorize(request: web.Request) -> web.Response:
        asked.set()
        await asyncio.wait_for(gate.wait(), timeout=10)
        location = f"{request.query['redirect_uri']}?code=c1&state={request.query['state']}"
        return web.Response(status=302, headers={"Location": location})

    upstream = web.Application()
    upstream.router.add_get("/authorize", upstream_authorize)
    server = await aiohttp_server(upstream)
    keys_file = tmp_path / "keys.json"
    keys_file.write_text(keys("old-key"))
    clients_file = tmp_path / "clients.yaml"
    jarm = {"client_id": "jarm", "redirect_uris": [REDIRECT], "jwks_uri": "https://rp.example/j"}
    clients_file.write_text(registry(jarm))
    settings = make_settings(
        str(server.make_url("")).rstrip("/"),
        keys_file=keys_file,
        clients_file=clients_file,
        jarm_default_alg="ES256",
        reload_interval_seconds=0,
    )
    app = create_app(settings, store=MemoryStore())
    client = await aiohttp_client(app)
    query = {"client_id": "jarm", "response_type": "code", "response_mode": "query.jwt"}
    query |= {"redirect_uri": REDIRECT, "state": "st"}

    async def authorize() -> aiohttp.ClientResponse:
        return await client.get("/authorize", params=query, allow_redirects=False)

    in_flight = asyncio.ensure_future(authorize())
    await asyncio.wait_for(asked.wait(), timeout=10)
    keys_file.write_text(keys("new-key"))
    assert await app[appkeys.RELOADER].reload("test")
    gate.set()
    assert "old-key" == jarm_kid(await in_flight)
    assert "new-key" == jarm_kid(await authorize())
    assert ["new-key"] == [
        k["kid"] for k in app[appkeys.CONFIG].current.keyring.public_jwks()["keys"]
    ]


async def test_throwaway_keys_survive_a_reload(tmp_path: Path) -> None:
    """Without JARGATE_KEYS_FILE a reload keeps the throw-away keys (new ones would break
    every response signed so far); a client needing an alg they lack is refused."""
    clients_file = tmp_path / "clients.json"
    clients_file.write_text(json.dumps({"clients": [basic_client("old", OLD_SECRET)]}))
    settings = make_settings(clients_file=clients_file, reload_interval_seconds=0)
    app = create_app(settings, store=MemoryStore())
    live, reloader = app[appkeys.CONFIG], app[appkeys.RELOADER]
    before = live.current
    clients_file.write_text(
        json.dumps({"clients": [basic_client("old", OLD_SECRET), basic_client("b", NEW_SECRET)]})
    )
    assert await reloader.reload("test")
    assert live.current is not before
    assert live.current.keyring is before.keyring
    assert live.current.registry.get("b") is not None
    needs_ps384 = {**basic_client("c", NEW_SECRET), "authorization_signed_response_alg": "PS384"}
    clients_file.write_text(json.dumps({"clients": [needs_ps384]}))
    current = live.current
    assert not await reloader.reload("test")
    assert live.current is current
    assert live.reload_failed


async def test_secret_file_change_is_seen(tmp_path: Path) -> None:
    """A client's client_secret_file is watched too: a rotated secret is a change."""
    secret = tmp_path / "secret"
    secret.write_text(OLD_SECRET)
    clients_file = tmp_path / "clients.json"
    client = {**basic_client("old", OLD_SECRET), "client_secret_file": str(secret)}
    del client["client_secret"]
    clients_file.write_text(json.dumps({"clients": [client]}))
    app = create_app(make_settings(clients_file=clients_file), store=MemoryStore())
    reloader = app[appkeys.RELOADER]
    assert not await reloader.changed()
    os.utime(secret)  # touched, same content: no change
    assert not await reloader.changed()
    secret.write_text(NEW_SECRET)
    assert await reloader.changed()
    assert await reloader.reload("test")
    found = app[appkeys.CONFIG].current.registry.get("old")
    assert found is not None
    assert found.secret is not None
    assert NEW_SECRET == found.secret.get_secret_value()
    assert not await reloader.changed()


@pytest.mark.slow
async def test_sighup_reaches_every_worker(
    tmp_path: Path, legacy: Legacy, clean_redis: str
) -> None:
    """With several workers the parent passes SIGHUP on: each worker reloads on its own."""
    clients, secrets = volumes(tmp_path)
    options = {"JARGATE_WORKERS": "2", "JARGATE_REDIS_URL": clean_redis}
    async with gateway(
        legacy, clients, secrets, JARGATE_RELOAD_INTERVAL_SECONDS="0", **options
    ) as running:
        clients.update({"clients.yaml": registry(basic_client("new", NEW_SECRET))})
        assert running.process is not None
        await asyncio.sleep(0.5)  # both workers listening (the first answered /healthz)
        running.process.send_signal(signal.SIGHUP)
        async with aiohttp.ClientSession() as session:

            async def accepted_everywhere() -> bool:
                statuses = [await push(session, running.url, "new", NEW_SECRET) for _ in range(8)]
                return statuses == [201] * 8

            await eventually(accepted_everywhere)
        assert running.process.returncode is None
        logs = await running.stop()
    assert 2 == sum("configuration reloaded" in line for line in logs.splitlines())
