"""The pushed authorization request endpoint (RFC 9126), for servers that have none.

``POST {JARGATE_PAR_PATH}``, ``application/x-www-form-urlencoded`` only, bodies bounded.
The client authenticates as at a token endpoint (:func:`authenticate_client`); the pushed
request, plain or a request object, is validated exactly as at the authorization
endpoint, so errors surface at push time; the answer is ``201`` with a one-time
``request_uri`` and its ``expires_in``. Errors are JSON (RFC 9126 §2.3), never redirects.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import time
from typing import Any
from urllib.parse import unquote_plus

from aiohttp import web

from proxy import appkeys
from proxy.claims import audience_members, check_times, issued_since
from proxy.clients import RegisteredClient
from proxy.discovery import origin_of
from proxy.errors import (
    ForgottenByStore,
    GatewayError,
    InvalidClient,
    InvalidRequest,
    InvalidRequestObject,
    PolicyRefusal,
    ReplayedObject,
    TemporarilyUnavailable,
    error_page,
)
from proxy.store import hashed_key

from .accept import (
    Accepted,
    VerifiedRefusal,
    plain_request,
    trusted_destination,
    verified_request,
)
from .make import ASSERTION_TYPE
from .params import RawParameters, read_form
from .pushed import Pushed, new_request_uri, save_pushed
from .verify import (
    JtiClaim,
    claim_jti,
    decode_json_segment,
    media_type,
    split_compact,
    verify_client_jws,
)

log = logging.getLogger("jargate.par")

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
    except (IndexError, binascii.Error, UnicodeDecodeError):
        raise InvalidClient("malformed Basic credentials") from None
    client_id, separator, secret = decoded.partition(":")
    if not separator:
        raise InvalidClient("malformed Basic credentials")
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
        raise InvalidRequest("more than one client authentication method")
    return presented[0] if presented else "none"


async def authenticate_client(request: web.Request, form: dict[str, str]) -> RegisteredClient:
    """Authenticate the client per its ``token_endpoint_auth_method`` (RFC 9126 §2)."""
    method = _presented_method(request, form)
    secret: str | None = None
    if method == "client_secret_basic":
        client_id, secret = _basic_credentials(request.headers["Authorization"])
        if form.get("client_id", client_id) != client_id:
            raise InvalidRequest("client_id differs from the authenticated client")
    elif method == "private_key_jwt" and "client_id" not in form:
        claims = decode_json_segment(
            split_compact(form.get("client_assertion", ""), "client assertion")[1],
            "payload",
            "client assertion",
        )
        client_id = str(claims.get("iss", ""))
    else:
        client_id = form.get("client_id", "")
        secret = form.get("client_secret")
    client = request.app[appkeys.REGISTRY].get(client_id) if client_id else None
    if client is None:
        raise InvalidClient("unknown client")
    expected = client.meta.auth_method
    if method != expected:
        raise InvalidClient(f"this client authenticates with {expected}, not {method}")
    if method in ("client_secret_basic", "client_secret_post"):
        registered = client.secret.get_secret_value() if client.secret else None
        if (
            registered is None
            or secret is None
            or not hmac.compare_digest(secret.encode(), registered.encode())
        ):
            raise InvalidClient("client authentication failed")
    elif method == "private_key_jwt":
        await verify_client_assertion(request, form, client)
    return client


async def verify_client_assertion(
    request: web.Request, form: dict[str, str], client: RegisteredClient
) -> None:
    """RFC 7523 §3: a JWT the client signed with its registered keys (the request-object alg
    rules), ``iss`` = ``sub`` = client_id, ``aud`` the gateway, ``exp`` short, ``jti`` once."""
    app = request.app
    settings = app[appkeys.SETTINGS]
    if form.get("client_assertion_type") != ASSERTION_TYPE:
        raise InvalidClient(f"client_assertion_type must be {ASSERTION_TYPE}")
    assertion = form.get("client_assertion", "")
    try:
        header, claims = await verify_client_jws(
            assertion,
            client,
            app[appkeys.JWKS_CACHE],
            None,
            "client assertion",
            max_depth=settings.max_json_depth,
        )
    except InvalidRequestObject as exc:
        raise InvalidClient(exc.description) from None
    typ = header.get("typ")
    if (isinstance(typ, str) and media_type(typ) == "oauth-authz-req+jwt") or (
        "response_type" in claims
    ):
        # RFC 9101 §10.8 / RFC 8725 §3.12: a request object is never a client assertion.
        raise InvalidClient("a request object is not a client assertion")
    if claims.get("iss") != client.client_id or claims.get("sub") != client.client_id:
        raise InvalidClient("the assertion's iss and sub must be the client_id")
    _check_assertion_audience(claims.get("aud"), *await _accepted_audiences(request.app))
    now = time.time()
    skew = settings.clock_skew_seconds
    exp, nbf, iat = check_times(claims, now, skew, InvalidClient, "assertion")
    if exp - now > MAX_ASSERTION_SECONDS + skew:
        raise InvalidClient(f"the assertion's exp is more than {MAX_ASSERTION_SECONDS} s ahead")
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti:
        raise InvalidClient("the assertion needs a jti")
    key = hashed_key("assertion", client.client_id, jti)
    issued = issued_since(exp, nbf, iat, MAX_ASSERTION_SECONDS)
    try:
        await claim_jti(app[appkeys.STORE], JtiClaim(key, exp + skew - now, issued))
    except ForgottenByStore as forgotten:
        raise InvalidClient(forgotten.description) from None
    except ReplayedObject:
        raise InvalidClient("this client assertion was already used (replay)") from None


async def _accepted_audiences(app: web.Application) -> tuple[frozenset[str], bool]:
    """The audiences a client assertion may name, and whether only a string is allowed:
    from the settings and the issuer's own discovery document, never from the request.

    Strict (FAPI 2.0 final, after CVE-2025-27370): the issuer alone, as a string.
    Otherwise (RFC 9126 §2): the issuer, the PAR endpoint URL or the token endpoint URL,
    as a string or in an array."""
    settings = app[appkeys.SETTINGS]
    if settings.strict_assertion_audience:
        return frozenset({settings.issuer}), True
    accepted = {settings.issuer, origin_of(settings.issuer) + settings.par_path}
    token_endpoint = await app[appkeys.METADATA].token_endpoint(app)
    if token_endpoint is not None:
        accepted.add(token_endpoint)
    return frozenset(accepted), False


def _check_assertion_audience(aud: Any, accepted: frozenset[str], strict: bool) -> None:
    if strict:
        if not isinstance(aud, str) or aud not in accepted:
            raise InvalidClient("the assertion's aud must be the issuer, as a string")
        return
    if not accepted & set(audience_members(aud, InvalidClient, "assertion")):
        raise InvalidClient("the assertion's aud is not this server")


async def push(request: web.Request) -> web.Response:
    """``POST`` a pushed authorization request; ``201 {request_uri, expires_in}``."""
    try:
        return await _push(request)
    except TemporarilyUnavailable:
        raise
    except VerifiedRefusal as refusal:
        return _refused(request, refusal.err)
    except GatewayError as err:
        return _refused(request, err)


def _refused(request: web.Request, err: GatewayError) -> web.Response:
    log.info("pushed request refused", extra={"error": err.error})
    request.app[appkeys.METRICS].count_decision("refused", err.error, "push")
    return error_page(request, err, json_only=True)


async def _push(request: web.Request) -> web.Response:
    app = request.app
    settings = app[appkeys.SETTINGS]
    form = RawParameters([], await read_form(request, settings.max_parameters)).single()
    client = await authenticate_client(request, form)
    params = {k: v for k, v in form.items() if k not in AUTHENTICATION_PARAMETERS}
    if "request_uri" in params:
        raise InvalidRequest("request_uri is not allowed at the PAR endpoint")
    outer = {"client_id": client.client_id}
    if "request" in params:
        # RFC 9126 §3: with a request object, only it and the authentication count.
        accepted = await verified_request(request, {**outer, "request": params["request"]}, client)
        if accepted.claim is not None:
            await claim_jti(app[appkeys.STORE], accepted.claim)
    else:
        try:
            accepted = plain_request({**params, **outer}, client)
        except PolicyRefusal as refusal:
            if settings.enforcement != "report":
                raise
            log.info("policy refusal reported", extra={"client_id": client.client_id})
            accepted = Accepted(
                params={**params, **outer},
                destination=trusted_destination({**params, **outer}, client, InvalidRequest),
                source="plain",
            )
            app[appkeys.METRICS].count_decision("reported", refusal.error, "push")
    if client.meta.auth_method == "none" and (
        not accepted.params.get("code_challenge")
        or accepted.params.get("code_challenge_method") != "S256"
    ):
        raise InvalidRequest("a public client must use PKCE with S256 (code_challenge)")
    request_uri = new_request_uri()
    pushed = Pushed(
        client_id=client.client_id,
        params=accepted.params,
        expires_at=time.time() + settings.par_ttl_seconds,
    )
    await save_pushed(app[appkeys.STORE], request_uri, pushed, settings)
    app[appkeys.METRICS].count_decision("accepted", "none", "push")
    log.info("pushed request accepted", extra={"client_id": client.client_id})
    return web.json_response(
        {"request_uri": request_uri, "expires_in": settings.par_ttl_seconds},
        status=201,
        headers={"Cache-Control": "no-store"},
    )
