"""Verifying a request object (RFC 9101 §6): four named steps, in this order.

1. :func:`decrypt_request_object`: a five-part object is a JWE for the gateway's ``enc``
   keys; the result must be a signed JWT (§6.1, §10.2).
2. :func:`verify_request_object`: the JWS signature, with the client's registered keys
   only, under an asymmetric allow-list (§6.2; RFC 8725 §3.1, §2.9).
3. :func:`validate_claims`: ``typ``, claim types, ``iss``, ``aud``, times, lifetime and
   the JAR parameter rules (§4, §5, §10.8).
4. :func:`claim_jti`: one use per object, recorded in the store until it expires.

Every refusal is ``invalid_request_object`` with a description that names the rule.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from joserfc import jwe
from joserfc.errors import JoseError
from joserfc.jwk import Key, KeySet

from proxy.algorithms import ENCRYPTION_ALGS, ENCRYPTION_ENCS, SIGNING_ALGS, alg_fits_key
from proxy.claims import (
    audience_members,
    check_exp,
    check_iat,
    check_nbf,
    issued_since,
    numeric_value,
)
from proxy.client_keys import ClientKeys, ClientKeysUnavailable
from proxy.clients import RegisteredClient
from proxy.compact import (
    DEFAULT_JSON_DEPTH,
    ReadJws,
    read_json_segment,
    read_jws,
    refuse_unknown_critical,
    signature_verifies,
    split_compact,
)
from proxy.errors import ForgottenByStore, InvalidRequestObject, ReplayedObject
from proxy.keyring import Keyring
from proxy.profiles import policy_of
from proxy.settings import Settings
from proxy.store import Store, hashed_key

log = logging.getLogger("jargate.verify")

#: ``typ`` values accepted (RFC 9101 §10.8, RFC 8725 §3.11), after dropping ``application/``.
ACCEPTED_TYPES = frozenset({"oauth-authz-req+jwt", "jwt"})
MAX_JTI_BYTES = 64
#: FAPI 2.0 Message Signing §5.3.1: a request object's nbf and exp within 60 minutes.
MESSAGE_SIGNING_LIFETIME = 3600
#: What a request object is called in descriptions.
OBJECT = "request object"


@dataclass(frozen=True, slots=True)
class VerifiedObject:
    """A request object whose signature verified; claims not yet validated."""

    header: dict[str, Any]
    claims: dict[str, Any]
    encrypted: bool
    #: The payload's bytes: the object's identity when it has no ``jti``.
    payload: bytes = b""


def decrypt_request_object(
    token: str, keyring: Keyring, client: RegisteredClient, max_depth: int = DEFAULT_JSON_DEPTH
) -> tuple[str, bool]:
    """Return the signed inner JWT and whether the object was encrypted.

    A client that registered ``request_object_encryption_alg``/``_enc`` must encrypt with
    exactly those, and may not send a plain object.
    """
    parts = split_compact(token)
    meta = client.meta
    if len(parts) == 3:
        if meta.request_object_encryption_alg is not None:
            raise InvalidRequestObject(
                "this client must encrypt its request objects "
                f"({meta.request_object_encryption_alg}/{meta.request_object_encryption_enc})",
                rule="request_object.encryption.required",
            )
        return token, False
    header = read_json_segment(parts[0], "JWE header", max_depth=max_depth)
    alg, enc = header.get("alg"), header.get("enc")
    if alg not in ENCRYPTION_ALGS or alg not in keyring.decryption_algs:
        raise InvalidRequestObject(
            f"JWE alg {alg!r} is not supported", rule="request_object.encryption.alg"
        )
    if enc not in ENCRYPTION_ENCS:
        raise InvalidRequestObject(
            f"JWE enc {enc!r} is not supported", rule="request_object.encryption.enc"
        )
    if "zip" in header:
        raise InvalidRequestObject(
            "compressed (zip) request objects are refused", rule="request_object.encryption.zip"
        )
    refuse_unknown_critical(header)
    if meta.request_object_encryption_alg is not None and (
        alg != meta.request_object_encryption_alg or enc != meta.request_object_encryption_enc
    ):
        raise InvalidRequestObject(
            f"this client registered {meta.request_object_encryption_alg}/"
            f"{meta.request_object_encryption_enc}, not {alg}/{enc}",
            rule="request_object.encryption.pinned",
        )
    try:
        decrypted = jwe.decrypt_compact(token, keyring.decryption_keys, algorithms=[alg, enc])
    except (JoseError, ValueError, TypeError, KeyError):
        raise InvalidRequestObject(
            "the request object could not be decrypted", rule="request_object.encryption.decrypt"
        ) from None
    plaintext = decrypted.plaintext
    if plaintext is None:  # pragma: no cover - joserfc always sets it after decryption
        raise InvalidRequestObject(
            "the request object could not be decrypted", rule="request_object.encryption.decrypt"
        )
    try:
        inner = plaintext.decode("ascii")
    except UnicodeDecodeError:
        raise InvalidRequestObject(
            "the encrypted request object is not a signed JWT",
            rule="request_object.encryption.nested",
        ) from None
    if len(inner.split(".")) != 3:
        raise InvalidRequestObject(
            "an encrypted request object must contain a signed JWT",
            rule="request_object.encryption.nested",
        )
    return inner, True


async def verify_request_object(
    token: str,
    client: RegisteredClient,
    jwks: ClientKeys,
    encrypted: bool = False,
    max_depth: int = DEFAULT_JSON_DEPTH,
    *,
    allowed: tuple[str, ...] = SIGNING_ALGS,
) -> VerifiedObject:
    """Check the request object's signature (:func:`verify_client_jws`), honouring the
    client's ``request_object_signing_alg`` and its profile's ``allowed`` algorithms."""
    read = await verify_client_jws(
        token,
        client,
        jwks,
        client.meta.request_object_signing_alg,
        "request object",
        max_depth=max_depth,
        allowed=allowed,
    )
    return VerifiedObject(read.header, read.claims, encrypted, read.payload)


async def verify_client_jws(
    token: str,
    client: RegisteredClient,
    jwks: ClientKeys,
    pinned: str | None,
    kind: str,
    *,
    max_depth: int = DEFAULT_JSON_DEPTH,
    allowed: tuple[str, ...] = SIGNING_ALGS,
) -> ReadJws:
    """Check a JWS the client signed (a request object or a client assertion) with the
    client's registered keys only; return it, read (:mod:`proxy.compact`).

    ``jku``, ``x5u``, ``jwk`` and ``x5c`` in the header are never used; ``kid`` selects
    among the client's keys; the alg must be on the allow-list (``allowed``: the client's
    profile's), fit the key, and equal ``pinned`` when the client registered one.
    """
    read = read_jws(token, kind, max_depth)
    header = read.header
    alg = header.get("alg")
    if alg == "none":
        raise InvalidRequestObject(
            f"unsigned {kind}s (alg none) are refused", rule="request_object.alg"
        )
    if not isinstance(alg, str) or alg not in SIGNING_ALGS or alg not in allowed:
        raise InvalidRequestObject(f"{kind} alg {alg!r} is not allowed", rule="request_object.alg")
    if pinned is not None and alg != pinned:
        raise InvalidRequestObject(
            f"this client must sign its {kind}s with {pinned}", rule="request_object.alg.pinned"
        )
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise InvalidRequestObject("kid must be a string", rule="request_object.kid")
    try:
        keys = await jwks.keys_for(client, kid)
    except ClientKeysUnavailable as exc:
        raise InvalidRequestObject(
            f"the client's keys are unavailable: {exc}", rule="request_object.keys_unavailable"
        ) from None
    candidates = _candidate_keys(keys, kid, alg)
    if not candidates and kid is not None and any(key.kid == kid for key in keys):
        raise InvalidRequestObject(
            f"the client's key {kid!r} does not fit alg {alg}", rule="request_object.kid"
        )
    if not candidates:
        raise InvalidRequestObject(
            f"no key with kid {kid!r} is registered for this client"
            if kid is not None
            else f"no registered key of this client fits alg {alg}",
            rule="request_object.kid",
        )
    if not any(signature_verifies(read, alg, key) for key in candidates):
        raise InvalidRequestObject(
            f"the {kind}'s signature does not verify", rule="request_object.signature"
        )
    return read


def _candidate_keys(keys: KeySet, kid: str | None, alg: str) -> list[Key]:
    found = []
    for key in keys:
        if kid is not None and key.kid != kid:
            continue
        if key.get("use") == "enc" or not alg_fits_key(alg, key):
            continue
        if key.alg is not None and key.alg != alg:
            continue
        found.append(key)
    return found


def media_type(typ: str) -> str:
    lowered = typ.lower()
    return lowered.removeprefix("application/") if "/" in lowered else lowered


#: One claim rule of a request object: raises :class:`InvalidRequestObject` when broken.
@dataclass(frozen=True, slots=True)
class ClaimContext:
    """What a claim rule judges: the verified object, its client, the outer parameters,
    the settings, and the time of the check."""

    verified: VerifiedObject
    client: RegisteredClient
    outer: dict[str, str]
    settings: Settings
    now: float


#: One claim rule of a request object: raises :class:`InvalidRequestObject` when broken.
ClaimRule = Callable[[ClaimContext], None]


def _typ(c: ClaimContext) -> None:
    typ = c.verified.header.get("typ")
    if typ is not None and (not isinstance(typ, str) or media_type(typ) not in ACCEPTED_TYPES):
        raise InvalidRequestObject(
            f"typ {typ!r} is not a request object type (expected oauth-authz-req+jwt)",
            rule="request_object.typ",
        )


def _claim_types(c: ClaimContext) -> None:
    for name in ("iss", "jti"):
        if name in c.verified.claims and not isinstance(c.verified.claims[name], str):
            raise InvalidRequestObject(
                f"claim {name!r} must be a string", rule="request_object.claim_type"
            )


def _iss(c: ClaimContext) -> None:
    if c.verified.claims.get("iss") != c.client.client_id:
        raise InvalidRequestObject("iss must be the client_id", rule="request_object.iss")


def _aud(c: ClaimContext) -> None:
    aud = c.verified.claims.get("aud")
    if aud is None:
        raise InvalidRequestObject(
            "aud is required and must be the issuer", rule="request_object.aud"
        )
    if c.settings.issuer not in audience_members(aud, InvalidRequestObject, OBJECT):
        raise InvalidRequestObject("aud must be, or contain, the issuer", rule="request_object.aud")


def _exp(c: ClaimContext) -> None:
    check_exp(c.verified.claims, c.now, c.settings.clock_skew_seconds, InvalidRequestObject, OBJECT)


def _nbf(c: ClaimContext) -> None:
    check_nbf(c.verified.claims, c.now, c.settings.clock_skew_seconds, InvalidRequestObject, OBJECT)


def _iat(c: ClaimContext) -> None:
    check_iat(c.verified.claims, c.now, c.settings.clock_skew_seconds, InvalidRequestObject, OBJECT)


def _lifetime(c: ClaimContext) -> None:
    claims = c.verified.claims
    exp = numeric_value(claims, "exp")
    if exp is None:
        return  # the exp rule's refusal
    skew = c.settings.clock_skew_seconds
    longest = c.settings.max_request_object_lifetime_seconds
    nbf, iat = numeric_value(claims, "nbf"), numeric_value(claims, "iat")
    for name, start in (("nbf", nbf), ("iat", iat), ("now", c.now)):
        if start is not None and exp - start > longest + (skew if name == "now" else 0):
            raise InvalidRequestObject(
                f"exp is more than {longest} s after {name}", rule="request_object.lifetime"
            )


def _message_signing_times(c: ClaimContext) -> None:
    """FAPI 2.0 Message Signing §5.3.1: ``nbf`` required, no more than 60 minutes before
    now or before ``exp``."""
    if not policy_of(c.settings, c.client).message_signing:
        return
    exp, nbf = numeric_value(c.verified.claims, "exp"), numeric_value(c.verified.claims, "nbf")
    if nbf is None:
        raise InvalidRequestObject("nbf is required", rule="request_object.nbf")
    if c.now - nbf > MESSAGE_SIGNING_LIFETIME + c.settings.clock_skew_seconds:
        raise InvalidRequestObject(
            "nbf is more than 60 minutes in the past", rule="request_object.nbf"
        )
    if exp is not None and exp - nbf > MESSAGE_SIGNING_LIFETIME:
        raise InvalidRequestObject(
            "exp is more than 60 minutes after nbf", rule="request_object.lifetime"
        )


def _jti(c: ClaimContext) -> None:
    jti = c.verified.claims.get("jti")
    if isinstance(jti, str) and len(jti.encode()) > MAX_JTI_BYTES:
        raise InvalidRequestObject(
            f"jti is longer than {MAX_JTI_BYTES} bytes", rule="request_object.jti"
        )


def _nested(c: ClaimContext) -> None:
    for name in ("request", "request_uri"):
        if name in c.verified.claims:
            raise InvalidRequestObject(
                f"a request object must not contain {name!r}", rule="request_object.nested"
            )


def _client_id(c: ClaimContext) -> None:
    inner_client = c.verified.claims.get("client_id")
    if inner_client is None:
        # Every mandatory authorization parameter is inside the object (RFC 9101 section 4,
        # as response_type is; Auth0's JAR rules).
        raise InvalidRequestObject(
            "client_id is required in the request object", rule="request_object.client_id"
        )
    if inner_client != c.outer.get("client_id"):
        raise InvalidRequestObject(
            "client_id in the request object differs from the request's",
            rule="request_object.client_id",
        )


def _response_type(c: ClaimContext) -> None:
    if (
        "response_type" in c.outer
        and c.verified.claims.get("response_type") != c.outer["response_type"]
    ):
        raise InvalidRequestObject(
            "response_type in the request object differs from the request's",
            rule="request_object.response_type",
        )


#: The claim rules of RFC 9101 §4, §5, §6.3 and §10.8 and the gateway's time bounds, in
#: the order the gateway applies them; each independent of the others (``jargate
#: inspect`` runs every one).
CLAIM_RULES: tuple[ClaimRule, ...] = (
    _typ,
    _claim_types,
    _iss,
    _aud,
    _exp,
    _nbf,
    _iat,
    _lifetime,
    _message_signing_times,
    _jti,
    _nested,
    _client_id,
    _response_type,
)


def validate_claims(
    verified: VerifiedObject,
    client: RegisteredClient,
    outer: dict[str, str],
    settings: Settings,
    now: float | None = None,
) -> None:
    """Every rule of :data:`CLAIM_RULES`; the first broken one is raised."""
    context = ClaimContext(verified, client, outer, settings, time.time() if now is None else now)
    for rule in CLAIM_RULES:
        rule(context)


@dataclass(frozen=True, slots=True)
class JtiClaim:
    """The store key that records a JWT as used, until when (seconds from now), and the
    earliest moment it could have been made (Unix time)."""

    key: str
    ttl: float
    issued: float


def jti_claim(
    client: RegisteredClient,
    verified: VerifiedObject,
    settings: Settings,
    *,
    now: float | None = None,
) -> JtiClaim:
    """What records the object as used: its ``jti`` (or, without one, the SHA-256 of its
    payload: a signature re-encoded, or made again with ECDSA's other ``s``, is the same
    object) per client, until it expires plus the skew."""
    now = time.time() if now is None else now
    claims = verified.claims
    jti = claims.get("jti")
    identity = (
        jti if isinstance(jti, str) else "sha256:" + hashlib.sha256(verified.payload).hexdigest()
    )
    exp = float(claims["exp"])
    longest = settings.max_request_object_lifetime_seconds
    issued = issued_since(exp, claims.get("nbf"), claims.get("iat"), longest)
    ttl = max(1.0, exp + settings.clock_skew_seconds - now)
    return JtiClaim(hashed_key("jti", client.client_id, identity), ttl, issued)


async def claim_jti(store: Store, claim: JtiClaim) -> None:
    """Record the JWT as used; a second use is a replay (:class:`ReplayedObject`). A JWT
    made before the store's memory began (a Redis restarted empty) may have been used
    before it, unremembered: refused too, for one lifetime after a reset. Made before
    anything is forwarded or pushed."""
    if not await store.claim_once(claim.key, claim.ttl):
        raise ReplayedObject()
    # Read after the claim: its round trip is where a reset is learnt. NumericDates are
    # whole seconds, so one made in the second the memory began counts as after it.
    if claim.issued < math.floor(store.memory_since):
        log.warning(
            "a JWT issued before the store's memory began was refused",
            extra={"issued": claim.issued, "memory_since": store.memory_since},
        )
        raise ForgottenByStore()
