"""The gateway's own keys: ``sig`` keys sign JARM responses, ``enc`` keys decrypt
encrypted request objects, and the public halves are published.

Keys come from the private JWKS in ``JARGATE_KEYS_FILE``. Each key gets a ``kid``
(its RFC 7638 thumbprint when the file names none), a ``use`` and an ``alg``. For
each algorithm the first key signs; every key is published, so a rotated-out key
keeps verifying what it signed. Every key also gives a key that seals the authorization
codes the gateway delivers (:mod:`proxy.codes`): the first key's seals, each one opens.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from joserfc.errors import JoseError
from joserfc.jwk import Key, KeySet, OctKey, import_key

from .algorithms import (
    ENCRYPTION_ALGS,
    SIGNING_ALGS,
    alg_fits_key,
    default_alg,
    key_for_alg,
    use_of_alg,
)

log = logging.getLogger("jargate.keyring")

#: HKDF's info for the keys that seal authorization codes.
CODE_KEY_LABEL = b"jargate authorization code sealing v1"
#: The members of a private JWK that are the key (RFC 7518 section 6): its kid, use, alg
#: or any other member may change in the keys file without changing its codes' key.
_KEY_MEMBERS = {
    "EC": ("crv", "d", "kty", "x", "y"),
    "OKP": ("crv", "d", "kty", "x"),
    "RSA": ("d", "e", "kty", "n"),
}


class KeyringError(Exception):
    """The gateway's key file is unusable; the message names the key."""


@dataclass(frozen=True, slots=True)
class GatewayKey:
    """One private key of the gateway, with the ``kid``, ``use`` and ``alg`` it is used for."""

    kid: str
    use: str
    alg: str
    key: Key

    def public_jwk(self) -> dict[str, Any]:
        """The public JWK, as published."""
        return dict(self.key.as_dict(private=False, kid=self.kid, use=self.use, alg=self.alg))


def prepare_key(data: Any, where: str) -> GatewayKey:
    """Import one private JWK and settle its ``kid``, ``use`` and ``alg``."""
    if not isinstance(data, dict):
        raise KeyringError(f"{where}: a JWK must be a JSON object")
    try:
        key = import_key(data)
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        raise KeyringError(f"{where}: not a valid JWK ({exc})") from None
    if isinstance(key, OctKey):
        raise KeyringError(f"{where}: symmetric (oct) keys are not allowed")
    if not key.is_private:
        raise KeyringError(f"{where}: has no private part; the keys file holds private keys")
    alg = data.get("alg")
    use = data.get("use") or (use_of_alg(alg) if isinstance(alg, str) else None)
    if use is None:
        use = "enc" if getattr(key, "curve_name", "") in ("X25519", "X448") else "sig"
    if use not in ("sig", "enc"):
        raise KeyringError(f"{where}: use must be 'sig' or 'enc', got {use!r}")
    if alg is None:
        alg = default_alg(key, use)
        if alg is None:
            raise KeyringError(f"{where}: cannot infer an algorithm for this key; set 'alg'")
    allowed = SIGNING_ALGS if use == "sig" else ENCRYPTION_ALGS
    if alg not in allowed:
        raise KeyringError(
            f"{where}: alg {alg!r} is not allowed for use {use!r} (allowed: {', '.join(allowed)})"
        )
    if not alg_fits_key(alg, key):
        raise KeyringError(f"{where}: alg {alg} does not fit this {data.get('kty')} key")
    kid = data.get("kid") or key.thumbprint()
    if not isinstance(kid, str):
        raise KeyringError(f"{where}: kid must be a string")
    return GatewayKey(kid=kid, use=use, alg=alg, key=key)


