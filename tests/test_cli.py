"""The jargate command, run as operators run it: in a subprocess."""

from __future__ import annotations

import asyncio
import base64
import gc
import json
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from proxy.cli import freeze_startup_objects
from proxy.keyring import Keyring
from tests.conftest import AiohttpClient, AiohttpServer, Legacy
from tests.support import REPO, GatewayProcess, clean_env, free_port

JARGATE = [sys.executable, "-m", "proxy"]


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*JARGATE, *args],
        check=False,
        capture_output=True,
        text=True,
        env=clean_env(**env),
        cwd=REPO,
        timeout=60,
    )


BASE = {"JARGATE_UPSTREAM_URL": "http://127.0.0.1:9", "JARGATE_ISSUER": "https://idp.example"}


def test_check_prints_a_summary() -> None:
    """`jargate check` loads the example set-up and prints clients and keys with kid/alg/use."""
    result = run("check", "--offline", "--env-file", "config/example.env")
    assert result.returncode == 0, result.stderr
    assert "configuration is valid" in result.stdout
    assert "web-client: jwks" in result.stdout
    assert "alg=ES256 use=sig" in result.stdout
    assert "alg=RSA-OAEP-256 use=enc" in result.stdout


def test_check_reaches_store_and_upstream(legacy_process: str, redis_url: str) -> None:
    """Online, `jargate check` pings the store and the upstream."""
    result = run(
        "check",
        JARGATE_UPSTREAM_URL=legacy_process,
        JARGATE_ISSUER="http://127.0.0.1:8000",
        JARGATE_REDIS_URL=redis_url,
    )
    assert 0 == result.returncode, result.stderr
    assert "reachable: store and upstream answer" in result.stdout
    assert "set JARGATE_UPSTREAM_JWKS_PATH=/jwks" in result.stderr


def test_check_refuses_an_issuer_the_upstream_does_not_have(legacy_process: str) -> None:
    """JARGATE_ISSUER must be the upstream's own issuer; `jargate check` says so loudly."""
    result = run(
        "check",
        JARGATE_UPSTREAM_URL=legacy_process,
        JARGATE_ISSUER="https://idp.example",
        JARGATE_UPSTREAM_JWKS_PATH="/jwks",
    )
    assert 1 == result.returncode
    assert (
        "JARGATE_ISSUER is 'https://idp.example' but the upstream's discovery says its issuer "
        "is 'http://127.0.0.1:8000'"
    ) in result.stderr


def test_check_fails_when_upstream_is_down() -> None:
    """An unreachable upstream makes `jargate check` exit non-zero, naming it and what
    failed: nothing listens (refused), or something listens and never answers (timeout)."""
    result = run("check", **BASE)
    assert result.returncode == 1
    assert "upstream http://127.0.0.1:9 does not answer: the connection was refused" in (
        result.stderr
    )
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # connections complete in the backlog; nothing ever answers
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        result = run("check", **{**BASE, "JARGATE_UPSTREAM_URL": url})
    assert result.returncode == 1
    assert f"upstream {url} does not answer: no answer within 2 s (timeout)" in result.stderr


async def test_serve_warns_when_the_upstream_does_not_answer() -> None:
    """`jargate serve` starts (readiness tells the rest), and warns what failed."""
    async with GatewayProcess(**BASE) as gateway:
        logs = await gateway.stop()
    assert "the upstream does not answer" in logs
    assert "the connection was refused" in logs


