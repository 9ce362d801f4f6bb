"""Client authentication, as at a token endpoint (RFC 6749 section 2.3): the PAR endpoint's
now, and any other endpoint of the gateway's that needs it.

Per the registry's ``token_endpoint_auth_method``: ``private_key_jwt`` (RFC 7523: a JWT
the client signed with its registered keys, the request-object algorithm rules, ``iss`` =
``sub`` = client_id, ``aud`` the gateway, a short ``exp``, its ``jti`` once),
``client_secret_basic`` and ``client_secret_post`` (compared in constant time), ``none``.
Another method than the registered one, or more than one, is refused.
"""

from __future__ import annotations

import base64
import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

from aiohttp import web

from proxy import appkeys
from proxy.claims import (
    audience_members,
    check_exp,
    check_iat,
    check_nbf,
    issued_since,
    numeric_value,
)
from proxy.client_keys import ClientKeys
from proxy.clients import RegisteredClient
from proxy.compact import ReadJws, read_json_segment, split_compact
from proxy.config import config_of
from proxy.discovery import origin_of
from proxy.errors import (
    ForgottenByStore,
    InvalidClient,
    InvalidRequest,
    InvalidRequestObject,
    ReplayedObject,
)
from proxy.observability import note
from proxy.profiles import policy_of
from proxy.settings import Settings
from proxy.store import hashed_key

from .make import ASSERTION_TYPE
from .verify import (
    JtiClaim,
    claim_jti,
    media_type,
    verify_client_jws,
)

#: What a client assertion is called in descriptions and rule ids.
ASSERTION = "client assertion"


def assertion_rule(rule: str) -> str:
    """A request-object rule id as the same rule for a client assertion."""
    return "client_assertion." + rule.split(".", 1)[-1]


#: Parameters that authenticate the client; everything else is the authorization request.
AUTHENTICATION_PARAMETERS = frozenset(
    {"client_id", "client_secret", "client_assertion", "client_assertion_type"}
)
#: How far in the future a client assertion's ``exp`` may be ("short", RFC 7523 §3).
MAX_ASSERTION_SECONDS = 300


def _basic_credentials(header: str) -> tuple[str, str]:
    """RFC 6749 §2.3.1: form-urlencoded id and secret, base64 joined by a colon."""
    try:
        decoded = base64.b64decode(header.split(" ", 1)[1], validate=True).decode("utf-8")
    except (IndexError, ValueError):  # binascii.Error, UnicodeDecodeError, non-ASCII text
        raise InvalidClient(
            "malformed Basic credentials", rule="client_authentication.basic"
        ) from None
    client_id, separator, secret = decoded.partition(":")
    if not separator:
        raise InvalidClient("malformed Basic credentials", rule="client_authentication.basic")
    return unquote_plus(client_id), unquote_plus(secret)


def _auth_scheme(request: web.Request) -> str:
    """The Authorization scheme, lower-cased ("" without one): ``Basic`` with empty
    credentials is still a Basic attempt (aiohttp strips the trailing space)."""
    value = request.headers.get("Authorization", "").strip()
    return value.split(None, 1)[0].lower() if value else ""


def _presented_method(request: web.Request, form: dict[str, str]) -> str:
    presented = []
    if _auth_scheme(request) == "basic":
        presented.append("client_secret_basic")
    if "client_assertion" in form or "client_assertion_type" in form:
        presented.append("private_key_jwt")
    if "client_secret" in form:
        presented.append("client_secret_post")
    if len(presented) > 1:
        raise InvalidRequest(
            "more than one client authentication method", rule="client_authentication.methods"
        )
    return presented[0] if presented else "none"


def presented_client_ids(request: web.Request, form: dict[str, str]) -> set[str]:
    """Every client identifier the request names: Basic's, ``client_id``, and a client
    assertion's ``iss`` and ``sub``. Basic credentials or an assertion the gateway cannot
    read are refused: what it cannot read, it cannot tell is no registered client's."""
    ids = {form["client_id"]} if "client_id" in form else set()
    if _auth_scheme(request) == "basic":
        ids.add(_basic_credentials(request.headers["Authorization"])[0])
    if "client_assertion" in form:
        claims = _unverified_assertion_claims(form)
        ids.update(str(claims[name]) for name in ("iss", "sub") if name in claims)
    return ids


