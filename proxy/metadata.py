"""Discovery and published keys.

``/.well-known/openid-configuration`` and ``/.well-known/oauth-authorization-server`` are
the upstream's documents with the JAR, PAR and JARM fields set from what the gateway
really supports (or, when the upstream has no such document, one built from the
settings); the upstream's other fields are untouched. The gateway's public keys are
served at ``JARGATE_JWKS_PATH`` and merged into the upstream's own JWKS response at
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
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from proxy import appkeys
from proxy.algorithms import ENCRYPTION_ALGS, ENCRYPTION_ENCS
from proxy.bodies import BodyTooLarge, read_body
from proxy.errors import TemporarilyUnavailable, UpstreamTimeout, UpstreamUnavailable
from proxy.keyring import Keyring
from proxy.request.params import JWT_MODES, PLAIN_MODES
from proxy.routing import Handler
from proxy.settings import SIGNING_ALGS, Settings

DISCOVERY_PATHS = ("/.well-known/openid-configuration", "/.well-known/oauth-authorization-server")
CACHE_SECONDS = 60.0
#: How long a failed fetch of an upstream document stands before the upstream is asked again.
FAILURE_SECONDS = 5.0
MAX_DOCUMENT_BYTES = 1024 * 1024
DOCUMENT_TIMEOUT = aiohttp.ClientTimeout(total=5)
_JSON_HEADERS = {"Cache-Control": f"public, max-age={int(CACHE_SECONDS)}"}

log = logging.getLogger("jargate.metadata")


def origin_of(url: str) -> str:
    """``scheme://host[:port]`` of a URL."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def gateway_fields(settings: Settings, keyring: Keyring) -> dict[str, Any]:
    """The metadata the gateway is responsible for (RFC 9101 §9, RFC 9126 §5, JARM §4,
    RFC 9207 §3). ``request_uri_parameter_supported`` is explicit: its default is true."""
    origin = origin_of(settings.issuer)
    fields: dict[str, Any] = {
        "request_parameter_supported": True,
        "request_uri_parameter_supported": True,
        "require_request_uri_registration": True,
        "request_object_signing_alg_values_supported": list(SIGNING_ALGS),
        "authorization_signing_alg_values_supported": list(keyring.signing_algs),
        "authorization_encryption_alg_values_supported": list(ENCRYPTION_ALGS),
        "authorization_encryption_enc_values_supported": list(ENCRYPTION_ENCS),
        "authorization_response_iss_parameter_supported": True,
        "pushed_authorization_request_endpoint": origin + settings.par_path,
        "require_pushed_authorization_requests": settings.require_par,
    }
    if keyring.decryption_algs:
        fields["request_object_encryption_alg_values_supported"] = list(keyring.decryption_algs)
        fields["request_object_encryption_enc_values_supported"] = list(ENCRYPTION_ENCS)
    return fields


def augment(document: dict[str, Any], settings: Settings, keyring: Keyring) -> dict[str, Any]:
    """The upstream's document with the gateway's fields set and the JWT response modes
    added to the modes it supports (Discovery's default is query and fragment)."""
    result = dict(document)
    upstream_modes = document.get("response_modes_supported")
    modes = list(upstream_modes) if isinstance(upstream_modes, list) else ["query", "fragment"]
    for mode in sorted(PLAIN_MODES) + sorted(JWT_MODES):
        if mode not in modes:
            modes.append(mode)
    result["response_modes_supported"] = modes
    result.update(gateway_fields(settings, keyring))
    # An upstream jwks_uri stays (ID tokens are verified with it); the gateway's keys are
    # merged into it at JARGATE_UPSTREAM_JWKS_PATH. Without one, the gateway's own serves.
    result.setdefault("jwks_uri", _gateway_jwks_uri(settings))
    return result


def _gateway_jwks_uri(settings: Settings) -> str:
    return origin_of(settings.issuer) + settings.jwks_path


def built_document(settings: Settings, keyring: Keyring) -> dict[str, Any]:
    """A document for an upstream that has none, from the settings alone."""
    origin = origin_of(settings.issuer)
    document = {
        "issuer": settings.issuer,
        "authorization_endpoint": origin + settings.authorization_path,
        "jwks_uri": _gateway_jwks_uri(settings),
        "response_types_supported": ["code"],
    }
    return augment(document, settings, keyring)


@dataclass(slots=True)
class _Cached:
    """A document as served, until ``expires_at``; or the failure to answer instead."""

    document: dict[str, Any] | None
    expires_at: float
    failure: type[TemporarilyUnavailable] | None = None


