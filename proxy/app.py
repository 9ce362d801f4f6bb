"""``create_app(settings)``: wiring only. Every resource lives in its own cleanup context;
every request goes through one router (:mod:`proxy.routing`), whose errors the boundary
answers (:mod:`proxy.boundary`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from . import appkeys
from .boundary import answer, unexpected
from .client_keys import JwksCache
from .clients import ClientRegistry
from .config import LiveConfig, Reloader, make_config
from .discovery import served_paths
from .errors import StoreUnavailable
from .keyring import Keyring
from .loading import load_keyring, load_registry
from .metadata import Metadata
from .observability import REQUEST_ID, Metrics, healthz, observing, readiness
from .persistence import GuardedConnector
from .request.authorize import authorize
from .request.obtain import RequestUriFetches, create_fetch_session
from .request.par import push
from .response.complete import relay_or_complete, scans
from .routing import Route, Router
from .serving import drop_server_banner
from .settings import Settings
from .store import Store, build_store
from .token.endpoint import TokenPath, token_route_ctx
from .upstream import Upstream

GET = frozenset({"GET"})


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
    live = LiveConfig(make_config(settings, registry, keyring))
    metrics = Metrics() if metrics is None else metrics
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
    app[appkeys.CONFIG] = live
    app[appkeys.METRICS] = metrics
    app[appkeys.RELOADER] = Reloader(settings, live, metrics)
    app[appkeys.METADATA] = Metadata()
    app[appkeys.TOKEN_PATH] = TokenPath()
    if store is not None:
        app[appkeys.STORE] = store
    router = Router(routes(settings, app[appkeys.METADATA]), pass_through, answer, unexpected)
    app[appkeys.ROUTER] = router
    app.cleanup_ctx.extend(
        [store_ctx, upstream_ctx, token_route_ctx, outbound_ctx, fetch_ctx, watch_ctx]
    )
    observed = observing(metrics, settings.trusted_proxies)
    # Every path, line breaks included ("." would stop at one), goes through the router.
    app.router.add_route("*", r"/{tail:[\s\S]*}", observed(router.dispatch))
    return app


def routes(settings: Settings, metadata: Metadata) -> list[tuple[str, Route]]:
    """The gateway's own paths: each owned in every spelling (:mod:`proxy.routing`)."""
    authorization, par = settings.authorization_path, settings.par_path
    owned = [
        ("/healthz", Route("/healthz", GET, healthz)),
        ("/readyz", Route("/readyz", GET, readiness)),
        (authorization, Route(authorization, frozenset({"GET", "POST"}), authorize, head=False)),
        (par, Route(par, frozenset({"POST"}), push, back_channel=True)),
        (settings.jwks_path, Route(settings.jwks_path, GET, metadata.jwks)),
        *((path, Route(path, GET, metadata.discovery)) for path in served_paths(settings)),
    ]
    if settings.upstream_jwks_path is not None:
        path = settings.upstream_jwks_path
        owned.append((path, Route(path, GET, metadata.merged_jwks_for(path))))
    return owned


async def pass_through(request: web.Request) -> web.StreamResponse:
    """Everything the gateway does not own: to the upstream as it came."""
    upstream = await request.app[appkeys.UPSTREAM].open(
        request, request_id=REQUEST_ID.get(), scanned=scans(request)
    )
    return await relay_or_complete(request, upstream)


async def store_ctx(app: web.Application) -> AsyncIterator[None]:
    """The store the settings name (unless one was given), reached once at start so that
    it learns (or begins) its memory before the first request."""
    settings, metrics = app[appkeys.SETTINGS], app[appkeys.METRICS]
    if appkeys.STORE not in app:
        url = settings.redis_url.get_secret_value() if settings.redis_url else None
        app[appkeys.STORE] = build_store(url, settings.max_pending_plain_flows_per_address)
    opened = app[appkeys.STORE]
    metrics.store_resets.read = lambda: opened.memory_resets
    opened.latency = metrics.store_latency
    # A store down now is retried by every operation and by readiness.
    with contextlib.suppress(StoreUnavailable):
        await opened.ping()
    yield
    await opened.close()


async def upstream_ctx(app: web.Application) -> AsyncIterator[None]:
    """The pooled connections to the upstream."""
    settings = app[appkeys.SETTINGS]
    async with Upstream.create_session(settings) as session:
        upstream = app[appkeys.UPSTREAM] = Upstream(session, settings)
        upstream.latency = app[appkeys.METRICS].upstream_latency
        yield
        if upstream.kept is not None:
            upstream.kept.close()


async def outbound_ctx(app: web.Application) -> AsyncIterator[None]:
    """Outbound HTTP for client ``jwks_uri`` fetches."""
    async with aiohttp.ClientSession(
        connector=GuardedConnector(), cookie_jar=aiohttp.DummyCookieJar(), trust_env=False
    ) as session:
        app[appkeys.OUTBOUND] = session
        app[appkeys.JWKS_CACHE] = JwksCache(session)
        yield


async def fetch_ctx(app: web.Application) -> AsyncIterator[None]:
    """``request_uri`` fetches, on a session of their own (the SSRF-guarded resolver)."""
    async with create_fetch_session(app[appkeys.SETTINGS]) as session:
        app[appkeys.FETCH] = RequestUriFetches(session)
        yield


async def watch_ctx(app: web.Application) -> AsyncIterator[None]:
    """Polls the configuration's files for changes (``JARGATE_RELOAD_INTERVAL_SECONDS``,
    0: never; ``SIGHUP`` reloads either way)."""
    interval = app[appkeys.SETTINGS].reload_interval_seconds
    if not interval:
        yield
        return
    task = asyncio.create_task(app[appkeys.RELOADER].watch(interval))
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
