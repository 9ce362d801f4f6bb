"""The client side of the same rules: building request objects the gateway accepts.

Used by ``jargate request-object`` so that operators can test a set-up and client
developers can see a correct request object: signed with the client's key, with
``iss``, ``aud`` (the issuer), ``exp``, ``nbf``, ``iat``, ``jti``, a fresh ``nonce`` and
``state``, a PKCE S256 pair, ``typ: oauth-authz-req+jwt``, optionally encrypted to the
gateway's ``enc`` key.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

from joserfc import jwe, jws
from joserfc.jwk import Key

from proxy.algorithms import DEFAULT_ENC
from proxy.keyring import GatewayKey


@dataclass(frozen=True, slots=True)
class BuiltRequest:
    """A request object and what the client must keep."""

    jwt: str
    claims: dict[str, Any]
    code_verifier: str


def pkce_pair() -> tuple[str, str]:
    """A fresh ``code_verifier`` and its S256 ``code_challenge`` (RFC 7636 §4)."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    return verifier, challenge.rstrip(b"=").decode()


def make_request_object(
    signing_key: GatewayKey,
    client_id: str,
    issuer: str,
    params: dict[str, str],
    *,
    lifetime: int = 300,
    encrypt_to: Key | None = None,
    encryption_alg: str | None = None,
    encryption_enc: str = DEFAULT_ENC,
) -> BuiltRequest:
    """Sign (and optionally encrypt) a request object carrying ``params``."""
    now = int(time.time())
    verifier, challenge = pkce_pair()
    claims: dict[str, Any] = {
        "response_type": "code",
        "scope": "openid",
        "nonce": secrets.token_urlsafe(16),
        "state": secrets.token_urlsafe(16),
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        **params,
        "client_id": client_id,
        "iss": client_id,
        "aud": issuer,
        "iat": now,
        "nbf": now,
        "exp": now + lifetime,
        "jti": secrets.token_urlsafe(24),
    }
    header = {"alg": signing_key.alg, "kid": signing_key.kid, "typ": "oauth-authz-req+jwt"}
    token = jws.serialize_compact(
        header, json.dumps(claims), signing_key.key, algorithms=[signing_key.alg]
    )
    if encrypt_to is not None:
        alg = encryption_alg or str(encrypt_to.alg or "RSA-OAEP-256")
        protected = {"alg": alg, "enc": encryption_enc, "cty": "JWT"}
        if encrypt_to.kid:
            protected["kid"] = encrypt_to.kid
        token = jwe.encrypt_compact(protected, token, encrypt_to, algorithms=[alg, encryption_enc])
    return BuiltRequest(jwt=token, claims=claims, code_verifier=verifier)


#: RFC 7523 §2.2: the client_assertion_type of a JWT client assertion.
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def make_client_assertion(signing_key: GatewayKey, client_id: str, audience: str) -> str:
    """An RFC 7523 client assertion for ``private_key_jwt`` at the PAR endpoint: ``iss`` =
    ``sub`` = client_id, ``aud`` the issuer, one minute, a fresh ``jti``."""
    now = int(time.time())
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": audience,
        "iat": now,
        "exp": now + 60,
        "jti": secrets.token_urlsafe(24),
    }
    header = {"alg": signing_key.alg, "kid": signing_key.kid}
    return jws.serialize_compact(
        header, json.dumps(claims), signing_key.key, algorithms=[signing_key.alg]
    )


def par_form(
    built: BuiltRequest, signing_key: GatewayKey, client_id: str, issuer: str
) -> dict[str, str]:
    """The PAR body for ``built``, authenticated with ``private_key_jwt``."""
    return {
        "client_id": client_id,
        "request": built.jwt,
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": make_client_assertion(signing_key, client_id, issuer),
    }
