"""Loading what the settings name, and checking it fits together before anything starts:
the client registry, the gateway's keys, and that the keys cover what the clients need."""

from __future__ import annotations

from .clients import ClientRegistry, load_registry
from .keyring import Keyring, KeyringError
from .settings import Settings

__all__ = ["check_keys_cover_clients", "load_keyring", "load_registry", "registry_warnings"]


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


def registry_warnings(settings: Settings, registry: ClientRegistry) -> list[str]:
    """What loads but is likely a mistake: a registry without clients."""
    if len(registry):
        return []
    where = (
        "JARGATE_CLIENTS_FILE and JARGATE_CLIENTS are unset"
        if settings.clients_file is None and settings.clients is None
        else "the registry lists no clients"
    )
    passes = (
        "every client is refused (JARGATE_REQUIRE_REGISTERED_CLIENTS)"
        if settings.require_registered_clients
        else "every request passes through untouched and JAR, PAR and JARM are refused"
    )
    return [f"the client registry is empty ({where}): {passes}; register clients to use them"]
