"""Test kit for request objects: real client keys, and objects built directly with joserfc
(not with the product's own builder, so a shared misreading cannot hide)."""

from __future__ import annotations

import base64
import json
import secrets
import time
from dataclasses import dataclass, field
from functools import cache
from typing import Any
from urllib.parse import parse_qs, urlsplit

from aiohttp import ClientResponse
from joserfc import jwe, jws
from joserfc.jwk import ECKey, Key, OKPKey, RSAKey

from proxy.clients import ClientRegistry, load_registry
from tests.support import make_settings

ISSUER = "http://127.0.0.1:8000"
REDIRECT = "https://rp.example/cb"

#: Which kind of key signs with which alg.
KEY_FOR_ALG = {
    "RS256": "rsa",
    "RS384": "rsa",
    "RS512": "rsa",
    "PS256": "rsa",
    "PS384": "rsa",
    "PS512": "rsa",
    "ES256": "p256",
    "ES384": "p384",
    "ES512": "p521",
    "EdDSA": "ed25519",
}


@cache
def private_key(kind: str, tag: str = "") -> Key:
    """One private key per kind and tag for the whole test run (RSA generation is slow)."""
    kid = f"{kind}{tag}"
    params = {"kid": kid}
    if kind == "rsa":
        return RSAKey.generate_key(2048, parameters=params)  # type: ignore[arg-type]
    if kind == "p256":
        return ECKey.generate_key("P-256", parameters=params)  # type: ignore[arg-type]
    if kind == "p384":
        return ECKey.generate_key("P-384", parameters=params)  # type: ignore[arg-type]
    if kind == "p521":
        return ECKey.generate_key("P-521", parameters=params)  # type: ignore[arg-type]
    if kind == "ed25519":
        return OKPKey.generate_key("Ed25519", parameters=params)  # type: ignore[arg-type]
    raise ValueError(kind)


def public_jwks(*keys: Key) -> dict[str, Any]:
    """The public JWKS a client registers."""
    return {"keys": [dict(k.as_dict(private=False)) for k in keys]}


def b64(data: bytes | str) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@dataclass
class Claims:
    """Default claims of a valid request object for ``client_id``; override freely."""

    client_id: str = "app"
    values: dict[str, Any] = field(default_factory=dict)

    def build(self, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.client_id,
            "aud": ISSUER,
            "client_id": self.client_id,
            "response_type": "code",
            "redirect_uri": REDIRECT,
            "scope": "openid profile",
            "state": "client-state-" + secrets.token_hex(4),
            "nonce": "n-" + secrets.token_hex(8),
            "iat": now,
            "nbf": now,
            "exp": now + 300,
            "jti": secrets.token_hex(16),
        }
        claims.update(self.values)
        for name, value in overrides.items():
            if value is DROP:
                claims.pop(name, None)
            else:
                claims[name] = value
        return claims


DROP = object()


def sign(
    claims: dict[str, Any],
    alg: str = "PS256",
    key: Key | None = None,
    **header: Any,
) -> str:
    """A compact JWS of ``claims`` (header defaults: alg, kid, typ)."""
    key = key or private_key(KEY_FOR_ALG[alg])
    protected = {"alg": alg, "kid": key.kid, "typ": "oauth-authz-req+jwt"}
    for name, value in header.items():
        if value is DROP:
            protected.pop(name, None)
        else:
            protected[name] = value
    return jws.serialize_compact(protected, json.dumps(claims), key, algorithms=[alg])


def encrypt(
    token: str, key: Key, alg: str = "RSA-OAEP-256", enc: str = "A256GCM", **header: Any
) -> str:
    """Encrypt ``token`` to the gateway's key (a nested JWT)."""
    protected = {"alg": alg, "enc": enc, "cty": "JWT", **header}
    if key.kid:
        protected["kid"] = key.kid
    algorithms = [alg, enc, *([header["zip"]] if "zip" in header else [])]
    return jwe.encrypt_compact(protected, token, key, algorithms=algorithms)


def sign_raw(
    header: dict[str, Any], claims: dict[str, Any], key: ECKey, payload: str | None = None
) -> str:
    """An ES256 JWS built by hand, for headers joserfc itself refuses to produce (and, with
    ``payload``, for a payload text JSON encoders do not write)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    text = json.dumps(claims) if payload is None else payload
    signing_input = f"{b64(json.dumps(header))}.{b64(text)}"
    der = key.private_key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))  # type: ignore[union-attr]
    r, s = decode_dss_signature(der)
    return f"{signing_input}.{b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def forge(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    """An object with any header, claims and signature bytes (for attacks)."""
    return f"{b64(json.dumps(header))}.{b64(json.dumps(claims))}.{b64(signature)}"


def location_params(response: ClientResponse) -> tuple[str, dict[str, list[str]]]:
    """The redirect's base (without query) and its query parameters."""
    location = response.headers["Location"]
    parts = urlsplit(location)
    base = f"{parts.scheme}://{parts.netloc}{parts.path}"
    params = parse_qs(parts.query or parts.fragment, keep_blank_values=True)
    return base, params


APP_KEYS = ("rsa", "p256", "p384", "p521", "ed25519")


def client_registry(**extra_settings: Any) -> ClientRegistry:
    """The registered clients every JAR test uses."""
    clients: list[dict[str, Any]] = [
        {
            "client_id": "app",
            "jwks": public_jwks(*(private_key(kind) for kind in APP_KEYS)),
            "redirect_uris": [REDIRECT, "https://rp.example/cb2?keep=1"],
            "request_uris": ["https://rp.example/requests/"],
        },
        {
            "client_id": "strict",
            "jwks": public_jwks(private_key("rsa", "strict")),
            "redirect_uris": [REDIRECT],
            "require_signed_request_object": True,
            "request_object_signing_alg": "PS256",
        },
        {
            "client_id": "enc",
            "jwks": public_jwks(private_key("p256", "enc")),
            "redirect_uris": [REDIRECT],
            "request_object_encryption_alg": "RSA-OAEP-256",
            "request_object_encryption_enc": "A256GCM",
        },
        {"client_id": "plain", "redirect_uris": [REDIRECT, "https://rp.example/other"]},
        {
            "client_id": "other",
            "jwks": public_jwks(private_key("p256", "other")),
            "redirect_uris": ["https://other.example/cb"],
        },
    ]
    extra_clients = extra_settings.pop("extra_clients", [])
    return load_registry(
        make_settings(clients=json.dumps({"clients": clients + extra_clients}), **extra_settings)
    )
