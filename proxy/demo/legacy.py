"""A small legacy-style authorization server, bundled for ``jargate demo`` only.

It knows nothing of JAR, PAR or JARM: it takes plain authorization requests, redirects
back with a code (or tokens in the fragment), exchanges codes at ``/token`` (PKCE S256
checked when a challenge was sent) and signs ID tokens with its own RS256 key. It
records every request it receives, so the demo (and the tests) can show exactly what
reached it. With ``prompt=login`` and no session it behaves like servers that save the
request, show a login page, and replay the request afterwards.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from dataclasses import dataclass, field
from functools import cache
from typing import Any
from urllib.parse import unquote_plus, urlencode

from aiohttp import web
from joserfc import jwt
from joserfc.jwk import RSAKey
from multidict import CIMultiDict


@dataclass
class Received:
    """One request as the legacy server saw it."""

    method: str
    raw_path: str
    headers: CIMultiDict[str]
    body_sha256: str
    body_length: int
    #: The body itself, for the token endpoint's requests (what the gateway sent on).
    body: bytes = b""


@dataclass
class Recorder:
    """Everything the legacy server received, in order."""

    requests: list[Received] = field(default_factory=list)

    def paths(self) -> list[str]:
        """The raw request targets received."""
        return [r.raw_path for r in self.requests]

    def on_first_chunk(self) -> None:
        """Called when a request body's first chunk arrives (tests hook into it)."""


@cache
def _signing_key() -> RSAKey:
    """The legacy server's ID-token key: one per process (RSA generation is slow)."""
    return RSAKey.generate_key(2048, auto_kid=True)


@dataclass
class LegacyState:
    """The legacy server's configuration and memory."""

    issuer: str
    recorder: Recorder
    #: Always bounce through the login page first (Spring-style), not only on prompt=login.
    login_required: bool = False
    key: RSAKey = field(default_factory=_signing_key)
    codes: dict[str, dict[str, str]] = field(default_factory=dict)
    #: Check PKCE at the token endpoint (servers that store it but never check it: False).
    check_pkce: bool = True
    #: Client secrets the token endpoint requires (Basic or in the body), by client_id;
    #: clients not listed need none.
    client_secrets: dict[str, str] = field(default_factory=dict)


LEGACY = web.AppKey("legacy", LegacyState)


async def record(request: web.Request) -> Received:
    """Read the whole body (hashing it) and remember the request."""
    recorder = request.app[LEGACY].recorder
    digest = hashlib.sha256()
    length = 0
    async for chunk in request.content.iter_chunked(64 * 1024):
        recorder.on_first_chunk()
        digest.update(chunk)
        length += len(chunk)
    received = Received(
        method=request.method,
        raw_path=request.raw_path,
        headers=CIMultiDict(request.headers),
        body_sha256=digest.hexdigest(),
        body_length=length,
    )
    recorder.requests.append(received)
    return received


def _redirect(uri: str, params: dict[str, str], fragment: bool) -> web.Response:
    encoded = urlencode(params)
    separator = "#" if fragment else ("&" if "?" in uri else "?")
    return web.Response(status=302, headers={"Location": uri + separator + encoded})


def _id_token(state: LegacyState, client_id: str, nonce: str | None) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": state.issuer,
        "sub": "alice",
        "aud": client_id,
        "iat": now,
        "exp": now + 300,
    }
    if nonce:
        claims["nonce"] = nonce
    return jwt.encode({"alg": "RS256", "kid": state.key.kid}, claims, state.key)


async def authorize(request: web.Request) -> web.Response:
    """The authorization endpoint: a code in the query, or tokens in the fragment."""
    await record(request)
    state = request.app[LEGACY]
    query = request.query
    redirect_uri, client_id = query.get("redirect_uri"), query.get("client_id")
    if not redirect_uri or not client_id:
        return web.json_response({"error": "invalid_request"}, status=400)
    wants_login = state.login_required or query.get("prompt") == "login"
    if wants_login and "sid" not in request.cookies:
        return web.Response(
            status=302, headers={"Location": "/login?" + urlencode({"return": request.raw_path})}
        )
    response_type = query.get("response_type", "")
    fragment = response_type != "code"
    params: dict[str, str] = {}
    if query.get("scope") == "deny":
        params = {"error": "access_denied", "error_description": "the user said no"}
    else:
        if "code" in response_type.split():
            code = secrets.token_urlsafe(24)
            state.codes[code] = {
                key: query.get(key, "")
                for key in ("client_id", "redirect_uri", "nonce", "scope", "code_challenge")
            }
            params["code"] = code
        if "token" in response_type.split():
            params.update(
                {
                    "access_token": secrets.token_urlsafe(24),
                    "token_type": "Bearer",
                    "expires_in": "3600",
                }
            )
        if "id_token" in response_type.split():
            params["id_token"] = _id_token(state, client_id, query.get("nonce"))
    if "state" in query:
        params["state"] = query["state"]
    params["session_state"] = "legacy-session-" + secrets.token_hex(4)
    return _redirect(redirect_uri, params, fragment)