def _unverified_assertion_claims(form: dict[str, str]) -> dict[str, Any]:
    """The client assertion's payload, read but not verified (to find whose it claims to be)."""
    try:
        return read_json_segment(
            split_compact(form.get("client_assertion", ""), ASSERTION)[1], "payload", ASSERTION
        )
    except InvalidRequestObject as exc:
        raise InvalidClient(exc.description, rule=assertion_rule(exc.rule)) from None


async def authenticate_client(
    request: web.Request, form: dict[str, str], source: str
) -> RegisteredClient:
    """Authenticate the client per its ``token_endpoint_auth_method`` (RFC 9126 section 2,
    RFC 6749 section 2.3); the request is noted as that client's ``source`` decision."""
    method = _presented_method(request, form)
    secret: str | None = None
    if method == "client_secret_basic":
        client_id, secret = _basic_credentials(request.headers["Authorization"])
        if form.get("client_id", client_id) != client_id:
            raise InvalidRequest(
                "client_id differs from the authenticated client",
                rule="client_authentication.client_id",
            )
    elif method == "private_key_jwt" and "client_id" not in form:
        client_id = str(_unverified_assertion_claims(form).get("iss", ""))
    else:
        client_id = form.get("client_id", "")
        secret = form.get("client_secret")
    note(request, client_id or None, source)
    client = config_of(request).registry.get(client_id) if client_id else None
    if client is None:
        raise InvalidClient("unknown client", rule="client_authentication.unknown_client")
    check_auth_method(client, method)
    if method in ("client_secret_basic", "client_secret_post"):
        registered = client.secret.get_secret_value() if client.secret else None
        if (
            registered is None
            or secret is None
            or not hmac.compare_digest(secret.encode(), registered.encode())
        ):
            raise InvalidClient("client authentication failed", rule="client_authentication.secret")
    elif method == "private_key_jwt":
        await verify_client_assertion(request, form, client)
    return client


def check_auth_method(client: RegisteredClient, method: str) -> None:
    """The method presented must be the client's registered one."""
    expected = client.meta.auth_method
    if method != expected:
        raise InvalidClient(
            f"this client authenticates with {expected}, not {method}",
            rule="client_authentication.method",
        )


async def verify_client_assertion(
    request: web.Request, form: dict[str, str], client: RegisteredClient
) -> None:
    """RFC 7523 §3: a JWT the client signed with its registered keys (the request-object alg
    rules), ``iss`` = ``sub`` = client_id, ``aud`` the gateway, ``exp`` short, ``jti`` once."""
    app = request.app
    settings = app[appkeys.SETTINGS]
    if form.get("client_assertion_type") != ASSERTION_TYPE:
        raise InvalidClient(
            f"client_assertion_type must be {ASSERTION_TYPE}", rule="client_assertion.type"
        )
    read = await verify_assertion_signature(
        form.get("client_assertion", ""), client, app[appkeys.JWKS_CACHE], settings
    )
    now = time.time()
    audiences = configured_audiences(settings, app[appkeys.TOKEN_PATH].path, client)
    validate_assertion_claims(read, client, audiences, settings, now)
    claims, skew = read.claims, settings.clock_skew_seconds
    exp = float(claims["exp"])
    key = hashed_key("assertion", client.client_id, claims["jti"])
    issued = issued_since(exp, claims.get("nbf"), claims.get("iat"), MAX_ASSERTION_SECONDS)
    try:
        await claim_jti(app[appkeys.STORE], JtiClaim(key, exp + skew - now, issued))
    except ForgottenByStore as forgotten:
        raise InvalidClient(forgotten.description, rule=assertion_rule(forgotten.rule)) from None
    except ReplayedObject:
        raise InvalidClient(
            "this client assertion was already used (replay)", rule="client_assertion.replay"
        ) from None


async def verify_assertion_signature(
    assertion: str, client: RegisteredClient, keys: ClientKeys, settings: Settings
) -> ReadJws:
    """The assertion read and its signature verified with the client's registered keys (the
    request-object rules, as ``client_assertion.*``)."""
    try:
        return await verify_client_jws(
            assertion,
            client,
            keys,
            None,
            ASSERTION,
            max_depth=settings.max_json_depth,
            allowed=policy_of(settings, client).signing_algs,
        )
    except InvalidRequestObject as exc:
        raise InvalidClient(exc.description, rule=assertion_rule(exc.rule)) from None