class Keyring:
    """The gateway's keys, imported once at start."""

    def __init__(self, keys: Sequence[GatewayKey], ephemeral: bool = False) -> None:
        kids = [k.kid for k in keys]
        duplicates = sorted({kid for kid in kids if kids.count(kid) > 1})
        if duplicates:
            raise KeyringError(f"duplicate kid(s) in the key file: {', '.join(duplicates)}")
        self.keys = tuple(keys)
        self.ephemeral = ephemeral
        self._signers: dict[str, GatewayKey] = {}
        for k in self.keys:
            if k.use == "sig":
                self._signers.setdefault(k.alg, k)
        self._decryption = KeySet(
            [
                import_key(k.key.as_dict(private=True, kid=k.kid, use="enc", alg=k.alg))
                for k in self.keys
                if k.use == "enc"
            ]
        )
        self._jwks = {"keys": [k.public_jwk() for k in self.keys]}
        #: The keys that seal authorization codes (:mod:`proxy.codes`), the first seals.
        self.code_keys = tuple(_code_key(k) for k in self.keys)

    @classmethod
    def load(cls, path: Path) -> Keyring:
        """Load the private JWKS at ``path``."""
        return cls(read_private_jwks(path, f"JARGATE_KEYS_FILE {path}"))

    @classmethod
    def throwaway(cls, algs: Iterable[str] = ()) -> Keyring:
        """Fresh keys for this process only: ES256 and RS256 signing, RSA-OAEP-256
        decryption, plus a key for each extra algorithm in ``algs``."""
        wanted = ["ES256", "RS256", "RSA-OAEP-256"]
        wanted += [alg for alg in algs if alg not in wanted]
        keys = []
        for alg in wanted:
            use = use_of_alg(alg)
            key = key_for_alg(alg)
            kid = f"{alg.lower()}-{key.thumbprint()[:16]}"
            keys.append(GatewayKey(kid=kid, use=use, alg=alg, key=key))
        return cls(keys, ephemeral=True)

    def signing_key(self, alg: str) -> GatewayKey | None:
        """The key that signs with ``alg`` (the first configured one), if any."""
        return self._signers.get(alg)

    @property
    def signing_algs(self) -> tuple[str, ...]:
        """Algorithms the gateway can sign with."""
        return tuple(self._signers)

    @property
    def decryption_algs(self) -> tuple[str, ...]:
        """Key-management algorithms the gateway can decrypt."""
        return tuple(dict.fromkeys(k.alg for k in self.keys if k.use == "enc"))

    @property
    def decryption_keys(self) -> KeySet:
        """The private ``enc`` keys, selected by ``kid`` when a JWE names one."""
        return self._decryption

    def public_jwks(self) -> dict[str, Any]:
        """The JWKS the gateway publishes (public halves only)."""
        return self._jwks


def _code_key(key: GatewayKey) -> AESGCM:
    """An AES-256-GCM key derived from a private key (HKDF-SHA256 over its private JWK's
    key members, with a label of its own: the key material serves nothing else this way),
    the same on every replica that holds the key, whatever the file names it."""
    jwk = key.key.as_dict(private=True)
    members = {name: jwk[name] for name in _KEY_MEMBERS[str(jwk["kty"])]}
    material = json.dumps(members, sort_keys=True, separators=(",", ":")).encode()
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=CODE_KEY_LABEL)
    return AESGCM(hkdf.derive(material))


def generate_private_jwks(
    algs: list[str], use: str | None = None, kid: str | None = None, rsa_size: int = 2048
) -> dict[str, Any]:
    """A private JWKS with one new key for each of ``algs`` (``jargate keys generate``)."""
    if not algs:
        raise KeyringError("name at least one --alg")
    if len(set(algs)) != len(algs):
        raise KeyringError(f"--alg names the same alg twice: {', '.join(algs)}")
    if kid is not None and len(algs) > 1:
        raise KeyringError("--kid names one key: use it with one --alg")
    keys = []
    for alg in algs:
        if alg not in (*SIGNING_ALGS, *ENCRYPTION_ALGS):
            allowed = ", ".join((*SIGNING_ALGS, *ENCRYPTION_ALGS))
            raise KeyringError(f"unsupported alg {alg!r}; choose one of {allowed}")
        natural = use_of_alg(alg)
        if use is not None and use != natural:
            raise KeyringError(f"alg {alg} is for use {natural!r}, not {use!r}")
        key = key_for_alg(alg, rsa_size)
        jwk = key.as_dict(private=True)
        jwk.update({"kid": kid or key.thumbprint(), "use": natural, "alg": alg})
        keys.append(jwk)
    return {"keys": keys}


def prepare_keys(document: Any, label: str) -> list[GatewayKey]:
    """Every key of a private JWKS document, prepared; ``label`` names it in errors."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise KeyringError(f'{label}: expected a JWKS {{"keys": [...]}}')
    if not document["keys"]:
        raise KeyringError(f"{label}: the key set is empty")
    return [prepare_key(item, f"{label} key #{i}") for i, item in enumerate(document["keys"])]


def read_private_jwks(path: Path, label: str) -> list[GatewayKey]:
    """The keys of the private JWKS file at ``path``."""
    try:
        document = json.loads(path.read_text())
    except OSError as exc:
        raise KeyringError(f"{label}: {exc.strerror}") from None
    except ValueError as exc:
        raise KeyringError(f"{label}: not JSON ({exc})") from None
    return prepare_keys(document, label)


def public_jwks_of(document: Any) -> dict[str, Any]:
    """The public half of a private JWKS document."""
    return {"keys": [k.public_jwk() for k in prepare_keys(document, "JWKS")]}
