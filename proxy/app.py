"""``create_app(settings)``: wiring only. Every resource lives in its own cleanup context."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from . import appkeys
from .client_keys import JwksCache
from .clients import ClientRegistry, load_registry
from .keyring import Keyring, KeyringError
from .metadata import DISCOVERY_PATHS, Metadata
from .observability import (
    REQUEST_ID,
    Handler,
    Metrics,
    healthz,
    observing,
    readiness_handler,
)
from .query import prequote
from .request.authorize import authorize
from .request.obtain import RequestUriFetches, create_fetch_session
from .request.par import push
from .response.complete import relay_or_complete
from .settings import Settings
from .store import Store, build_store
from .upstream import Upstream, canonical_path


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
        },
    )
    app[appkeys.SETTINGS] = settings
    app[appkeys.REGISTRY] = registry
    app[appkeys.KEYRING] = keyring
    app[appkeys.METRICS] = metrics

    async def store_ctx(app: web.Application) -> AsyncIterator[None]:
        if store is None:
            url = settings.redis_url.get_secret_value() if settings.redis_url else None
            app[appkeys.STORE] = build_store(url)
        else:
            app[appkeys.STORE] = store
        yield
        await app[appkeys.STORE].close()

    async def upstream_ctx(app: web.Application) -> AsyncIterator[None]:
        async with Upstream.create_session(settings) as session:
            upstream = app[appkeys.UPSTREAM] = Upstream(session, settings)
            yield
            if upstream.kept is not None:
                upstream.kept.close()

    async def outbound_ctx(app: web.Application) -> AsyncIterator[None]:
        async with aiohttp.ClientSession(
            cookie_jar=aiohttp.DummyCookieJar(), trust_env=False
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
    #: The gateway's own paths and the methods it answers there itself.
    owned: dict[str, tuple[frozenset[str], Handler]] = {
        settings.authorization_path: (frozenset({"GET", "POST"}), authorize),
        settings.jwks_path: (frozenset({"GET"}), metadata.jwks),
    }
    for path in DISCOVERY_PATHS:
        owned[path] = (frozenset({"GET"}), metadata.discovery_for(path))
    owned[settings.par_path] = (frozenset({"POST", "GET", "PUT", "DELETE", "PATCH"}), push)
    if settings.upstream_jwks_path is not None:
        merged_jwks = metadata.merged_jwks_for(settings.upstream_jwks_path)
        owned[settings.upstream_jwks_path] = (frozenset({"GET"}), merged_jwks)

    async def pass_through(request: web.Request) -> web.StreamResponse:
        # The gateway's own paths in another spelling (//authorize, /authorize/,
        # /authorize;jsessionid=x) must not reach the upstream unchecked.
        methods, handler = owned.get(canonical_path(request.path), (frozenset(), None))
        if handler is not None and request.method in methods:
            return await handler(request)
        upstream = await app[appkeys.UPSTREAM].open(request, request_id=REQUEST_ID.get())
        return await relay_or_complete(request, upstream)

    observed = observing(metrics, settings.trusted_proxies)
    app.router.add_get("/healthz", observed(healthz), allow_head=True)
    app.router.add_get("/readyz", observed(readiness_handler(ping_store, upstream_reachable)))
    for path, (methods, handler) in owned.items():
        for method in methods:
            app.router.add_route(method, path, observed(handler))
    app.router.add_route("*", "/{tail:.*}", observed(pass_through))
    return app
