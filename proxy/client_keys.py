"""Each client's verification keys fetched from its registered ``jwks_uri``.

:class:`JwksCache` caches them as ``Cache-Control`` allows (within bounds) and refetches
them on an unknown ``kid`` at most once a minute (OIDC Core §10.1.1). A failed attempt
counts as much as one that succeeded: a failing ``jwks_uri`` is asked at most once a
minute too, while the keys fetched before keep serving (or, with none, the failure
stands). Inline ``jwks`` are imported once with the registry (:mod:`proxy.clients`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Protocol

import aiohttp
from joserfc.jwk import KeySet

from .bodies import BodyTooLarge, read_body
from .clients import RegisteredClient, RegistryError, import_client_jwks

log = logging.getLogger("jargate.clients")


class ClientKeysUnavailable(Exception):
    """A client's ``jwks_uri`` could not be fetched and nothing usable is cached."""


class ClientKeys(Protocol):
    """Where a client's verification keys come from: :class:`JwksCache` in the gateway,
    :class:`InlineKeysOnly` offline."""

    async def keys_for(self, client: RegisteredClient, kid: str | None = None) -> KeySet:
        """The client's verification keys (raises :class:`ClientKeysUnavailable`)."""
        ...


class InlineKeysOnly:
    """A client's inline ``jwks`` only; a ``jwks_uri`` is never fetched (``jargate inspect``,
    offline)."""

    async def keys_for(self, client: RegisteredClient, kid: str | None = None) -> KeySet:
        """The inline keys, or :class:`ClientKeysUnavailable` for a ``jwks_uri`` client."""
        if client.keys is not None:
            return client.keys
        if client.meta.jwks_uri is not None:
            raise ClientKeysUnavailable(
                f"its jwks_uri {client.meta.jwks_uri} is not fetched offline"
            )
        raise ClientKeysUnavailable(f"client {client.client_id!r} registered no keys")


_MAX_AGE = re.compile(r"max-age=(\d+)")


@dataclass
class _CachedJwks:
    """The last keys fetched (None until one succeeds); the last attempt and its failure."""

    keys: KeySet | None
    expires_at: float
    attempted_at: float
    failure: str = "jwks_uri could not be fetched"

    def served(self) -> KeySet:
        """The cached keys, or the last attempt's failure when there are none."""
        if self.keys is None:
            raise ClientKeysUnavailable(self.failure)
        return self.keys


@dataclass
class JwksCache:
    """Fetches and caches the keys of clients that registered a ``jwks_uri``."""

    session: aiohttp.ClientSession
    min_ttl: float = 60.0
    max_ttl: float = 86400.0
    default_ttl: float = 300.0
    refetch_interval: float = 60.0
    max_bytes: int = 256 * 1024
    timeout: float = 5.0
    #: By client and URI: a reload that gives a client another jwks_uri drops its old keys.
    _entries: dict[tuple[str, str], _CachedJwks] = field(default_factory=dict)
    _locks: dict[tuple[str, str], asyncio.Lock] = field(default_factory=dict)

    async def keys_for(self, client: RegisteredClient, kid: str | None = None) -> KeySet:
        """The client's verification keys; inline ones directly, ``jwks_uri`` ones cached.

        Expired keys or an unknown ``kid`` cause a fetch, at most one per
        ``refetch_interval`` for each client, failed attempts included (until the next,
        the cached keys keep serving, or the failure stands).
        """
        if client.keys is not None:
            return client.keys
        client_id, uri = client.client_id, client.meta.jwks_uri
        if uri is None:
            raise ClientKeysUnavailable(f"client {client_id!r} registered no keys")
        entry = self._entries.get((client_id, uri))
        if entry is not None and not self._wants_fetch(entry, kid):
            return entry.served()
        async with self._locks.setdefault((client_id, uri), asyncio.Lock()):
            latest = self._entries.get((client_id, uri))
            if latest is not None and latest is not entry:  # attempted while this waited
                return latest.served()
            now = time.monotonic()
            try:
                keys, ttl = await self._fetch(uri, client_id)
                latest = _CachedJwks(keys, now + ttl, now)
            except ClientKeysUnavailable as exc:
                stale = entry or _CachedJwks(None, now, now)
                latest = _CachedJwks(stale.keys, stale.expires_at, now, str(exc))
                if latest.keys is not None:
                    log.warning(
                        "jwks_uri fetch failed; using the cached keys",
                        extra={"client_id": client_id},
                    )
            self._entries[client_id, uri] = latest
            return latest.served()

    def _wants_fetch(self, entry: _CachedJwks, kid: str | None) -> bool:
        now = time.monotonic()
        keys = entry.keys if entry.expires_at > now else None
        if keys is not None and (kid is None or _has_kid(keys, kid)):
            return False
        return now - entry.attempted_at >= self.refetch_interval

    async def _fetch(self, uri: str, client_id: str) -> tuple[KeySet, float]:
        try:
            async with self.session.get(
                uri,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                headers={"Accept": "application/jwk-set+json, application/json"},
            ) as response:
                if response.status != 200:
                    raise ClientKeysUnavailable(f"jwks_uri answered HTTP {response.status}")
                body = await read_body(response, self.max_bytes)
                cache_control = response.headers.get("Cache-Control", "")
        except BodyTooLarge:
            raise ClientKeysUnavailable("jwks_uri document is too large") from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ClientKeysUnavailable(f"jwks_uri unreachable ({type(exc).__name__})") from None
        try:
            keys = import_client_jwks(json.loads(body), f"client {client_id!r}: jwks_uri")
        except (ValueError, RegistryError) as exc:
            raise ClientKeysUnavailable(str(exc)) from None
        return keys, self._ttl(cache_control)

    def _ttl(self, cache_control: str) -> float:
        lowered = cache_control.lower()
        if "no-store" in lowered or "no-cache" in lowered:
            return self.min_ttl
        match = _MAX_AGE.search(lowered)
        ttl = float(match.group(1)) if match else self.default_ttl
        return min(max(ttl, self.min_ttl), self.max_ttl)


def _has_kid(keys: KeySet, kid: str) -> bool:
    return any(key.kid == kid for key in keys)
