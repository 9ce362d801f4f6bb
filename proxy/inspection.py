"""A JWT held offline to the rules it would meet (``jargate inspect``): a request object
or a client assertion as the gateway would verify it, a JARM response as its client would.

The gateway's own rule code runs here (:mod:`proxy.compact`, :mod:`proxy.request.verify`,
:mod:`proxy.request.client_auth`, :mod:`proxy.request.accept`); where the gateway stops at
the first broken rule, each rule is run on its own and every broken one reported. What a
JWT cannot be read past (not compact, not JSON, not decrypting) ends the inspection.

Offline means: no store (a replay is not checked), a client's inline ``jwks`` only (a
``jwks_uri`` is not fetched, so its signature is not checked), and no upstream discovery
(an assertion audience naming the upstream's token endpoint is not known).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from joserfc import jwe
from joserfc.errors import JoseError
from joserfc.jwk import KeySet, import_key

from .algorithms import ENCRYPTION_ALGS, ENCRYPTION_ENCS, SIGNING_ALGS
from .claims import check_exp
from .client_keys import InlineKeysOnly
from .clients import ClientRegistry, RegisteredClient
from .compact import ReadJws, read_json_segment, read_jws, signature_verifies, split_compact
from .errors import GatewayError, InvalidRequestObject, Refusal
from .keyring import Keyring
from .request.accept import check_response_mode, require_response_type, trusted_destination
from .request.client_auth import (
    ASSERTION,
    ASSERTION_RULES,
    AssertionContext,
    check_auth_method,
    configured_audiences,
    verify_assertion_signature,
)
from .request.obtain import check_request_object_size
from .request.params import parameters_from_claims
from .request.verify import (
    CLAIM_RULES,
    OBJECT,
    ClaimContext,
    VerifiedObject,
    decrypt_request_object,
    media_type,
    verify_request_object,
)
from .response.jarm import signing_alg_for
from .settings import Settings
from .token.endpoint import DEFAULT_TOKEN_PATH

Kind = Literal["request-object", "client-assertion", "jarm"]
KIND_NAMES: dict[Kind, str] = {
    "request-object": OBJECT,
    "client-assertion": ASSERTION,
    "jarm": "JARM response",
}
JARM = KIND_NAMES["jarm"]


class InspectionError(Exception):
    """The inspection cannot run (a key missing or unreadable); the message says which."""


@dataclass(frozen=True, slots=True)
class Finding:
    """A rule the JWT breaks: its id, what is wrong, and what was expected."""

    rule: str
    description: str
    expected: str | None = None

    def line(self) -> str:
        """The finding as ``jargate inspect`` prints it."""
        tail = f" (expected {self.expected})" if self.expected else ""
        return f"{self.rule}: {self.description}{tail}"


@dataclass
class Inspection:
    """What an inspection found: the JWT's kind, client, contents, and every broken rule."""

    kind: Kind
    client_id: str | None = None
    header: dict[str, Any] = field(default_factory=dict)
    claims: dict[str, Any] = field(default_factory=dict)
    encrypted: bool = False
    broken: list[Finding] = field(default_factory=list)
    #: Rules offline cannot check, each ``rule: why``.
    unchecked: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: What each rule expected, by rule id, where the context says more than the description.
    expectations: dict[str, str] = field(default_factory=dict)

    @property
    def accepted(self) -> bool:
        """True when no rule that could be checked is broken."""
        return not self.broken

    def add(self, rule: str, description: str) -> None:
        """Record a broken rule, once per rule id."""
        if all(finding.rule != rule for finding in self.broken):
            self.broken.append(Finding(rule, description, self.expectations.get(rule)))

    def refused(self, error: GatewayError, rule: str | None = None) -> None:
        """Record a refusal of the gateway's rule code (``rule`` renames it)."""
        self.add(rule or error.rule, error.description)


