"""Serving discovery and published keys.

The discovery document (:mod:`proxy.discovery`: where it is, what goes into it) is served
at every path a client looks. The gateway's public keys are served at
``JARGATE_JWKS_PATH`` and merged into the upstream's own JWKS response at
``JARGATE_UPSTREAM_JWKS_PATH`` when set, so that clients reading ``jwks_uri`` find them.

What the gateway computes once for everyone never depends on a request: the upstream's
documents are fetched as the issuer (:func:`fetch_as_issuer`) and cached under the
gateway's own path for each, never the path or ``Host`` a request came with.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from proxy import appkeys
from proxy.bodies import BodyTooLarge, read_body
from proxy.config import config_of
from proxy.discovery import DISCOVERY_PATHS, augment, built_document, candidate_paths
from proxy.errors import TemporarilyUnavailable, UpstreamTimeout, UpstreamUnavailable
from proxy.keyring import Keyring
from proxy.routing import Handler
from proxy.settings import Settings

__all__ = ["DISCOVERY_PATHS", "Metadata", "fetch_as_issuer", "upstream_discovery"]
#: The cache key of the discovery document (one document, served at every path).
_DISCOVERY = "discovery"
CACHE_SECONDS = 60.0
#: How long a failed fetch of an upstream document stands before the upstream is asked again.
FAILURE_SECONDS = 5.0
MAX_DOCUMENT_BYTES = 1024 * 1024
DOCUMENT_TIMEOUT = aiohttp.ClientTimeout(total=5)
_JSON_HEADERS = {"Cache-Control": f"public, max-age={int(CACHE_SECONDS)}"}

log = logging.getLogger("jargate.metadata")


@dataclass(slots=True)
class _Cached:
    """A document as served, until ``expires_at``; or the failure to answer instead. It
    was built from ``upstream`` (the upstream's document) with ``keyring``: a reload's new
    keys rebuild it from the same upstream document, without asking the upstream again."""

    document: dict[str, Any] | None
    expires_at: float
    failure: type[TemporarilyUnavailable] | None = None
    upstream: dict[str, Any] | None = None
    keyring: Keyring | None = None


class Metadata:
    """Serves discovery and the merged JWKS, each fetched from the upstream as the issuer
    and cached under the gateway's own path for it (never the request's), and the
    gateway's published keys."""

    def __init__(self) -> None:
        self._cache: dict[str, _Cached] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def document(self, request: web.Request) -> dict[str, Any]:
        """The discovery document: the upstream's, wherever it keeps it, augmented; or one
        built from the settings."""
        app = request.app
        settings, keyring = app[appkeys.SETTINGS], config_of(request).keyring
        token_path = app[appkeys.TOKEN_PATH].path

        def build(upstream: dict[str, Any] | None) -> dict[str, Any]:
            if upstream is not None and "issuer" in upstream:
                return augment(upstream, settings, keyring, token_path)
            return built_document(settings, keyring, token_path)

        return await self._cached(app, _DISCOVERY, build, keyring)

    async def discovery(self, request: web.Request) -> web.Response:
        """Serve the discovery document (at each of its paths, in any spelling)."""
        document = await self.document(request)
        return web.json_response(document, headers=_JSON_HEADERS)

    async def jwks(self, request: web.Request) -> web.Response:
        """The gateway's public keys."""
        return web.json_response(config_of(request).keyring.public_jwks(), headers=_JSON_HEADERS)

    def merged_jwks_for(self, path: str) -> Handler:
        """The handler serving the upstream's JWKS at ``path`` (``JARGATE_UPSTREAM_JWKS_PATH``)
        with the gateway's public keys added (the upstream's own kids win)."""

        async def merged_jwks(request: web.Request) -> web.Response:
            keyring = config_of(request).keyring
            public = keyring.public_jwks()["keys"]
            merged = await self._cached(
                request.app, path, lambda upstream: merge_jwks(upstream, public), keyring
            )
            return web.json_response(merged, headers=_JSON_HEADERS)

        return merged_jwks

    async def _cached(
        self,
        app: web.Application,
        path: str,
        build: Callable[[dict[str, Any] | None], dict[str, Any]],
        keyring: Keyring,
    ) -> dict[str, Any]:
        """What ``build`` makes of the upstream's document at ``path``, cached for
        :data:`CACHE_SECONDS`. On a miss one request fetches while the others wait for
        it. A failed fetch keeps serving the document fetched before, or answers the
        failure, for :data:`FAILURE_SECONDS`; then the upstream is asked again. A
        document built with other keys than ``keyring`` (a reload) is built again."""
        entry = self._cache.get(path)
        if entry is None or entry.expires_at <= time.monotonic():
            async with self._locks.setdefault(path, asyncio.Lock()):
                entry = self._cache.get(path)
                if entry is None or entry.expires_at <= time.monotonic():
                    entry = await self._refresh(app, path, build, entry, keyring)
                    self._cache[path] = entry
        if entry.document is not None and entry.keyring is not keyring:
            entry = replace(entry, document=build(entry.upstream), keyring=keyring)
            self._cache[path] = entry
        if entry.document is None:
            raise (entry.failure or UpstreamUnavailable)()
        return entry.document

    @staticmethod
    async def _refresh(
        app: web.Application,
        path: str,
        build: Callable[[dict[str, Any] | None], dict[str, Any]],
        previous: _Cached | None,
        keyring: Keyring,
    ) -> _Cached:
        session, settings = app[appkeys.UPSTREAM].session, app[appkeys.SETTINGS]
        try:
            if path == _DISCOVERY:
                upstream = await upstream_discovery(session, settings, strict=True)
            else:
                upstream = await fetch_as_issuer(session, settings, path)
        except TemporarilyUnavailable as exc:
            log.warning(
                "an upstream document could not be fetched",
                extra={"path": path, "error": type(exc).__name__},
            )
            until = time.monotonic() + FAILURE_SECONDS
            if previous is not None and previous.document is not None:
                return replace(previous, expires_at=until)
            return _Cached(None, until, type(exc))
        return _Cached(build(upstream), time.monotonic() + CACHE_SECONDS, None, upstream, keyring)