@pytest.mark.parametrize("workers", ["1", "2"])
def test_serve_refuses_a_token_path_that_is_another_owned_path(workers: str) -> None:
    """A token path that is another spelling of a path the gateway serves (here the
    authorization path) cannot be guarded: `serve` exits 2 with one line naming it (each
    worker's, with several)."""
    env = {"JARGATE_TOKEN_PATH": "/Authorize", "JARGATE_PORT": str(free_port())}
    if workers != "1":
        env |= {"JARGATE_WORKERS": workers, "JARGATE_REDIS_URL": "redis://127.0.0.1:9/0"}
    result = run("serve", **BASE, **env)
    assert 2 == result.returncode, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("jargate: ")]
    assert len(lines) == int(workers), result.stderr
    assert lines[0].startswith("jargate: the token path '/Authorize', from JARGATE_TOKEN_PATH,")
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"JARGATE_PORT": "x"}, "JARGATE_PORT: Input should be a valid integer"),
        ({"JARGATE_TYPO": "1"}, "unknown setting(s): JARGATE_TYPO"),
        (
            {"JARGATE_CLIENTS": '{"clients": [{"client_id": "a", "jwks_uri": "x", "jwks": {}}]}'},
            "client 'a'",
        ),
        (
            {"JARGATE_KEYS_FILE": "/nonexistent/keys.json"},
            "JARGATE_KEYS_FILE /nonexistent/keys.json",
        ),
        (
            {"JARGATE_JARM_DEFAULT_ALG": "PS512", "JARGATE_KEYS_FILE": "KEYFILE"},
            "JARGATE_JARM_DEFAULT_ALG is PS512, but the gateway has no PS512 signing key",
        ),
    ],
)
def test_check_refuses_bad_configuration(env: dict[str, str], message: str, tmp_path: Path) -> None:
    """Bad settings, registries and keys exit 2 with one line that names the problem."""
    if env.get("JARGATE_KEYS_FILE") == "KEYFILE":
        key_file = tmp_path / "keys.json"
        key_file.write_text(run("keys", "generate", "--alg", "ES256").stdout)
        env["JARGATE_KEYS_FILE"] = str(key_file)
    result = run("check", "--offline", **BASE, **env)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("redirect_uri", "problem"),
    [
        ("javascript:alert(1)", "'javascript:alert(1)': the scheme 'javascript' is refused"),
        ("data:text/html,%3Cscript%3Ealert(1)%3C/script%3E", "the scheme 'data' is refused"),
        ("data:text/html;base64,PHNjcmlwdD4", "the scheme 'data' is refused"),
        ("java\tscript:alert(1)", "'java\\tscript:alert(1)' is not a URI"),
        ("http://rp.example/cb", "http is allowed only to a loopback host"),
    ],
)
def test_check_refuses_a_redirect_uri_outside_rfc_8252(
    redirect_uri: str, problem: str, tmp_path: Path
) -> None:
    """A registry with a javascript:, hidden-character or non-loopback http redirect URI makes
    `jargate check` exit 2 with one line naming the file, client, field and rule."""
    registry = tmp_path / "clients.yaml"
    registry.write_text(
        "clients:\n  - client_id: spa\n    redirect_uris: [" + json.dumps(redirect_uri) + "]\n"
    )
    result = run("check", "--offline", **BASE, JARGATE_CLIENTS_FILE=str(registry))
    assert 2 == result.returncode
    (line,) = result.stderr.splitlines()
    assert line.startswith(
        f"jargate: JARGATE_CLIENTS_FILE {registry}: client 'spa': redirect_uris: "
    )
    assert problem in line