async def inspect_jwt(
    token: str,
    settings: Settings,
    registry: ClientRegistry,
    keyring: Keyring,
    *,
    client_id: str | None = None,
    kind: Kind | None = None,
    client_keys: KeySet | None = None,
    now: float | None = None,
) -> Inspection:
    """Inspect ``token`` as ``kind`` (else :func:`detect_kind`); ``client_id`` names the
    client (else the JWT does); ``client_keys`` decrypt an encrypted JARM response."""
    token = token.strip()
    now = time.time() if now is None else now
    kind = kind or detect_kind(token, settings, client_keys is not None)
    if kind == "jarm":
        return inspect_jarm_response(
            token,
            settings,
            registry,
            keyring,
            client_id=client_id,
            client_keys=client_keys,
            now=now,
        )
    if kind == "client-assertion":
        return await inspect_client_assertion(
            token, settings, registry, client_id=client_id, now=now
        )
    return await inspect_request_object(
        token, settings, registry, keyring, client_id=client_id, now=now
    )


def detect_kind(token: str, settings: Settings, has_client_key: bool) -> Kind:
    """What ``token`` most likely is: a JWE is a JARM response when the client's key is
    given, else a request object; a JWS the gateway's issuer signed is a JARM response; one
    with ``sub`` that is no request object (the gateway's own test, ``client_assertion.typ``)
    is a client assertion; anything else is read as a request object."""
    parts = token.split(".")
    if len(parts) == 5:
        return "jarm" if has_client_key else "request-object"
    header, claims = _read_unverified(parts)
    if claims.get("iss") == settings.issuer:
        return "jarm"
    typ = header.get("typ")
    looks_like_request = (
        (isinstance(typ, str) and media_type(typ) == "oauth-authz-req+jwt")
        or "response_type" in claims
        or "client_id" in claims
    )
    return "client-assertion" if "sub" in claims and not looks_like_request else "request-object"