async def login(request: web.Request) -> web.Response:
    """The login page: signs the user in and replays the saved authorization request."""
    await record(request)
    response = web.Response(status=302, headers={"Location": request.query["return"]})
    response.set_cookie("sid", "session-1", httponly=True)
    return response


def _s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


async def token(request: web.Request) -> web.Response:
    """Exchange an authorization code, once, for the client and redirect URI it was issued
    to (RFC 6749 §4.1.3; PKCE, RFC 7636 §4.6)."""
    raw = await request.read()
    form = await request.post()
    request.app[LEGACY].recorder.requests.append(
        Received("POST", request.raw_path, CIMultiDict(request.headers), "", len(raw), raw)
    )
    state = request.app[LEGACY]
    client_id, secret = _client_credentials(request, form)
    expected = state.client_secrets.get(client_id)
    if expected is not None and secret != expected:
        return web.json_response({"error": "invalid_client"}, status=401)
    issued = state.codes.pop(str(form.get("code", "")), None)
    if issued is None or form.get("redirect_uri") != issued["redirect_uri"]:
        return web.json_response({"error": "invalid_grant"}, status=400)
    if (
        state.check_pkce
        and issued["code_challenge"]
        and _s256(str(form.get("code_verifier", ""))) != issued["code_challenge"]
    ):
        return web.json_response(
            {"error": "invalid_grant", "error_description": "PKCE"}, status=400
        )
    body: dict[str, Any] = {
        "access_token": secrets.token_urlsafe(24),
        "token_type": "Bearer",
        "expires_in": 3600,
        "scope": issued["scope"],
    }
    if "openid" in issued["scope"].split():
        body["id_token"] = _id_token(state, issued["client_id"], issued["nonce"] or None)
    return web.json_response(body, headers={"Cache-Control": "no-store"})


def _client_credentials(request: web.Request, form: Any) -> tuple[str, str | None]:
    """The client_id and secret of a token request: Basic (RFC 6749 §2.3.1), else the body."""
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("basic "):
        decoded = base64.b64decode(header[6:]).decode()
        client_id, _, secret = decoded.partition(":")
        return unquote_plus(client_id), unquote_plus(secret)
    secret = form.get("client_secret")
    return str(form.get("client_id", "")), None if secret is None else str(secret)


async def discovery(request: web.Request) -> web.Response:
    """Its OpenID Connect discovery document (no JAR, PAR or JARM in it)."""
    await record(request)
    issuer = request.app[LEGACY].issuer
    document = {
        "issuer": issuer,
        "authorization_endpoint": f"{issuer}/authorize",
        "token_endpoint": f"{issuer}/token",
        "jwks_uri": f"{issuer}/jwks",
        "response_types_supported": ["code", "id_token", "code id_token", "token"],
        "response_modes_supported": ["query", "fragment"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "code_challenge_methods_supported": ["S256"],
    }
    return web.Response(text=json.dumps(document), content_type="application/json")


async def jwks(request: web.Request) -> web.Response:
    """Its own public keys (for its ID tokens)."""
    await record(request)
    key = request.app[LEGACY].key
    return web.json_response({"keys": [key.as_dict(private=False, use="sig", alg="RS256")]})


def legacy_app(
    issuer: str = "http://127.0.0.1:8000",
    recorder: Recorder | None = None,
    client_max_size: int = 1024**2,
    login_required: bool = False,
) -> web.Application:
    """The legacy server's app; pass a :class:`Recorder` to see what it received."""
    app = web.Application(client_max_size=client_max_size)
    app[LEGACY] = LegacyState(
        issuer=issuer, recorder=recorder or Recorder(), login_required=login_required
    )
    app.router.add_get("/authorize", authorize)
    app.router.add_get("/login", login)
    app.router.add_post("/token", token)
    app.router.add_get("/.well-known/openid-configuration", discovery)
    app.router.add_get("/jwks", jwks)
    return app