def merge_jwks(upstream: dict[str, Any] | None, public: list[dict[str, Any]]) -> dict[str, Any]:
    """The upstream's keys first, then the gateway's whose ``kid`` the upstream does not use."""
    listed = upstream.get("keys") if upstream is not None else None
    keys = [key for key in listed if isinstance(key, dict)] if isinstance(listed, list) else []
    kids = {key.get("kid") for key in keys}
    return {"keys": keys + [key for key in public if key["kid"] not in kids]}


async def fetch_as_issuer(
    session: aiohttp.ClientSession, settings: Settings, path: str
) -> dict[str, Any] | None:
    """The upstream's JSON object at ``path``, asked as the issuer: ``Host`` and
    ``X-Forwarded-Host`` the issuer's host, ``X-Forwarded-Proto`` its scheme, and nothing
    from any request (no cookies, no credentials, no client headers), so an upstream that
    builds URLs from the request names the issuer's. None when the upstream has none (a
    4xx, or a complete answer that is not a JSON object). Raises
    :class:`UpstreamUnavailable` when it is unreachable, answers 5xx, or sends a body cut
    short or over :data:`MAX_DOCUMENT_BYTES`; :class:`UpstreamTimeout` past
    :data:`DOCUMENT_TIMEOUT`."""
    parts = urlsplit(settings.issuer)
    headers = {
        "Host": parts.netloc,
        "X-Forwarded-Host": parts.netloc,
        "X-Forwarded-Proto": parts.scheme,
        "Accept": "application/json",
        "Accept-Encoding": "identity",
    }
    try:
        async with session.get(
            settings.upstream_url + path,
            headers=headers,
            allow_redirects=False,
            timeout=DOCUMENT_TIMEOUT,
        ) as response:
            if response.status >= 500:
                raise UpstreamUnavailable()
            if response.status != 200:
                return None
            body = await read_body(response, MAX_DOCUMENT_BYTES)
    except TimeoutError as exc:
        raise UpstreamTimeout() from exc
    except (aiohttp.ClientError, OSError, BodyTooLarge) as exc:
        raise UpstreamUnavailable() from exc
    try:
        document = json.loads(body)
    except ValueError:
        return None
    return document if isinstance(document, dict) else None


async def upstream_discovery(
    session: aiohttp.ClientSession, settings: Settings, *, strict: bool = False
) -> dict[str, Any] | None:
    """The upstream's discovery document as it gives it to the issuer, from the first of
    :func:`~proxy.discovery.candidate_paths` that holds one (an object with an
    ``issuer``); None when none does. An upstream that fails to answer (down, a 5xx, a
    broken body) ends the search: None, or with ``strict`` (serving) the failure."""
    for path in candidate_paths(settings):
        try:
            document = await fetch_as_issuer(session, settings, path)
        except TemporarilyUnavailable:
            if strict:
                raise
            return None
        if document is not None and "issuer" in document:
            return document
    return None


def issuer_problem(settings: Settings, document: dict[str, Any] | None) -> str | None:
    """An error when the upstream's issuer differs from JARGATE_ISSUER: ID tokens minted
    upstream carry the upstream's issuer, so the two must be the same."""
    if document is None or document.get("issuer") == settings.issuer:
        return None
    return (
        f"JARGATE_ISSUER is {settings.issuer!r} but the upstream's discovery says its issuer "
        f"is {document.get('issuer')!r}: they must be the same, and the gateway must serve "
        "that origin"
    )


def discovery_advice(settings: Settings, document: dict[str, Any] | None) -> list[str]:
    """Warnings about the upstream's discovery: none found (the gateway then serves one
    built from the settings), or clients reading its jwks_uri not finding JARM keys."""
    if document is None:
        return [
            "the upstream serves no discovery document at any of "
            + ", ".join(candidate_paths(settings))
            + ": the gateway serves one built from the settings; set "
            "JARGATE_UPSTREAM_DISCOVERY_PATH if the upstream keeps it elsewhere"
        ]
    jwks_uri = document.get("jwks_uri")
    if not isinstance(jwks_uri, str) or settings.upstream_jwks_path is not None:
        return []
    return [
        f"the upstream publishes jwks_uri {jwks_uri!r}: set JARGATE_UPSTREAM_JWKS_PATH="
        f"{urlsplit(jwks_uri).path} so that clients find the gateway's JARM keys there"
    ]