def _read_unverified(parts: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A JWS's header and claims, unverified; empty when they cannot be read."""
    if len(parts) != 3:
        return {}, {}
    try:
        return read_json_segment(parts[0], "header"), read_json_segment(parts[1], "payload")
    except InvalidRequestObject:
        return {}, {}


def _peek(token: str, keyring: Keyring) -> dict[str, Any]:
    """The claims of a request object, decrypted with the gateway's keys when it is a JWE,
    unverified: only to learn which client it claims to be from."""
    parts = token.split(".")
    if len(parts) == 5:
        try:
            header = read_json_segment(parts[0], "JWE header")
            algorithms = [str(header.get("alg")), str(header.get("enc"))]
            decrypted = jwe.decrypt_compact(token, keyring.decryption_keys, algorithms=algorithms)
            parts = (decrypted.plaintext or b"").decode("ascii").split(".")
        except (
            InvalidRequestObject,
            JoseError,
            ValueError,
            TypeError,
            KeyError,
            UnicodeDecodeError,
        ):
            return {}
    return _read_unverified(parts)[1]


def _claimed_client(claims: dict[str, Any], *names: str) -> str | None:
    for name in names:
        value = claims.get(name)
        if isinstance(value, str) and value:
            return value
    return None


async def inspect_request_object(
    token: str,
    settings: Settings,
    registry: ClientRegistry,
    keyring: Keyring,
    *,
    client_id: str | None,
    now: float,
) -> Inspection:
    """The request object as the authorization endpoint would take it by value, with
    ``client_id`` (else its own) as the request's ``client_id``."""
    found = Inspection("request-object")
    try:
        check_request_object_size(token, settings.max_request_object_bytes)
        split_compact(token)
    except Refusal as refusal:
        found.refused(refusal)
        return found
    found.client_id = client_id or _claimed_client(_peek(token, keyring), "client_id", "iss")
    client = registry.get(found.client_id) if found.client_id else None
    if client is None:
        _unknown_client(found, registry, "client.unregistered_jar")
        return found
    _expect_request_object(found, client, settings)
    depth = settings.max_json_depth
    try:
        signed, found.encrypted = decrypt_request_object(token, keyring, client, depth)
    except Refusal as refusal:
        found.refused(refusal)
        return found
    try:
        verified = await verify_request_object(
            signed, client, InlineKeysOnly(), found.encrypted, depth
        )
    except Refusal as refusal:
        read = _signature_failed(found, refusal, client, signed, kind=OBJECT, depth=depth)
        if read is None:
            return found
        verified = VerifiedObject(read.header, read.claims, found.encrypted, read.payload)
    found.header, found.claims = verified.header, verified.claims
    context = ClaimContext(
        verified, client, {"client_id": found.client_id or client.client_id}, settings, now
    )
    for rule in CLAIM_RULES:
        try:
            rule(context)
        except Refusal as refusal:
            found.refused(refusal)
    try:
        inner = parameters_from_claims(verified.claims)
        inner.setdefault("client_id", client.client_id)
        destination = trusted_destination(inner, client, InvalidRequestObject)
    except Refusal as refusal:
        found.refused(refusal)
    else:
        try:
            require_response_type(inner)
        except Refusal as refusal:
            found.refused(refusal)
        try:
            check_response_mode(destination, client)
        except Refusal as refusal:
            found.refused(refusal)
    found.unchecked.append(
        "request_object.replay: whether its jti (or its payload) was used before is in the "
        "store, not checked offline"
    )
    if settings.require_par or client.meta.require_pushed_authorization_requests:
        found.notes.append(
            "this client must push its requests (policy.pushed_authorization_requests): the "
            "authorization endpoint takes this object only from the PAR endpoint"
        )
    return found


def _expect_request_object(found: Inspection, client: RegisteredClient, settings: Settings) -> None:
    meta = client.meta
    expected = {
        "request_object.typ": "no typ, or oauth-authz-req+jwt",
        "request_object.alg": "one of " + ", ".join(SIGNING_ALGS),
        "request_object.iss": repr(client.client_id),
        "request_object.aud": repr(settings.issuer),
        "request_object.exp": "a NumericDate in the future",
        "request_object.lifetime": (
            f"exp at most {settings.max_request_object_lifetime_seconds} s after nbf, iat "
            "and now (JARGATE_MAX_REQUEST_OBJECT_LIFETIME_SECONDS)"
        ),
        "request_object.client_id": repr(found.client_id),
        "redirect_uri.unregistered": "one of " + ", ".join(meta.redirect_uris or ("(none)",)),
    }
    if meta.request_object_signing_alg:
        expected["request_object.alg.pinned"] = meta.request_object_signing_alg
    if meta.request_object_encryption_alg:
        pair = f"{meta.request_object_encryption_alg}/{meta.request_object_encryption_enc}"
        expected["request_object.encryption.required"] = pair
        expected["request_object.encryption.pinned"] = pair
    if client.keys is not None:
        kids = [str(key.kid) for key in client.keys if key.kid]
        expected["request_object.kid"] = "one of the client's kids: " + ", ".join(kids or ["-"])
    found.expectations.update(expected)


def _unknown_client(found: Inspection, registry: ClientRegistry, rule: str) -> None:
    if found.client_id is None:
        found.add("client_id.missing", "no client_id: give --client-id, or put it in the JWT")
        return
    equivalent = registry.equivalent(found.client_id)
    hint = f"; did you mean {equivalent.client_id!r}?" if equivalent is not None else ""
    found.add(rule, f"client {found.client_id!r} is not in the registry{hint}")


def _signature_failed(
    found: Inspection,
    refusal: GatewayError,
    client: RegisteredClient,
    token: str,
    *,
    kind: str,
    depth: int,
) -> ReadJws | None:
    """Record why the signature did not verify (or, for a ``jwks_uri`` client, that it was
    not checked) and read the JWS anyway, so that its claims can be held to their rules;
    None when it cannot be read."""
    rule = refusal.rule
    if rule.endswith(".keys_unavailable") and client.meta.jwks_uri is not None:
        found.unchecked.append(
            f"{kind.replace(' ', '_')}.signature: the client's jwks_uri "
            f"{client.meta.jwks_uri} is not fetched offline"
        )
    else:
        found.add(rule, refusal.description)
    try:
        return read_jws(token, kind, depth)
    except Refusal:
        return None


async def inspect_client_assertion(
    token: str,
    settings: Settings,
    registry: ClientRegistry,
    *,
    client_id: str | None,
    now: float,
) -> Inspection:
    """The client assertion as the PAR endpoint would verify it (private_key_jwt)."""
    found = Inspection("client-assertion")
    found.client_id = client_id or _claimed_client(_read_unverified(token.split("."))[1], "iss")
    client = registry.get(found.client_id) if found.client_id else None
    if client is None:
        _unknown_client(found, registry, "client_authentication.unknown_client")
        return found
    # Offline, the token path is the setting's (the upstream's discovery is not asked).
    token_path = settings.token_path or DEFAULT_TOKEN_PATH
    audiences = configured_audiences(settings, token_path, client)
    found.expectations.update(
        {
            "client_assertion.iss": f"iss and sub {client.client_id!r}",
            "client_assertion.aud": " or ".join(repr(aud) for aud in sorted(audiences[0]))
            + (" as a string" if audiences[1] else ""),
            "client_assertion.exp": "a NumericDate in the future",
        }
    )
    try:
        check_auth_method(client, "private_key_jwt")
    except Refusal as refusal:
        found.refused(refusal)
    try:
        read: ReadJws | None = await verify_assertion_signature(
            token, client, InlineKeysOnly(), settings
        )
    except Refusal as refusal:
        read = _signature_failed(
            found, refusal, client, token, kind=ASSERTION, depth=settings.max_json_depth
        )
    if read is None:
        return found
    found.header, found.claims = read.header, read.claims
    context = AssertionContext(read, client, audiences, settings, now)
    for rule in ASSERTION_RULES:
        try:
            rule(context)
        except Refusal as refusal:
            found.refused(refusal)
    if any(f.rule == "client_assertion.aud" for f in found.broken) and not audiences[1]:
        found.notes.append(
            "online the gateway also accepts the upstream's token endpoint URL as aud (from "
            "its discovery document, not read offline)"
        )
    found.unchecked.append(
        "client_assertion.replay: whether its jti was used before is in the store, not "
        "checked offline"
    )
    return found


def read_client_keys(path: str) -> KeySet:
    """The client's private keys (a JWK or a JWKS file) that decrypt its JARM responses."""
    try:
        document = json.loads(Path(path).read_text())
    except OSError as exc:
        raise InspectionError(f"--key {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise InspectionError(f"--key {path}: not JSON ({exc})") from None
    try:
        if isinstance(document, dict) and isinstance(document.get("keys"), list):
            return KeySet.import_key_set(document)  # type: ignore[arg-type]
        return KeySet([import_key(document)])
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        raise InspectionError(f"--key {path}: not a JWK or JWKS ({exc})") from None


def jarm_rule(rule: str) -> str:
    """A JWS-reading rule id as the same rule for a JARM response."""
    return "jarm_response." + rule.split(".", 1)[-1]


def inspect_jarm_response(
    token: str,
    settings: Settings,
    registry: ClientRegistry,
    keyring: Keyring,
    *,
    client_id: str | None,
    client_keys: KeySet | None,
    now: float,
) -> Inspection:
    """A JARM response as its client checks it (JARM section 2.4): decrypted with the
    client's key when encrypted, signed by one of the gateway's keys, ``iss`` the issuer,
    ``aud`` the client, ``exp`` not past."""
    if keyring.ephemeral:
        raise InspectionError(
            "JARGATE_KEYS_FILE is not set: a JARM response is verified against the gateway's "
            "keys; set it to the keys file the gateway signs with"
        )
    found = Inspection("jarm", client_id=client_id)
    signed = _decrypt_jarm(found, token, client_keys)
    if signed is None:
        return found
    try:
        read = read_jws(signed, JARM, settings.max_json_depth)
    except InvalidRequestObject as refusal:
        found.refused(refusal, jarm_rule(refusal.rule))
        return found
    found.header, found.claims = read.header, read.claims
    found.client_id = client_id or _claimed_client(read.claims, "aud")
    client = registry.get(found.client_id) if found.client_id else None
    if client is None:
        _unknown_client(found, registry, "jarm_response.aud")
    _check_jarm_signature(found, read, keyring, client, settings)
    if read.claims.get("iss") != settings.issuer:
        found.add("jarm_response.iss", f"iss is not the issuer (expected {settings.issuer!r})")
    if client is not None and read.claims.get("aud") != client.client_id:
        found.add("jarm_response.aud", f"aud is not the client_id (expected {client.client_id!r})")
    try:
        check_exp(read.claims, now, settings.clock_skew_seconds, InvalidRequestObject, JARM)
    except InvalidRequestObject as refusal:
        found.refused(refusal)
    if client is not None:
        _check_jarm_encryption(found, client, token)
    return found


def _decrypt_jarm(found: Inspection, token: str, client_keys: KeySet | None) -> str | None:
    """The signed JWT inside; None when it does not decrypt."""
    parts = token.split(".")
    if len(parts) != 5:
        return token
    if client_keys is None:
        raise InspectionError(
            "the JARM response is encrypted: give the client's private key with --key FILE"
        )
    found.encrypted = True
    try:
        header = read_json_segment(parts[0], "JWE header", JARM)
    except InvalidRequestObject as refusal:
        found.refused(refusal, jarm_rule(refusal.rule))
        return None
    alg, enc = header.get("alg"), header.get("enc")
    if alg not in ENCRYPTION_ALGS or enc not in ENCRYPTION_ENCS:
        found.add("jarm_response.decrypt", f"JWE {alg!r}/{enc!r} is not one the gateway writes")
        return None
    try:
        plaintext = jwe.decrypt_compact(token, client_keys, algorithms=[alg, enc]).plaintext
        return (plaintext or b"").decode("ascii")
    except (JoseError, ValueError, TypeError, KeyError, UnicodeDecodeError):
        found.add("jarm_response.decrypt", "the response does not decrypt with the key of --key")
        return None


def _check_jarm_signature(
    found: Inspection,
    read: ReadJws,
    keyring: Keyring,
    client: RegisteredClient | None,
    settings: Settings,
) -> None:
    alg, kid = read.header.get("alg"), read.header.get("kid")
    wanted = signing_alg_for(client, settings) if client is not None else None
    if not isinstance(alg, str) or alg not in SIGNING_ALGS:
        found.add("jarm_response.alg", f"alg {alg!r} is not an allowed signing alg")
        return
    if wanted is not None and alg != wanted:
        found.add(
            "jarm_response.alg",
            f"signed with {alg}, not the client's {wanted} (authorization_signed_response_alg, "
            "else JARGATE_JARM_DEFAULT_ALG)",
        )
    keys = [key for key in keyring.keys if key.use == "sig" and key.kid == kid]
    if not keys:
        kids = ", ".join(key.kid for key in keyring.keys if key.use == "sig")
        found.add("jarm_response.kid", f"no signing key of the gateway has kid {kid!r} ({kids})")
        return
    if not any(signature_verifies(read, alg, import_key(key.public_jwk())) for key in keys):
        found.add("jarm_response.signature", "the signature does not verify with the gateway's key")


def _check_jarm_encryption(found: Inspection, client: RegisteredClient, token: str) -> None:
    meta = client.meta
    registered = meta.authorization_encrypted_response_alg
    pair = f"{registered}/{meta.authorization_encrypted_response_enc}"
    if registered is None:
        if found.encrypted:
            found.add("jarm_response.encryption", "encrypted, for a client that registered none")
        return
    if not found.encrypted:
        found.add("jarm_response.encryption", f"not encrypted; the client registered {pair}")
        return
    header = read_json_segment(token.split(".", 1)[0], "JWE header", JARM)
    if f"{header.get('alg')}/{header.get('enc')}" != pair:
        found.add(
            "jarm_response.encryption",
            f"encrypted with {header.get('alg')}/{header.get('enc')}, not the registered {pair}",
        )