EC_CLIENT_JWKS = {
    "keys": [
        {
            "kty": "EC",
            "crv": "P-256",
            "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
            "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
        }
    ]
}


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        (
            {"JARGATE_REDIS_URL": "redis://:s3cret@redis:63x9/0"},
            "JARGATE_REDIS_URL: port '63x9' is not a number from 1 to 65535, "
            "e.g. redis://redis:6379/0",
        ),
        ({"JARGATE_REDIS_URL": "rediss://redis:70000"}, "port '70000' is not a number"),
        (
            {"JARGATE_REDIS_URL": "redis+sentinel://:s3cret@s1:26379,s2:26379"},
            "a Sentinel URL needs the service name as its path, "
            "e.g. redis+sentinel://sentinel-1:26379,sentinel-2:26379/mymaster/0",
        ),
        (
            {"JARGATE_REDIS_URL": "redis+sentinel://s1:2637a/mymaster"},
            "port '2637a' is not a number",
        ),
        ({"JARGATE_REDIS_URL": "redis://redis:6379/one"}, "database 'one' is not a number"),
        ({"JARGATE_REDIS_URL": "redis+sentinel://s1/mymaster/x"}, "database 'x' is not a"),
        ({"JARGATE_REDIS_URL": "unix:///run/redis.sock?db=-1"}, "database '-1' is not a"),
        ({"JARGATE_REDIS_URL": "redis+cluster://node:7000/3"}, "has only database 0"),
        (
            {"JARGATE_UPSTREAM_JWKS_PTH": "/jwks"},
            "unknown setting(s): JARGATE_UPSTREAM_JWKS_PTH "
            "(did you mean JARGATE_UPSTREAM_JWKS_PATH?)",
        ),
        (
            {"JARGATE_CLIENTS": json.dumps({"clients": [{"client_id": "c", "redirect_uri": "x"}]})},
            "JARGATE_CLIENTS: client 'c': redirect_uri: unknown field (did you mean "
            "redirect_uris?)",
        ),
        (
            {
                "JARGATE_CLIENTS": json.dumps(
                    {
                        "clients": [
                            {
                                "client_id": "sealed",
                                "jwks": EC_CLIENT_JWKS,
                                "authorization_encrypted_response_alg": "RSA-OAEP-256",
                            }
                        ]
                    }
                )
            },
            "client 'sealed': authorization_encrypted_response_alg RSA-OAEP-256 fits none of "
            "the keys in its jwks",
        ),
    ],
)
def test_check_names_each_mistake_and_its_fix(env: dict[str, str], problem: str) -> None:
    """Mistakes that used to pass `check` (a Redis URL's port, Sentinel service or database;
    JARM encryption no registered key can receive; a near-miss setting or registry field):
    exit 2 even offline, one line naming the problem and the fix, no secret, no traceback."""
    result = run("check", "--offline", **BASE, **env)
    assert 2 == result.returncode, result.stdout
    (line,) = result.stderr.splitlines()
    assert problem in line
    assert "s3cret" not in line


def test_serve_suggests_the_setting_meant() -> None:
    """`serve` refuses a near-miss setting as `check` does, naming the one meant."""
    result = run("serve", **BASE, JARGATE_REDIS_ULR="redis://redis:6379/0")
    assert 2 == result.returncode
    assert [
        "jargate: unknown setting(s): JARGATE_REDIS_ULR (did you mean JARGATE_REDIS_URL?) "
        "(a typo, or a setting this version does not have)"
    ] == result.stderr.splitlines()


def test_check_warns_about_an_empty_registry() -> None:
    """No clients registered is valid (everything passes through) but said in a warning."""
    result = run("check", "--offline", **BASE)
    assert 0 == result.returncode
    assert [
        "jargate: warning: the client registry is empty (JARGATE_CLIENTS_FILE and "
        "JARGATE_CLIENTS are unset): every request passes through untouched and JAR, PAR and "
        "JARM are refused; register clients to use them"
    ] == result.stderr.splitlines()


def test_keys_generate_and_public(tmp_path: Path) -> None:
    """`keys generate` prints a private JWKS the gateway loads; `keys public` its public half."""
    result = run("keys", "generate", "--alg", "PS256", "--kid", "k-2026")
    assert result.returncode == 0, result.stderr
    path = tmp_path / "keys.json"
    path.write_text(result.stdout)
    (key,) = Keyring.load(path).keys
    assert (key.kid, key.alg, key.use) == ("k-2026", "PS256", "sig")
    public = run("keys", "public", str(path))
    (jwk,) = json.loads(public.stdout)["keys"]
    assert "d" not in jwk
    assert jwk["kid"] == "k-2026"


def test_keys_generate_makes_one_key_per_alg(tmp_path: Path) -> None:
    """`--alg` repeated makes one key each (none silently dropped); `--size` sets RSA's bits;
    the same alg twice, or one `--kid` for several keys, is refused."""
    result = run("keys", "generate", "--alg", "ES256", "--alg", "PS256", "--size", "3072")
    assert result.returncode == 0, result.stderr
    path = tmp_path / "keys.json"
    path.write_text(result.stdout)
    assert ["ES256", "PS256"] == [key.alg for key in Keyring.load(path).keys]
    (rsa,) = [jwk for jwk in json.loads(result.stdout)["keys"] if jwk["kty"] == "RSA"]
    assert 3072 == len(base64.urlsafe_b64decode(rsa["n"] + "==")) * 8
    for extra in (
        ["--alg", "ES256", "--alg", "ES256"],
        ["--alg", "ES256", "--alg", "PS256", "--kid", "k"],
    ):
        refused = run("keys", "generate", *extra)
        assert (2, 1) == (refused.returncode, len(refused.stderr.strip().splitlines()))


