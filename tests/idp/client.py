"""The relying party of the interop suite: request objects built with joserfc (as
:mod:`tests.jar` builds them, not with the product's builder), pushes to the gateway's PAR
endpoint, and Authlib (its OpenID client) for the code exchange at the token endpoint
through the gateway and the ID token's validation."""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import aiohttp
from authlib.integrations.base_client import BaseApp
from authlib.integrations.base_client.async_app import AsyncOAuth2Mixin
from authlib.integrations.base_client.async_openid import AsyncOpenIDMixin
from authlib.integrations.httpx_client import AsyncOAuth2Client
from joserfc import jwt
from joserfc.jwk import Key, KeySet

from tests.jar import sign

REDIRECT_URI = "https://rp.example/cb"
SECRET = "interop-secret-0123456789"


class RelyingParty(AsyncOAuth2Mixin, AsyncOpenIDMixin, BaseApp):  # type: ignore[misc]
    """Authlib's OpenID Connect client, with the provider's endpoints given explicitly."""

    client_cls = AsyncOAuth2Client


def relying_party(client_id: str, issuer: str, token_url: str, jwks_url: str) -> RelyingParty:
    """A confidential client authenticating with client_secret_basic, PKCE S256."""
    return RelyingParty(
        None,
        client_id=client_id,
        client_secret=SECRET,
        access_token_url=token_url,
        client_kwargs={"token_endpoint_auth_method": "client_secret_basic"},
        issuer=issuer,
        jwks_uri=jwks_url,
        id_token_signing_alg_values_supported=["RS256"],
    )


@dataclass
class Request:
    """One authorization request as the client made it, and what it must get back."""

    client_id: str
    state: str = field(default_factory=lambda: "rp-" + secrets.token_urlsafe(12))
    nonce: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    verifier: str = field(default_factory=lambda: secrets.token_urlsafe(48))
    response_mode: str | None = None
    scope: str = "openid profile"

    @property
    def challenge(self) -> str:
        digest = hashlib.sha256(self.verifier.encode()).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def parameters(self) -> dict[str, str]:
        """The plain authorization parameters."""
        params = {
            "client_id": self.client_id,
            "response_type": "code",
            "redirect_uri": REDIRECT_URI,
            "scope": self.scope,
            "state": self.state,
            "nonce": self.nonce,
            "code_challenge": self.challenge,
            "code_challenge_method": "S256",
        }
        if self.response_mode is not None:
            params["response_mode"] = self.response_mode
        return params

    def request_object(self, key: Key, alg: str, audience: str, **claims: Any) -> str:
        """The parameters as a signed request object (RFC 9101), ``claims`` overriding."""
        now = int(time.time())
        payload: dict[str, Any] = {
            **self.parameters(),
            "iss": self.client_id,
            "aud": audience,
            "iat": now,
            "nbf": now,
            "exp": now + 300,
            "jti": secrets.token_urlsafe(16),
        }
        payload.update(claims)
        return sign(payload, alg, key)


def client_assertion(key: Key, alg: str, client_id: str, audience: str) -> str:
    """A private_key_jwt client assertion (RFC 7523) for the gateway's PAR endpoint."""
    now = int(time.time())
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": audience,
        "iat": now,
        "exp": now + 60,
        "jti": secrets.token_urlsafe(16),
    }
    return sign(claims, alg, key, typ="JWT")


async def push(
    par_url: str, form: dict[str, str], basic: tuple[str, str] | None = None
) -> dict[str, Any]:
    """POST a pushed authorization request; the gateway's 201 answer."""
    headers = dict(_FORM)
    if basic is not None:
        headers["Authorization"] = aiohttp.encode_basic_auth(*basic)
    async with (
        aiohttp.ClientSession() as session,
        session.post(par_url, data=urlencode(form), headers=headers) as answer,
    ):
        body: dict[str, Any] = await answer.json()
        assert 201 == answer.status, body
        return body


_FORM = {"Content-Type": "application/x-www-form-urlencoded"}


async def verify_jarm(
    response: str, jwks_url: str, issuer: str, client_id: str, alg: str
) -> dict[str, Any]:
    """The JARM response's claims, verified with the keys published at ``jwks_url`` (the
    provider's JWKS through the gateway, which merges the gateway's keys into it) for the
    client's registered ``alg``."""
    async with aiohttp.ClientSession() as session, session.get(jwks_url) as answer:
        keys = KeySet.import_key_set(await answer.json())
    token = jwt.decode(response, keys, algorithms=[alg])
    registry = jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": issuer},
        aud={"essential": True, "value": client_id},
        exp={"essential": True},
    )
    registry.validate(token.claims)
    return dict(token.claims)


async def redeem(
    rp: RelyingParty, request: Request, code: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Exchange ``code`` at the token endpoint and validate the ID token (Authlib): the
    token response and the ID token's claims."""
    token = await rp.fetch_access_token(
        redirect_uri=REDIRECT_URI, code=code, code_verifier=request.verifier
    )
    claims = await rp.parse_id_token(token, nonce=request.nonce, leeway=30)
    assert claims is not None, token
    return dict(token), dict(claims)
