"""Algorithm allow-lists and which key type each algorithm needs.

Only asymmetric algorithms are ever accepted: ``none`` and ``HS*`` are refused
everywhere (RFC 8725 §3.1, §2.1), and so are ``RSA1_5`` (FAPI 1 §8.6.1) and
``PBES2`` (password-based, never for these protocols). Binding each key to its
``kty`` and curve is what prevents algorithm confusion (RFC 8725 §3.1).
"""

from __future__ import annotations

import base64
import warnings
from typing import Literal, get_args

from joserfc.errors import SecurityWarning
from joserfc.jwk import ECKey, Key, OKPKey, RSAKey

# RFC 9864 deprecates the polymorphic "EdDSA" in favour of "Ed25519", and joserfc warns on
# every use; JAR/JARM deployments and FAPI 2.0 still name EdDSA, so it stays allowed.
warnings.filterwarnings("ignore", message="EdDSA is deprecated", category=SecurityWarning)

#: Request-object, client-assertion and JARM signing algorithms (asymmetric only).
SigningAlg = Literal[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"
]
SIGNING_ALGS: tuple[str, ...] = get_args(SigningAlg)
#: FAPI 2.0 Security Profile §5.4: the only signing algorithms under the fapi2 profiles.
FAPI2_SIGNING_ALGS: tuple[str, ...] = ("PS256", "ES256", "EdDSA")
#: FAPI 2.0 Security Profile §5.4.1: RSA keys of at least 2048 bits.
FAPI2_MIN_RSA_BITS = 2048
#: JWE key-management algorithms the gateway accepts or produces.
ENCRYPTION_ALGS = ("RSA-OAEP", "RSA-OAEP-256", "ECDH-ES", "ECDH-ES+A128KW", "ECDH-ES+A256KW")
#: JWE content-encryption algorithms the gateway accepts or produces.
ENCRYPTION_ENCS = ("A128GCM", "A256GCM", "A128CBC-HS256")
#: OpenID Connect Registration §2: the ``enc`` used when only ``alg`` is registered.
DEFAULT_ENC = "A128CBC-HS256"

_EC_CURVE_FOR_ALG = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}


def alg_fits_key(alg: str, key: Key) -> bool:
    """True when ``alg`` may be used with ``key`` (kty and curve match)."""
    if alg.startswith(("RS", "PS", "RSA-OAEP")):
        return isinstance(key, RSAKey) and alg in (*SIGNING_ALGS, *ENCRYPTION_ALGS)
    if alg in _EC_CURVE_FOR_ALG:
        return isinstance(key, ECKey) and key.curve_name == _EC_CURVE_FOR_ALG[alg]
    if alg == "EdDSA":
        return isinstance(key, OKPKey) and key.curve_name in ("Ed25519", "Ed448")
    if alg.startswith("ECDH-ES") and alg in ENCRYPTION_ALGS:
        if isinstance(key, ECKey):
            return key.curve_name in ("P-256", "P-384", "P-521")
        return isinstance(key, OKPKey) and key.curve_name in ("X25519", "X448")
    return False


def fapi2_key_problem(key: Key) -> str | None:
    """Why ``key`` is too weak for FAPI 2.0 (§5.4.1: RSA of 2048 bits or more, elliptic
    curves of 160 bits or more: every curve allowed here is), or None."""
    if isinstance(key, RSAKey):
        bits = int.from_bytes(_b64url(str(key.dict_value["n"])), "big").bit_length()
        if bits < FAPI2_MIN_RSA_BITS:
            return f"an RSA key of {bits} bits (FAPI 2.0 needs {FAPI2_MIN_RSA_BITS} or more)"
    return None


def _b64url(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def default_alg(key: Key, use: str) -> str | None:
    """The algorithm a key gets when its JWK names none."""
    if isinstance(key, RSAKey):
        return "RS256" if use == "sig" else "RSA-OAEP-256"
    if isinstance(key, ECKey):
        if use == "enc":
            return "ECDH-ES"
        return {v: k for k, v in _EC_CURVE_FOR_ALG.items()}.get(key.curve_name)
    if isinstance(key, OKPKey):
        if key.curve_name in ("X25519", "X448"):
            return "ECDH-ES" if use == "enc" else None
        return "EdDSA" if use == "sig" else None
    return None


def use_of_alg(alg: str) -> str:
    """``enc`` for key-management algorithms, ``sig`` for signatures."""
    return "enc" if alg in ENCRYPTION_ALGS else "sig"


#: RSA key sizes ``jargate keys generate --size`` offers (RFC 7518 section 3.3: 2048 or more).
RSA_SIZES = (2048, 3072, 4096)


def key_for_alg(alg: str, rsa_size: int = 2048) -> Key:
    """Generate a fresh private key suitable for ``alg`` (RSA keys of ``rsa_size`` bits)."""
    if alg.startswith(("RS", "PS", "RSA-OAEP")):
        return RSAKey.generate_key(rsa_size)
    if alg in _EC_CURVE_FOR_ALG:
        return ECKey.generate_key(_EC_CURVE_FOR_ALG[alg])
    if alg == "EdDSA":
        return OKPKey.generate_key("Ed25519")
    if alg.startswith("ECDH-ES"):
        return ECKey.generate_key("P-256")
    raise ValueError(f"unsupported algorithm {alg!r}")