def test_keys_generate_refuses_bad_alg() -> None:
    """An unsupported alg is refused with a message, not a traceback."""
    result = run("keys", "generate", "--alg", "HS256")
    assert result.returncode == 2
    assert "unsupported alg 'HS256'" in result.stderr


@pytest.fixture
def legacy_process() -> object:
    """The legacy upstream in a process of its own (for the CLI's own event loop)."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.legacy_upstream", "--port", str(port)], cwd=REPO
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_http(url + "/ping")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_check_warns_when_the_upstream_has_no_discovery(tmp_path: Path) -> None:
    """An upstream that answers but keeps no discovery document where the gateway looks:
    `jargate check` warns, naming the places tried and the setting that fixes it."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_http(url + "/")
        result = run(
            "check",
            JARGATE_UPSTREAM_URL=url,
            JARGATE_ISSUER="http://127.0.0.1:8000",
            JARGATE_AUTHORIZATION_PATH="/o/authorize/",
        )
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert 0 == result.returncode, result.stderr
    assert "serves no discovery document at any of" in result.stderr
    assert "/o/.well-known/openid-configuration" in result.stderr
    assert "JARGATE_UPSTREAM_DISCOVERY_PATH" in result.stderr


def _wait_http(url: str, timeout: float = 15.0) -> None:
    import time
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=1).close()  # noqa: S310 - loopback URL we built
            return
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.mark.slow
async def test_serve_passes_traffic_and_drains_on_sigterm(legacy: Legacy) -> None:
    """`jargate serve` proxies byte-exact; on SIGTERM an in-flight request still completes."""
    from yarl import URL

    async with GatewayProcess(
        JARGATE_UPSTREAM_URL=legacy.url, JARGATE_ISSUER="http://127.0.0.1:8000"
    ) as gateway:
        assert gateway.process is not None
        async with aiohttp.ClientSession() as session:
            target = "/q?a=1&a=2&odd=%zz&x=%2F"
            async with session.get(URL(gateway.url + target, encoded=True)) as response:
                assert 200 == response.status
            # In it (serve's own start-up probes may arrive after it).
            assert target in legacy.recorder.paths()
            slow = asyncio.ensure_future(session.get(gateway.url + "/slow?seconds=1"))
            await asyncio.sleep(0.3)
            gateway.process.send_signal(signal.SIGTERM)
            response = await slow
            assert (200, "slow") == (response.status, await response.text())
        assert 0 == await asyncio.wait_for(gateway.process.wait(), timeout=30)
        logs = await gateway.stop()
    messages = [json.loads(line)["msg"] for line in logs.splitlines()]
    assert "draining in-flight requests" in messages
    assert any("throw-away keys" in m for m in messages)


def test_start_up_objects_are_kept_out_of_garbage_collection() -> None:
    """After start-up, what exists is frozen: full collections no longer walk it."""
    survivor = [object()]  # anything alive now
    try:
        frozen = freeze_startup_objects()
        assert frozen == gc.get_freeze_count() > 1000
        assert not any(item is survivor for item in gc.get_objects())
    finally:
        gc.unfreeze()
    assert any(item is survivor for item in gc.get_objects())


def test_python_dash_m_is_the_same_program() -> None:
    """`python -m proxy --version` answers like the console script."""
    result = run("--version")
    assert result.stdout.startswith("jargate ")


def test_version_is_the_one_in_pyproject() -> None:
    """`jargate --version` prints `jargate <version>`, the version pyproject.toml declares
    (read from the installed package's metadata: the version lives in one place)."""
    import tomllib

    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    result = run("--version")
    assert (0, f"jargate {declared}\n", "") == (result.returncode, result.stdout, result.stderr)


