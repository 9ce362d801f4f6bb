"""``create_app(settings)``: wiring only. Every resource lives in its own cleanup context."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from . import appkeys
from .client_keys import JwksCache
from .clients import ClientRegistry, load_registry
from .discovery import served_paths
from .errors import StoreUnavailable
from .keyring import Keyring, KeyringError
from .metadata import Metadata
from .observability import (
    REQUEST_ID,
    Metrics,
    healthz,
    observing,
    readiness_handler,
)
from .persistence import GuardedConnector
from .query import prequote
from .request.authorize import authorize
from .request.obtain import RequestUriFetches, create_fetch_session
from .request.par import push
from .response.complete import relay_or_complete, scans
from .routing import Route, Router
from .serving import drop_server_banner
from .settings import Settings
from .store import Store, build_store
from .upstream import Upstream

GET = frozenset({"GET"})


def load_keyring(settings: Settings, registry: ClientRegistry) -> Keyring:
    """The keys from ``JARGATE_KEYS_FILE``, or throw-away keys covering what clients need."""
    if settings.keys_file is not None:
        return Keyring.load(settings.keys_file)
    wanted = [settings.jarm_default_alg]
    for client in registry:
        for alg in (
            client.meta.authorization_signed_response_alg,
            client.meta.request_object_encryption_alg,
        ):
            if alg is not None:
                wanted.append(alg)
    return Keyring.throwaway(wanted)


def check_keys_cover_clients(
    settings: Settings, registry: ClientRegistry, keyring: Keyring
) -> None:
    """Every signing alg the clients need has a key, and so does every decryption alg."""
    needed = {settings.jarm_default_alg: "JARGATE_JARM_DEFAULT_ALG"}
    for client in registry:
        alg = client.meta.authorization_signed_response_alg
        if alg is not None:
            needed.setdefault(alg, f"client {client.client_id!r} authorization_signed_response_alg")
    for alg, who in needed.items():
        if keyring.signing_key(alg) is None:
            raise KeyringError(f"{who} is {alg}, but the gateway has no {alg} signing key")
    for client in registry:
        alg = client.meta.request_object_encryption_alg
        if alg is not None and alg not in keyring.decryption_algs:
            raise KeyringError(
                f"client {client.client_id!r} request_object_encryption_alg is {alg}, "
                f"but the gateway has no {alg} decryption key"
            )


def create_app(
    settings: Settings,
    *,
    registry: ClientRegistry | None = None,
    keyring: Keyring | None = None,
    store: Store | None = None,
    metrics: Metrics | None = None,
) -> web.Application:
    """Build the gateway. Anything not given is loaded from ``settings``."""
    registry = load_registry(settings) if registry is None else registry
    keyring = load_keyring(settings, registry) if keyring is None else keyring
    check_keys_cover_clients(settings, registry, keyring)
    metrics = Metrics() if metrics is None else metrics
    # ``iss`` in every response, a registered redirect URI in every forwarded query.
    prequote([settings.issuer, *(uri for client in registry for uri in client.meta.redirect_uris)])

    app = web.Application(
        # Bodies the gateway reads itself (POSTed authorization requests); proxied
        # bodies are streamed and not bounded here.
        client_max_size=settings.max_body_bytes,
        handler_args={
            "max_field_size": settings.max_header_bytes,
            "max_line_size": settings.max_header_bytes,
            "max_headers": settings.max_headers,
            # Request bodies reach the upstream as the client encoded them; the gateway
            # reads only identity-encoded ones itself.
            "auto_decompress": False,
        },
    )
    app.on_response_prepare.append(drop_server_banner)
    app[appkeys.SETTINGS] = settings
    app[appkeys.REGISTRY] = registry
    app[appkeys.KEYRING] = keyring
    app[appkeys.METRICS] = metrics

    async def store_ctx(app: web.Application) -> AsyncIterator[None]:
        if store is None:
            url = settings.redis_url.get_secret_value() if settings.redis_url else None
            app[appkeys.STORE] = build_store(url, settings.max_pending_plain_flows_per_address)
        else:
            app[appkeys.STORE] = store
        opened = app[appkeys.STORE]
        metrics.store_resets.read = lambda: opened.memory_resets
        # Reached once at start, the store learns (or begins) its memory before the first
        # request; a store down now is retried by every operation and readiness.
        with contextlib.suppress(StoreUnavailable):
            await opened.ping()
        yield
        await opened.close()

    async def upstream_ctx(app: web.Application) -> AsyncIterator[None]:
        async with Upstream.create_session(settings) as session:
            upstream = app[appkeys.UPSTREAM] = Upstream(session, settings)
            yield
            if upstream.kept is not None:
                upstream.kept.close()

    async def outbound_ctx(app: web.Application) -> AsyncIterator[None]:
        async with aiohttp.ClientSession(
            connector=GuardedConnector(), cookie_jar=aiohttp.DummyCookieJar(), trust_env=False
        ) as session:
            app[appkeys.OUTBOUND] = session
            app[appkeys.JWKS_CACHE] = JwksCache(session)
            yield

    async def fetch_ctx(app: web.Application) -> AsyncIterator[None]:
        async with create_fetch_session(settings) as session:
            app[appkeys.FETCH] = RequestUriFetches(session)
            yield

    app.cleanup_ctx.extend([store_ctx, upstream_ctx, outbound_ctx, fetch_ctx])

    async def ping_store() -> None:
        await app[appkeys.STORE].ping()

    async def upstream_reachable() -> bool:
        return await app[appkeys.UPSTREAM].reachable()

    metadata = Metadata()
    app[appkeys.METADATA] = metadata
    routes = [
        ("/healthz", Route("/healthz", GET, healthz)),
        ("/readyz", Route("/readyz", GET, readiness_handler(ping_store, upstream_reachable))),
        (
            settings.authorization_path,
            Route(settings.authorization_path, frozenset({"GET", "POST"}), authorize, head=False),
        ),
        (settings.par_path, Route(settings.par_path, frozenset({"POST"}), push)),
        (settings.jwks_path, Route(settings.jwks_path, GET, metadata.jwks)),
        *((path, Route(path, GET, metadata.discovery)) for path in served_paths(settings)),
    ]
    if settings.upstream_jwks_path is not None:
        path = settings.upstream_jwks_path
        routes.append((path, Route(path, GET, metadata.merged_jwks_for(path))))

    async def pass_through(request: web.Request) -> web.StreamResponse:
        upstream = await app[appkeys.UPSTREAM].open(
            request, request_id=REQUEST_ID.get(), scanned=scans(request)
        )
        return await relay_or_complete(request, upstream)

    router = Router(routes, pass_through)
    observed = observing(metrics, settings.trusted_proxies)
    # Every path, line breaks included ("." would stop at one), goes through the router.
    app.router.add_route("*", r"/{tail:[\s\S]*}", observed(router.dispatch))
    return app
