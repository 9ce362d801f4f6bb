"""Every typed ``web.AppKey`` of the gateway, and nothing else. The types are imported for
type checking only, so that any module may import this one."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    import aiohttp

    from .client_keys import JwksCache
    from .config import LiveConfig, Reloader
    from .metadata import Metadata
    from .observability import Metrics
    from .request.obtain import RequestUriFetches
    from .routing import Router
    from .settings import Settings
    from .store import Store
    from .token.endpoint import TokenPath
    from .upstream import Upstream

SETTINGS: web.AppKey[Settings] = web.AppKey("settings")
#: The registry, keys and prequoted values in use, swapped whole by a reload
#: (:mod:`proxy.config`; a request reads them with :func:`proxy.config.config_of`).
CONFIG: web.AppKey[LiveConfig] = web.AppKey("config")
#: Reloads ``CONFIG`` (file changes, SIGHUP).
RELOADER: web.AppKey[Reloader] = web.AppKey("reloader")
METRICS: web.AppKey[Metrics] = web.AppKey("metrics")
STORE: web.AppKey[Store] = web.AppKey("store")
UPSTREAM: web.AppKey[Upstream] = web.AppKey("upstream")
#: Outbound HTTP for client jwks_uri fetches (never the upstream pool).
OUTBOUND: web.AppKey[aiohttp.ClientSession] = web.AppKey("outbound")
JWKS_CACHE: web.AppKey[JwksCache] = web.AppKey("jwks_cache")
METADATA: web.AppKey[Metadata] = web.AppKey("metadata")
#: request_uri fetches: a separate session whose resolver refuses non-public addresses.
FETCH: web.AppKey[RequestUriFetches] = web.AppKey("fetch")
#: The one router of the gateway's own paths (the token path joins it at start).
ROUTER: web.AppKey[Router] = web.AppKey("router")
#: Where the upstream's token endpoint is, which the gateway serves (known at start).
TOKEN_PATH: web.AppKey[TokenPath] = web.AppKey("token_path")
