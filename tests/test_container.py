"""The container image, without a Docker engine: the Dockerfile is linted (hadolint) and
checked for our rules, and the wheel it installs is built, installed into a fresh venv and
run with the image's own ENTRYPOINT, CMD and HEALTHCHECK against a test upstream."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from dockerfile_parse import DockerfileParser

from tests.conftest import Legacy
from tests.support import REPO, GatewayProcess

DOCKERFILE = REPO / "Dockerfile"


@pytest.fixture(scope="module")
def dockerfile() -> DockerfileParser:
    return DockerfileParser(path=str(DOCKERFILE))


def instructions(parser: DockerfileParser, name: str) -> list[dict[str, Any]]:
    return [i for i in parser.structure if i["instruction"] == name]


def final_stage(parser: DockerfileParser) -> list[dict[str, Any]]:
    structure: list[dict[str, Any]] = parser.structure
    froms = [index for index, i in enumerate(structure) if i["instruction"] == "FROM"]
    return structure[froms[-1] :]


def test_hadolint_passes() -> None:
    """hadolint (from PyPI) finds nothing to complain about."""
    hadolint = Path(sys.executable).parent / "hadolint"
    result = subprocess.run(
        [str(hadolint), str(DOCKERFILE)], capture_output=True, text=True, check=False
    )
    assert 0 == result.returncode, result.stdout + result.stderr


def test_dockerfile_follows_our_rules(dockerfile: DockerfileParser) -> None:
    """Multi-stage on a base pinned by digest; numeric non-root user; exec-form ENTRYPOINT
    so Python is PID 1; a HEALTHCHECK without curl; OCI labels; no installers at runtime."""
    args = {
        i["value"].split("=", 1)[0]: i["value"].split("=", 1)[1]
        for i in instructions(dockerfile, "ARG")
    }
    assert "@sha256:" in args["PYTHON_IMAGE"]
    assert 2 <= len(instructions(dockerfile, "FROM"))
    final = final_stage(dockerfile)
    users = [i["value"] for i in final if i["instruction"] == "USER"]
    uid, gid = users[-1].split(":")
    assert int(uid) > 0
    assert int(gid) > 0
    entrypoint = [i["value"] for i in final if i["instruction"] == "ENTRYPOINT"]
    assert ["python", "-m", "proxy"] == json.loads(entrypoint[-1])
    healthcheck = " ".join(i["value"] for i in final if i["instruction"] == "HEALTHCHECK")
    assert "/healthz" in healthcheck
    assert "curl" not in healthcheck
    assert "wget" not in healthcheck
    labels = dockerfile.labels
    for name in ("title", "description", "version", "licenses", "source"):
        assert f"org.opencontainers.image.{name}" in labels
    runtime_runs = " ".join(i["value"] for i in final if i["instruction"] == "RUN")
    assert "pip install" not in runtime_runs
    assert "apt-get" not in runtime_runs
    assert any(i["instruction"] == "COPY" and "--from=build" in i["value"] for i in final), (
        "the runtime stage copies the built venv"
    )
    assert "PYTHONDONTWRITEBYTECODE=1" in dockerfile.content
    build_stage_runs = " ".join(
        i["value"] for i in dockerfile.structure if i["instruction"] == "RUN"
    )
    assert "--no-cache-dir" in build_stage_runs
    assert "--require-hashes --requirement requirements.lock" in build_stage_runs


@pytest.fixture(scope="module")
def installed_python(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A fresh venv installed as the Dockerfile installs it: the lock with its hashes
    checked (pip refuses a lock missing any dependency), then the wheel without deps."""
    root = tmp_path_factory.mktemp("image")
    wheels, venv = root / "wheels", root / "venv"
    build = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir"]
    subprocess.run([*build, str(wheels), str(REPO)], check=True, capture_output=True)
    (wheel,) = wheels.glob("jargate-*.whl")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    pip = [python, "-m", "pip", "--disable-pip-version-check"]
    locked = [*pip, "install", "--quiet", "--require-hashes", "--requirement"]
    subprocess.run([*locked, str(REPO / "requirements.lock")], check=True, capture_output=True)
    subprocess.run([*pip, "install", "--quiet", "--no-deps", str(wheel)], check=True)
    subprocess.run([*pip, "check"], check=True, capture_output=True)
    return python


def image_command(parser: DockerfileParser, instruction: str, python: str) -> list[str]:
    """An exec-form instruction of the runtime stage, with the venv's python."""
    value = [i["value"] for i in final_stage(parser) if i["instruction"] == instruction][-1]
    if instruction == "HEALTHCHECK":
        value = value[value.index("CMD") + 3 :].strip()
    return [python if part == "python" else part for part in json.loads(value)]


async def run(*command: str, cwd: Path | None = None, **env: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        *command, env=env or None, stdout=asyncio.subprocess.PIPE, cwd=cwd
    )
    stdout, _ = await asyncio.wait_for(process.communicate(), timeout=30)
    return int(process.returncode or 0), stdout.decode()


@pytest.mark.slow
async def test_the_image_command_runs_the_built_wheel(
    tmp_path: Path, legacy: Legacy, dockerfile: DockerfileParser, installed_python: str
) -> None:
    """ENTRYPOINT + CMD from the Dockerfile run the installed wheel (outside the source tree);
    its HEALTHCHECK passes and traffic reaches the upstream."""
    command = [
        *image_command(dockerfile, "ENTRYPOINT", installed_python),
        *image_command(dockerfile, "CMD", installed_python),
    ]
    async with GatewayProcess.running(
        command,
        tmp_path,
        JARGATE_UPSTREAM_URL=legacy.url,
        JARGATE_ISSUER="http://127.0.0.1:8000",
        PYTHONDONTWRITEBYTECODE="1",
    ) as gateway:
        probe = image_command(dockerfile, "HEALTHCHECK", installed_python)
        assert 0 == (await run(*probe, JARGATE_PORT=str(gateway.port)))[0]
        async with (
            aiohttp.ClientSession() as session,
            session.get(gateway.url + "/from/the/image") as response,
        ):
            assert 200 == response.status
    assert "/from/the/image" in legacy.recorder.paths()
    _, where = await run(
        installed_python, "-c", "import proxy; print(proxy.__file__)", cwd=tmp_path
    )
    assert "site-packages/proxy" in where
