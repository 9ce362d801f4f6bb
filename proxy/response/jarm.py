"""JARM: the authorization response as one JWT signed by the gateway (JARM §2.1, §2.2).

Claims: ``iss`` (the issuer), ``aud`` (the client_id), ``exp``, ``iat`` and every
response parameter the upstream returned (``code``, ``state``, ``error``, tokens, ...).
Signed with the gateway's key for the client's ``authorization_signed_response_alg``
(``JARGATE_JARM_DEFAULT_ALG`` when it registered none), with a ``kid`` that resolves in
the published JWKS; then, when the client registered
``authorization_encrypted_response_alg``/``_enc``, encrypted to the client's ``enc`` key
as a nested JWT (``cty: JWT``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from joserfc import jwe
from joserfc.jwk import Key, KeySet

from proxy.algorithms import alg_fits_key
from proxy.clients import RegisteredClient
from proxy.compact import sign_compact
from proxy.errors import JarmKeyMissing
from proxy.keyring import Keyring
from proxy.settings import Settings

#: Response parameters that are JSON numbers inside the JWT (RFC 6749 §4.2.2).
NUMERIC_PARAMETERS = frozenset({"expires_in"})


def signing_alg_for(client: RegisteredClient, settings: Settings) -> str:
    """The client's ``authorization_signed_response_alg``, or the gateway's default."""
    return client.meta.authorization_signed_response_alg or settings.jarm_default_alg


def encryption_key_for(client: RegisteredClient, keys: KeySet) -> Key:
    """The client's key to encrypt JARM responses to: one fitting its registered
    ``authorization_encrypted_response_alg``, marked ``use: enc`` (an unmarked key only when
    none is marked)."""
    alg = client.meta.authorization_encrypted_response_alg
    fitting = [key for key in keys if alg is not None and alg_fits_key(alg, key)]
    for wanted in ("enc", None):
        for key in fitting:
            if key.get("use") == wanted:
                return key
    raise JarmKeyMissing(f"client {client.client_id!r} has no key to encrypt responses with {alg}")


def build_jarm_response(
    params: Iterable[tuple[str, str]],
    client: RegisteredClient,
    keyring: Keyring,
    settings: Settings,
    *,
    encryption_key: Key | None = None,
    now: float | None = None,
) -> str:
    """The response JWT (compact), signed and, when the client registered it, encrypted."""
    issued = int(time.time() if now is None else now)
    claims: dict[str, object] = {}
    for name, value in params:
        if name == "iss":
            continue  # the upstream's own iss never leaks; the gateway's is the issuer
        if name in NUMERIC_PARAMETERS and value.isdigit():
            claims[name] = int(value)
        else:
            claims[name] = value
    claims.update(
        {
            "iss": settings.issuer,
            "aud": client.client_id,
            "iat": issued,
            "exp": issued + settings.jarm_lifetime_seconds,
        }
    )
    alg = signing_alg_for(client, settings)
    signer = keyring.signing_key(alg)
    if signer is None:
        raise JarmKeyMissing(f"the gateway has no {alg} key to sign responses with")
    token = sign_compact({"alg": alg, "kid": signer.kid}, claims, signer.key)
    encryption_alg = client.meta.authorization_encrypted_response_alg
    if encryption_alg is None:
        return token
    if encryption_key is None:
        raise JarmKeyMissing("an encrypted response needs the client's key")
    enc = client.meta.authorization_encrypted_response_enc or "A128CBC-HS256"
    protected = {"alg": encryption_alg, "enc": enc, "cty": "JWT"}
    if encryption_key.kid:
        protected["kid"] = encryption_key.kid
    return jwe.encrypt_compact(protected, token, encryption_key, algorithms=[encryption_alg, enc])
