"""Discovery and published keys.

``/.well-known/openid-configuration`` and ``/.well-known/oauth-authorization-server`` are
the upstream's documents with the JAR, PAR and JARM fields set from what the gateway
really supports (or, when the upstream has no such document, one built from the
settings); the upstream's other fields are untouched. The gateway's public keys are
served at ``JARGATE_JWKS_PATH`` and merged into the upstream's own JWKS response at
``JARGATE_UPSTREAM_JWKS_PATH`` when set, so that clients reading ``jwks_uri`` find them.
"""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from proxy import appkeys
from proxy.algorithms import ENCRYPTION_ALGS, ENCRYPTION_ENCS
from proxy.keyring import Keyring
from proxy.request.params import JWT_MODES, PLAIN_MODES
from proxy.settings import SIGNING_ALGS, Settings

DISCOVERY_PATHS = ("/.well-known/openid-configuration", "/.well-known/oauth-authorization-server")
CACHE_SECONDS = 60.0
MAX_DOCUMENT_BYTES = 1024 * 1024
_JSON_HEADERS = {"Cache-Control": f"public, max-age={int(CACHE_SECONDS)}"}


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


class Metadata:
    """Serves discovery (cached briefly) and the published keys."""

    def __init__(self) -> None:
        self._cache: dict[str, tuple[float, dict[str, Any]]] = {}

    async def document(self, request: web.Request, path: str) -> dict[str, Any]:
        """The discovery document at ``path``: the upstream's, augmented, or one built from
        the settings; cached for a minute."""
        app = request.app
        settings, keyring = app[appkeys.SETTINGS], app[appkeys.KEYRING]
        cached = self._cache.get(path)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        upstream = await _fetch_json(request, path)
        document = (
            augment(upstream, settings, keyring)
            if upstream is not None and "issuer" in upstream
            else built_document(settings, keyring)
        )
        self._cache[path] = (time.monotonic() + CACHE_SECONDS, document)
        return document

    async def discovery(self, request: web.Request) -> web.Response:
        """Serve a discovery document."""
        document = await self.document(request, request.path)
        return web.json_response(document, headers=_JSON_HEADERS)

    async def token_endpoint(self, request: web.Request) -> str | None:
        """The upstream's token endpoint URL, from its discovery document, if it names one."""
        for path in DISCOVERY_PATHS:
            value = (await self.document(request, path)).get("token_endpoint")
            if isinstance(value, str):
                return value
        return None

    async def jwks(self, request: web.Request) -> web.Response:
        """The gateway's public keys."""
        return web.json_response(request.app[appkeys.KEYRING].public_jwks(), headers=_JSON_HEADERS)

    async def merged_jwks(self, request: web.Request) -> web.Response:
        """The upstream's JWKS with the gateway's public keys added (its own kids win)."""
        upstream = await _fetch_json(request, request.raw_path)
        keys = list(upstream.get("keys", [])) if upstream is not None else []
        kids = {key.get("kid") for key in keys if isinstance(key, dict)}
        for key in request.app[appkeys.KEYRING].public_jwks()["keys"]:
            if key["kid"] not in kids:
                keys.append(key)
        return web.json_response({"keys": keys}, headers=_JSON_HEADERS)


async def _fetch_json(request: web.Request, target: str) -> dict[str, Any] | None:
    """The upstream's JSON object at ``target``, or None when it has none (not 200, not a
    JSON object). Unreachable upstreams raise as any proxied request does."""
    upstream = await request.app[appkeys.UPSTREAM].open(
        request, raw_target=target, method="GET", with_body=False, credentials=False
    )
    try:
        if upstream.status != 200:
            return None
        body = await upstream.content.read(MAX_DOCUMENT_BYTES + 1)
    except aiohttp.ClientError:
        return None
    finally:
        upstream.release()
    if len(body) > MAX_DOCUMENT_BYTES:
        return None
    try:
        document = json.loads(body)
    except ValueError:
        return None
    return document if isinstance(document, dict) else None


async def upstream_discovery(
    session: aiohttp.ClientSession, settings: Settings
) -> dict[str, Any] | None:
    """The upstream's discovery document, asked as if through the gateway (Host and
    X-Forwarded-* of the issuer's origin); None when it has none or is down."""
    parts = urlsplit(settings.issuer)
    headers = {
        "Host": parts.netloc,
        "X-Forwarded-Host": parts.netloc,
        "X-Forwarded-Proto": parts.scheme,
    }
    for path in DISCOVERY_PATHS:
        try:
            async with session.get(
                settings.upstream_url + path,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=5),
            ) as response:
                if response.status != 200:
                    continue
                document = json.loads(await response.content.read(MAX_DOCUMENT_BYTES))
        except (aiohttp.ClientError, TimeoutError, ValueError):
            continue
        if isinstance(document, dict):
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
