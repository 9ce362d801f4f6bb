"""Every typed ``web.AppKey`` of the gateway, and nothing else."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from .client_keys import JwksCache
from .clients import ClientRegistry
from .keyring import Keyring
from .metadata import Metadata
from .observability import Metrics
from .request.obtain import RequestUriFetches
from .settings import Settings
from .store import Store
from .upstream import Upstream

SETTINGS = web.AppKey("settings", Settings)
REGISTRY = web.AppKey("registry", ClientRegistry)
KEYRING = web.AppKey("keyring", Keyring)
METRICS = web.AppKey("metrics", Metrics)
STORE: web.AppKey[Store] = web.AppKey("store")
UPSTREAM = web.AppKey("upstream", Upstream)
#: Outbound HTTP for client jwks_uri and request_uri fetches (never the upstream pool).
OUTBOUND = web.AppKey("outbound", aiohttp.ClientSession)
JWKS_CACHE = web.AppKey("jwks_cache", JwksCache)
METADATA = web.AppKey("metadata", Metadata)
#: request_uri fetches: a separate session whose resolver refuses non-public addresses.
FETCH = web.AppKey("fetch", RequestUriFetches)
