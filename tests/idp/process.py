"""Start and stop a test identity provider: provision its SQLite database in a temporary
directory, then serve it with gunicorn on a free loopback port (bounded waits; stopped by
its process id)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.support import REPO, free_port


@dataclass(frozen=True)
class Paths:
    """Where a provider serves what, the path its issuer ends with, and other spellings of
    its authorization path that its stack routes to the same view (gunicorn decodes
    ``%2F`` into ``/`` before Django routes)."""

    issuer_path: str
    authorization: str
    token: str
    jwks: str
    discovery: str
    spellings: tuple[str, ...]


PATHS = {
    "dot": Paths(
        issuer_path="/o",
        authorization="/o/authorize/",
        token="/o/token/",
        jwks="/o/.well-known/jwks.json",
        discovery="/o/.well-known/openid-configuration",
        spellings=("/o%2Fauthorize/", "/o/authorize%2F"),
    ),
    "dop": Paths(
        issuer_path="/openid",
        authorization="/openid/authorize",
        token="/openid/token",
        jwks="/openid/jwks",
        discovery="/openid/.well-known/openid-configuration",
        spellings=("/openid%2Fauthorize", "/openid/authorize%2F"),
    ),
    "allauth": Paths(
        issuer_path="",
        authorization="/identity/o/authorize",
        token="/identity/o/api/token",
        jwks="/.well-known/jwks.json",
        discovery="/.well-known/openid-configuration",
        spellings=("/identity%2Fo/authorize", "/identity/o%2Fauthorize"),
    ),
}
NAMES = {
    "dot": "django-oauth-toolkit",
    "dop": "django-oidc-provider",
    "allauth": "django-allauth",
}


@dataclass
class IdentityProvider:
    """A running provider and what it has received."""

    server: str
    gateway_origin: str
    issuer: str
    url: str
    paths: Paths
    state_dir: Path
    process: subprocess.Popen[bytes]

    @property
    def access_log(self) -> Path:
        return self.state_dir / "access.log"

    def received(self) -> list[str]:
        """Every request the provider saw so far, ``METHOD target`` each."""
        if not self.access_log.exists():
            return []
        return self.access_log.read_text(encoding="utf-8").splitlines()

    def stop(self) -> str:
        """Stop gunicorn (SIGTERM, bounded wait) and return what it logged."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        log = (self.state_dir / "gunicorn.log").read_text(errors="replace")
        shutil.rmtree(self.state_dir, ignore_errors=True)
        return log


def _rsa_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def start(server: str, gateway_origin: str, clients: list[dict[str, Any]]) -> IdentityProvider:
    """Provision and start ``server`` (``dot``, ``dop`` or ``allauth``) with its issuer at
    the gateway's origin; ``clients``: ``client_id``, ``client_secret``, ``redirect_uris``."""
    paths = PATHS[server]
    state_dir = Path(tempfile.mkdtemp(prefix=f"jargate-idp-{server}-"))
    (state_dir / "oidc-rsa.pem").write_text(_rsa_pem())
    issuer = gateway_origin + paths.issuer_path
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.idp.settings",
        "IDP_SERVER": server,
        "IDP_STATE_DIR": str(state_dir),
        "IDP_ISSUER": issuer,
        "IDP_ACCESS_LOG": str(state_dir / "access.log"),
        "IDP_CLIENTS": json.dumps(clients),
    }
    subprocess.run(
        [sys.executable, "-m", "tests.idp.provision"], cwd=REPO, env=env, check=True, timeout=120
    )
    port = free_port()
    with (state_dir / "gunicorn.log").open("wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                "1",
                "--worker-class",
                "gthread",
                "--threads",
                "4",
                "--timeout",
                "30",
                "--no-control-socket",
                "tests.idp.wsgi:application",
            ],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    provider = IdentityProvider(
        server, gateway_origin, issuer, f"http://127.0.0.1:{port}", paths, state_dir, process
    )
    _wait_ready(provider)
    provider.access_log.unlink(missing_ok=True)
    return provider


def _wait_ready(provider: IdentityProvider, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    url = provider.url + provider.paths.jwks
    while time.monotonic() < deadline:
        if provider.process.poll() is not None:
            raise RuntimeError(f"{provider.server} exited:\n{provider.stop()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:  # noqa: S310 - loopback
                if answer.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.1)
    raise RuntimeError(f"{provider.server} did not start in {timeout} s:\n{provider.stop()}")