def client_key_pair(directory: Path, alg: str, kid: str) -> tuple[Path, dict[str, Any]]:
    """A client's private key file made by `jargate keys generate`, and its public JWKS."""
    key_file = directory / "client.json"
    key_file.write_text(run("keys", "generate", "--alg", alg, "--kid", kid).stdout)
    return key_file, dict(json.loads(run("keys", "public", str(key_file)).stdout))


async def test_request_object_command_output_is_accepted(
    tmp_path: Path, aiohttp_client: AiohttpClient, legacy: Legacy
) -> None:
    """`jargate request-object` builds an object (encrypted too) that the gateway accepts."""
    from proxy.app import create_app
    from proxy.clients import load_registry
    from proxy.store import MemoryStore
    from tests.support import make_settings

    key_file, public = client_key_pair(tmp_path, "PS256", "cli")
    keyring = Keyring.throwaway()
    gateway_jwks = tmp_path / "gateway.json"
    gateway_jwks.write_text(json.dumps(keyring.public_jwks()))
    registry = load_registry(
        make_settings(
            clients=json.dumps(
                {
                    "clients": [
                        {
                            "client_id": "cli",
                            "jwks": public,
                            "redirect_uris": ["https://rp.example/cb"],
                        }
                    ]
                }
            )
        )
    )
    app = create_app(
        make_settings(legacy.url), registry=registry, keyring=keyring, store=MemoryStore()
    )
    client = await aiohttp_client(app)
    for extra in ([], ["--encrypt-to", str(gateway_jwks)]):
        result = run(
            "request-object",
            "--key",
            str(key_file),
            "--client-id",
            "cli",
            "--param",
            "redirect_uri=https://rp.example/cb",
            "--param",
            "scope=openid email",
            *extra,
            JARGATE_ISSUER="http://127.0.0.1:8000",
        )
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        url = lines[lines.index("authorization URL:") + 1]
        assert lines[lines.index("code_verifier (keep it for the token request):") + 1]
        path = url.removeprefix("http://127.0.0.1:8000")
        response = await client.get(path, allow_redirects=False)
        assert response.status == 302
        assert response.headers["Location"].startswith("https://rp.example/cb?code=")
    assert len([r for r in legacy.recorder.requests if r.raw_path.startswith("/authorize")]) == 2


async def test_request_object_par_pushes_and_is_accepted(
    tmp_path: Path, aiohttp_server: AiohttpServer, legacy: Legacy
) -> None:
    """`jargate request-object --par` pushes with private_key_jwt; its URL completes a flow."""
    from proxy.app import create_app
    from proxy.clients import load_registry
    from proxy.store import MemoryStore
    from tests.support import make_settings

    key_file, public = client_key_pair(tmp_path, "ES256", "par-cli")
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    clients = {
        "clients": [
            {
                "client_id": "par-cli",
                "jwks": public,
                "redirect_uris": ["https://rp.example/cb"],
                "require_pushed_authorization_requests": True,
            }
        ]
    }
    settings = make_settings(legacy.url, issuer=issuer, clients=json.dumps(clients))
    app = create_app(settings, registry=load_registry(settings), store=MemoryStore())
    server = await aiohttp_server(app, port=port)
    process = await asyncio.create_subprocess_exec(
        *JARGATE,
        "request-object",
        "--key",
        str(key_file),
        "--client-id",
        "par-cli",
        "--param",
        "redirect_uri=https://rp.example/cb",
        "--par",
        cwd=REPO,
        env=clean_env(JARGATE_ISSUER=issuer),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert 0 == process.returncode, stderr.decode()
    lines = stdout.decode().splitlines()
    assert any(line.startswith(f"pushed to {issuer}/par:") for line in lines)
    url = lines[lines.index("authorization URL:") + 1]
    assert "request_uri=urn%3Aietf%3Aparams%3Aoauth%3Arequest_uri%3A" in url
    async with (
        aiohttp.ClientSession() as browser,
        browser.get(url, allow_redirects=False) as response,
    ):
        assert response.headers["Location"].startswith("https://rp.example/cb?code=")
    await server.close()