class Metadata:
    """Serves discovery and the merged JWKS, each fetched from the upstream as the issuer
    and cached under the gateway's own path for it (never the request's), and the
    gateway's published keys."""

    def __init__(self) -> None:
        self._cache: dict[str, _Cached] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def document(self, app: web.Application, path: str) -> dict[str, Any]:
        """The discovery document at ``path`` (one of :data:`DISCOVERY_PATHS`): the
        upstream's, augmented, or one built from the settings."""
        settings, keyring = app[appkeys.SETTINGS], app[appkeys.KEYRING]

        def build(upstream: dict[str, Any] | None) -> dict[str, Any]:
            if upstream is not None and "issuer" in upstream:
                return augment(upstream, settings, keyring)
            return built_document(settings, keyring)

        return await self._cached(app, path, build)

    def discovery_for(self, path: str) -> Handler:
        """The handler serving the discovery document at ``path``, whatever spelling of
        it the request used."""

        async def discovery(request: web.Request) -> web.Response:
            document = await self.document(request.app, path)
            return web.json_response(document, headers=_JSON_HEADERS)

        return discovery

    async def token_endpoint(self, app: web.Application) -> str | None:
        """The upstream's token endpoint URL, from the document it gives the issuer."""
        for path in DISCOVERY_PATHS:
            value = (await self.document(app, path)).get("token_endpoint")
            if isinstance(value, str):
                return value
        return None

    async def jwks(self, request: web.Request) -> web.Response:
        """The gateway's public keys."""
        return web.json_response(request.app[appkeys.KEYRING].public_jwks(), headers=_JSON_HEADERS)

    def merged_jwks_for(self, path: str) -> Handler:
        """The handler serving the upstream's JWKS at ``path`` (``JARGATE_UPSTREAM_JWKS_PATH``)
        with the gateway's public keys added (the upstream's own kids win)."""

        async def merged_jwks(request: web.Request) -> web.Response:
            public = request.app[appkeys.KEYRING].public_jwks()["keys"]
            merged = await self._cached(
                request.app, path, lambda upstream: merge_jwks(upstream, public)
            )
            return web.json_response(merged, headers=_JSON_HEADERS)

        return merged_jwks

    async def _cached(
        self,
        app: web.Application,
        path: str,
        build: Callable[[dict[str, Any] | None], dict[str, Any]],
    ) -> dict[str, Any]:
        """What ``build`` makes of the upstream's document at ``path``, cached for
        :data:`CACHE_SECONDS`. On a miss one request fetches while the others wait for
        it. A failed fetch keeps serving the document fetched before, or answers the
        failure, for :data:`FAILURE_SECONDS`; then the upstream is asked again."""
        entry = self._cache.get(path)
        if entry is None or entry.expires_at <= time.monotonic():
            async with self._locks.setdefault(path, asyncio.Lock()):
                entry = self._cache.get(path)
                if entry is None or entry.expires_at <= time.monotonic():
                    entry = await self._refresh(app, path, build, entry)
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
    ) -> _Cached:
        try:
            upstream = await fetch_as_issuer(
                app[appkeys.UPSTREAM].session, app[appkeys.SETTINGS], path
            )
        except TemporarilyUnavailable as exc:
            log.warning(
                "an upstream document could not be fetched",
                extra={"path": path, "error": type(exc).__name__},
            )
            until = time.monotonic() + FAILURE_SECONDS
            if previous is not None and previous.document is not None:
                return _Cached(previous.document, until)
            return _Cached(None, until, type(exc))
        return _Cached(build(upstream), time.monotonic() + CACHE_SECONDS)


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
    session: aiohttp.ClientSession, settings: Settings
) -> dict[str, Any] | None:
    """The upstream's discovery document as it gives it to the issuer (the start-up and
    ``jargate check`` probe); None when it has none or is down."""
    for path in DISCOVERY_PATHS:
        try:
            document = await fetch_as_issuer(session, settings, path)
        except TemporarilyUnavailable:
            continue
        if document is not None:
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


def jwks_advice(settings: Settings, document: dict[str, Any] | None) -> str | None:
    """A warning when clients reading the upstream's jwks_uri would not find JARM keys."""
    jwks_uri = None if document is None else document.get("jwks_uri")
    if not isinstance(jwks_uri, str) or settings.upstream_jwks_path is not None:
        return None
    return (
        f"the upstream publishes jwks_uri {jwks_uri!r}: set JARGATE_UPSTREAM_JWKS_PATH="
        f"{urlsplit(jwks_uri).path} so that clients find the gateway's JARM keys there"
    )
