"""The configuration a request reads, and reloading it without a restart.

:class:`Config` holds what ``JARGATE_CLIENTS_FILE`` and ``JARGATE_KEYS_FILE`` become: the
client registry, the gateway's keys and the values quoted once from them. The app keeps
one :class:`LiveConfig` (aiohttp freezes the app at start, so its keys cannot be
reassigned); a reload swaps its ``current`` as one reference. A request takes that
reference once, at its first read (:func:`config_of`), and keeps it to its end, so a
reload never mixes an old registry with new keys inside one request.

:class:`Reloader` reloads when a watched file's content changes (polled every
``JARGATE_RELOAD_INTERVAL_SECONDS``: a kubelet swapping a mounted ConfigMap's ``..data``
symlink, an editor's rename or an in-place write all change it) and on ``SIGHUP``. A new
configuration is validated exactly as at start (:func:`load_config`) before it is used;
one that does not validate is not used: the running one stays, the problem is logged at
error, counted, and reported by ``/readyz``. Each worker process reloads on its own.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from . import appkeys
from .clients import ClientRegistry, RegistryError, load_registry
from .keyring import Keyring, KeyringError
from .loading import check_keys_cover_clients, load_keyring
from .observability import Metrics
from .query import Prequoted, prequote
from .settings import Settings

log = logging.getLogger("jargate.config")

#: A watched file's resolved path and the digest of its content (None: unreadable).
Fingerprint = tuple[tuple[str, str | None], ...]


@dataclass(frozen=True, slots=True)
class Config:
    """The registry, the keys and the values quoted from them: swapped together."""

    registry: ClientRegistry
    keyring: Keyring
    prequoted: Prequoted


def make_config(settings: Settings, registry: ClientRegistry, keyring: Keyring) -> Config:
    """``registry`` and ``keyring`` checked to fit together (raises :class:`KeyringError`)."""
    check_keys_cover_clients(settings, registry, keyring)
    # ``iss`` in every response, a registered redirect URI in every forwarded query.
    prequoted = prequote(
        [settings.issuer, *(uri for client in registry for uri in client.meta.redirect_uris)]
    )
    return Config(registry, keyring, prequoted)


def load_config(settings: Settings, running: Keyring | None = None) -> Config:
    """What the settings name, validated as at start. Without ``JARGATE_KEYS_FILE`` the
    ``running`` throw-away keys are kept (new ones would break every JARM response signed
    so far); raises :class:`RegistryError` or :class:`KeyringError`."""
    registry = load_registry(settings)
    if settings.keys_file is None and running is not None:
        keyring = running
    else:
        keyring = load_keyring(settings, registry)
    return make_config(settings, registry, keyring)


class LiveConfig:
    """The configuration in use (``current``, replaced whole by a reload) and whether the
    last reload failed."""

    __slots__ = ("current", "reload_failed")

    def __init__(self, current: Config) -> None:
        self.current = current
        self.reload_failed = False


#: The configuration a request started with (:func:`config_of`).
_PINNED: web.RequestKey[Config] = web.RequestKey("config")


def config_of(request: web.Request) -> Config:
    """The configuration this request reads: the current one at its first read, the same
    one at every later read, whatever reloads meanwhile."""
    pinned = request.get(_PINNED)
    if pinned is None:
        pinned = request[_PINNED] = request.app[appkeys.CONFIG].current
    return pinned


def watched_files(settings: Settings, registry: ClientRegistry) -> list[Path]:
    """The files a configuration was read from: the registry and keys files, and the
    clients' secret files."""
    files = [path for path in (settings.clients_file, settings.keys_file) if path is not None]
    for client in registry:
        for path in (client.meta.client_secret_file, client.meta.upstream_client_secret_file):
            if path is not None:
                files.append(path)
    return files


def fingerprint(files: list[Path]) -> Fingerprint:
    """Each file's resolved path (through a ConfigMap's ``..data`` symlink) and content
    digest: any change of either is a change."""
    seen: list[tuple[str, str | None]] = []
    for path in files:
        resolved = os.path.realpath(path)
        try:
            digest: str | None = hashlib.sha256(Path(resolved).read_bytes()).hexdigest()
        except OSError:
            digest = None
        seen.append((resolved, digest))
    return tuple(seen)


class Reloader:
    """Reloads the app's configuration on demand (:meth:`reload`) and when a watched file
    changes (:meth:`watch`); one reload at a time."""

    def __init__(self, settings: Settings, live: LiveConfig, metrics: Metrics) -> None:
        self.settings = settings
        self.live = live
        self.metrics = metrics
        self._lock = asyncio.Lock()
        #: What the running configuration was read from.
        self._loaded = fingerprint(watched_files(settings, live.current.registry))
        #: What the last failed reload read: not tried again until it changes (or SIGHUP).
        self._failed: Fingerprint | None = None

    async def reload(self, trigger: str) -> bool:
        """Load, validate and swap in the configuration; False (the running one stays)
        when it does not validate."""
        async with self._lock:
            started = time.perf_counter()
            running = self.live.current
            try:
                seen, config = await asyncio.to_thread(self._load, running)
            except (RegistryError, KeyringError) as exc:
                self._failed = await asyncio.to_thread(self._current_fingerprint)
                self.live.reload_failed = True
                self.metrics.count_reload(success=False)
                log.error(
                    "configuration reload failed: the running configuration stays",
                    extra={"trigger": trigger, "problem": str(exc)},
                )
                return False
            self.live.current = config
            self._loaded, self._failed = seen, None
            self.live.reload_failed = False
            self.metrics.count_reload(success=True)
            log.info(
                "configuration reloaded",
                extra={
                    "trigger": trigger,
                    "clients": len(config.registry),
                    "keys": len(config.keyring.keys),
                    "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                },
            )
            return True

    def _current_fingerprint(self) -> Fingerprint:
        return fingerprint(watched_files(self.settings, self.live.current.registry))

    def _load(self, running: Config) -> tuple[Fingerprint, Config]:
        """The new configuration and what it was read from (taken before reading, so a
        change while it loads is seen at the next poll)."""
        seen = fingerprint(watched_files(self.settings, running.registry))
        config = load_config(self.settings, running.keyring)
        files = watched_files(self.settings, config.registry)
        if files != watched_files(self.settings, running.registry):
            seen = fingerprint(files)
        return seen, config

    async def changed(self) -> bool:
        """Whether a watched file differs from what the running configuration (or the last
        failed reload) was read from."""
        now = await asyncio.to_thread(self._current_fingerprint)
        return now not in (self._loaded, self._failed)

    async def watch(self, interval: float) -> None:
        """Poll the watched files every ``interval`` seconds, reloading on a change;
        runs until cancelled."""
        while True:
            await asyncio.sleep(interval)
            try:
                if await self.changed():
                    await self.reload("file changed")
            except Exception:
                # The watch outlives any one failure; the next poll tries again.
                log.exception("configuration watch failed")