#: The audiences a client assertion may name, and whether only a string is allowed.
Audiences = tuple[frozenset[str], bool]


#: One claim rule of a client assertion: raises :class:`InvalidClient` when broken.
@dataclass(frozen=True, slots=True)
class AssertionContext:
    """What an assertion rule judges: the read assertion, its client, the audiences it may
    name, the settings, and the time of the check."""

    read: ReadJws
    client: RegisteredClient
    audiences: Audiences
    settings: Settings
    now: float


AssertionRule = Callable[[AssertionContext], None]


def _typ(c: AssertionContext) -> None:
    typ = c.read.header.get("typ")
    if (isinstance(typ, str) and media_type(typ) == "oauth-authz-req+jwt") or (
        "response_type" in c.read.claims
    ):
        # RFC 9101 §10.8 / RFC 8725 §3.12: a request object is never a client assertion.
        raise InvalidClient(
            "a request object is not a client assertion", rule="client_assertion.typ"
        )


def _iss(c: AssertionContext) -> None:
    claims = c.read.claims
    if claims.get("iss") != c.client.client_id or claims.get("sub") != c.client.client_id:
        raise InvalidClient(
            "the assertion's iss and sub must be the client_id", rule="client_assertion.iss"
        )


def _aud(c: AssertionContext) -> None:
    accepted, strict = c.audiences
    aud = c.read.claims.get("aud")
    if strict:
        if not isinstance(aud, str) or aud not in accepted:
            raise InvalidClient(
                "the assertion's aud must be the issuer, as a string", rule="client_assertion.aud"
            )
        return
    if not accepted & set(audience_members(aud, InvalidClient, ASSERTION)):
        raise InvalidClient("the assertion's aud is not this server", rule="client_assertion.aud")


def _exp(c: AssertionContext) -> None:
    check_exp(c.read.claims, c.now, c.settings.clock_skew_seconds, InvalidClient, ASSERTION)


def _nbf(c: AssertionContext) -> None:
    check_nbf(c.read.claims, c.now, c.settings.clock_skew_seconds, InvalidClient, ASSERTION)


def _iat(c: AssertionContext) -> None:
    check_iat(c.read.claims, c.now, c.settings.clock_skew_seconds, InvalidClient, ASSERTION)


def _lifetime(c: AssertionContext) -> None:
    exp = numeric_value(c.read.claims, "exp")
    if exp is not None and exp - c.now > MAX_ASSERTION_SECONDS + c.settings.clock_skew_seconds:
        raise InvalidClient(
            f"the assertion's exp is more than {MAX_ASSERTION_SECONDS} s ahead",
            rule="client_assertion.lifetime",
        )


def _jti(c: AssertionContext) -> None:
    jti = c.read.claims.get("jti")
    if not isinstance(jti, str) or not jti:
        raise InvalidClient("the assertion needs a jti", rule="client_assertion.jti")


#: The claim rules of a client assertion, in the order the gateway applies them; each
#: independent of the others (``jargate inspect`` runs every one).
ASSERTION_RULES: tuple[AssertionRule, ...] = (_typ, _iss, _aud, _exp, _nbf, _iat, _lifetime, _jti)


def validate_assertion_claims(
    read: ReadJws,
    client: RegisteredClient,
    audiences: Audiences,
    settings: Settings,
    now: float,
) -> None:
    """Every rule of :data:`ASSERTION_RULES`; the first broken one is raised."""
    context = AssertionContext(read, client, audiences, settings, now)
    for rule in ASSERTION_RULES:
        rule(context)


def configured_audiences(
    settings: Settings, token_path: str, client: RegisteredClient | None = None
) -> Audiences:
    """The audiences a client assertion may name, and whether only a string is allowed:
    from the settings alone, never from the request.

    Strict (``JARGATE_STRICT_ASSERTION_AUDIENCE`` or a fapi2 profile; FAPI 2.0 final,
    after CVE-2025-27370): the issuer alone, as a string. Otherwise (RFC 9126 §2): the
    issuer, the PAR endpoint URL or the token endpoint URL, as a string or in an array."""
    if settings.strict_assertion_audience or policy_of(settings, client).fapi2:
        return frozenset({settings.issuer}), True
    origin = origin_of(settings.issuer)
    return frozenset({settings.issuer, origin + settings.par_path, origin + token_path}), False
