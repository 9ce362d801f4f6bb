"""JARGATE_PROFILE=fapi2 and fapi2-message-signing in front of a legacy server that knows
neither. Each test is named after the OpenID conformance suite module it mirrors
(``fapi2-security-profile-final-test-plan``, ``fapi2-message-signing-final-test-plan``);
docs/fapi2.md maps them. Refusals assert the error, where it went, and that the legacy
server saw nothing."""

from __future__ import annotations

import asyncio
import json
import time
import warnings
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey

from proxy.app import create_app
from proxy.clients import RegistryError, load_registry
from proxy.keyring import Keyring
from proxy.store import MemoryStore
from tests.conftest import AiohttpClient, Legacy
from tests.jar import DROP, ISSUER, REDIRECT, Claims, private_key, public_jwks, sign
from tests.support import make_settings
from tests.test_par import assertion
from tests.test_token import ASSERTION_TYPE, CHALLENGE, UPSTREAM_SECRET, VERIFIER, blind

__all__ = ["blind"]  # the fixture, used by name

EC = private_key("p256", "fapi")
RSA = private_key("rsa", "fapi")
BANK: dict[str, Any] = {
    "client_id": "bank",
    "jwks": public_jwks(EC, RSA),
    "redirect_uris": [REDIRECT],
    "token_endpoint_auth_method": "private_key_jwt",
    "authorization_signed_response_alg": "ES256",
    "upstream_token_endpoint_auth_method": "client_secret_basic",
    "upstream_client_secret": UPSTREAM_SECRET,
}
SP = "fapi2"
MS = "fapi2-message-signing"


async def fapi(
    aiohttp_client: AiohttpClient, legacy: Legacy, profile: str = SP, **settings: Any
) -> TestClient[Any, Any]:
    full = make_settings(
        legacy.url,
        profile=profile,
        clients=json.dumps({"clients": [{**BANK, "client_id": "web"}, BANK]}),
        **settings,
    )
    app = create_app(
        full,
        registry=load_registry(full),
        keyring=Keyring.throwaway(["ES256"]),
        store=MemoryStore(),
    )
    return await aiohttp_client(app)


class Ahead(int):
    """A time relative to when the test runs (parameters are built at collection, minutes
    before a test of a long run starts)."""


def at_run(claims: dict[str, Any]) -> dict[str, Any]:
    """``claims`` with each :class:`Ahead` made a NumericDate from now."""
    now = int(time.time())
    return {k: now + int(v) if isinstance(v, Ahead) else v for k, v in claims.items()}


def authentication(**claims: Any) -> dict[str, str]:
    return {
        "client_id": "bank",
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion("bank", EC, **at_run(claims)),
    }


def authorization(**params: Any) -> dict[str, str]:
    base = {
        "response_type": "code",
        "redirect_uri": REDIRECT,
        "scope": "openid",
        "state": "st",
        "nonce": "n" * 64,
        "code_challenge": CHALLENGE,
        "code_challenge_method": "S256",
    }
    return {k: v for k, v in {**base, **params}.items() if v is not DROP}


def request_object(alg: str = "ES256", **claims: Any) -> str:
    now = int(time.time())
    defaults = {"code_challenge": CHALLENGE, "code_challenge_method": "S256"}
    built = Claims("bank").build(**{**defaults, "nbf": now, "exp": now + 300, **at_run(claims)})
    return sign(built, alg, key=EC if alg.startswith("ES") else RSA)


async def push(client: TestClient[Any, Any], form: dict[str, str]) -> ClientResponse:
    return await client.post("/par", data=form)


async def pushed_uri(client: TestClient[Any, Any], form: dict[str, str]) -> str:
    response = await push(client, form)
    assert 201 == response.status, await response.text()
    return str((await response.json())["request_uri"])


async def refused_at_par(
    response: ClientResponse, legacy: Legacy, error: str, status: int = 400
) -> str:
    assert [] == legacy.recorder.requests, "the upstream must receive nothing"
    body = await response.json()
    assert (status, error) == (response.status, body["error"]), body
    return str(body["error_description"])


async def authorize_pushed(client: TestClient[Any, Any], request_uri: str) -> dict[str, Any]:
    """Use the request_uri; the authorization response's parameters (JARM: its claims)."""
    response = await client.get(
        "/authorize",
        params={"client_id": "bank", "request_uri": request_uri},
        allow_redirects=False,
    )
    assert 302 == response.status, await response.text()
    location = urlsplit(response.headers["Location"])
    query = {k: v[0] for k, v in parse_qs(location.query).items()}
    if "response" not in query:
        return query
    published = await (await client.get("/.well-known/jargate/jwks.json")).json()
    token = jwt.decode(query["response"], KeySet.import_key_set(published), algorithms=["ES256"])
    return dict(token.claims)


async def exchange(client: TestClient[Any, Any], code: str, **extra: str) -> ClientResponse:
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "code_verifier": VERIFIER,
        **authentication(),
        **extra,
    }
    return await client.post("/token", data={k: v for k, v in form.items() if v != "DROP"})


def token_requests(legacy: Legacy) -> list[Any]:
    return [r for r in legacy.recorder.requests if r.raw_path.startswith("/token")]


# ------------------------------------------------------------------ happy paths


@pytest.mark.parametrize("profile", [SP, MS])
async def test_fapi2_sp_final_happy_flow(
    aiohttp_client: AiohttpClient, blind: Legacy, profile: str
) -> None:
    """PAR with private_key_jwt (a signed request object under Message Signing), PKCE, a
    64-character nonce, the code with iss (in JARM under Message Signing), the token
    exchange through the gateway to a server that knows only a secret and ignores PKCE."""
    client = await fapi(aiohttp_client, blind, profile)
    if profile == MS:
        form = {**authentication(), "request": request_object(nonce="n" * 64)}
    else:
        form = {**authentication(), **authorization()}
    response = await authorize_pushed(client, await pushed_uri(client, form))
    assert ISSUER == response["iss"]
    if profile == MS:
        assert ("bank", ISSUER) == (response["aud"], response["iss"])
        assert response["exp"] - time.time() <= 600
    answer = await exchange(client, response["code"])
    assert 200 == answer.status, await answer.text()
    (received,) = token_requests(blind)
    assert "client_assertion" not in received.body.decode()


async def test_fapi2_sp_final_discovery_endpoint_verification(
    aiohttp_client: AiohttpClient, blind: Legacy
) -> None:
    """Discovery advertises only what the profile allows."""
    client = await fapi(aiohttp_client, blind, MS)
    document = await (await client.get("/.well-known/openid-configuration")).json()
    assert document["require_pushed_authorization_requests"] is True
    assert document["require_signed_request_object"] is True
    assert ["code"] == document["response_types_supported"]
    assert ["S256"] == document["code_challenge_methods_supported"]
    assert ["private_key_jwt"] == document["token_endpoint_auth_methods_supported"]
    for field in (
        "request_object_signing_alg_values_supported",
        "token_endpoint_auth_signing_alg_values_supported",
        "authorization_signing_alg_values_supported",
    ):
        assert set(document[field]) <= {"PS256", "ES256", "EdDSA"}, field
    assert all(mode.endswith("jwt") for mode in document["response_modes_supported"])


# ------------------------------------------------------------------ authorization request


async def test_fapi2_sp_final_ensure_unsigned_authorization_request_without_using_par_fails(
    aiohttp_client: AiohttpClient, blind: Legacy
) -> None:
    client = await fapi(aiohttp_client, blind)
    response = await client.get(
        "/authorize", params={"client_id": "bank", **authorization()}, allow_redirects=False
    )
    query = parse_qs(urlsplit(response.headers["Location"]).query)
    assert ["invalid_request"] == query["error"]
    assert [] == blind.recorder.requests


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({"response_type": "code id_token"}, "unsupported_response_type"),
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"redirect_uri": DROP}, "invalid_request"),
        ({"code_challenge": DROP, "code_challenge_method": DROP}, "invalid_request"),
        ({"code_challenge": VERIFIER, "code_challenge_method": "plain"}, "invalid_request"),
    ],
    ids=[
        "fapi2_sp_final_ensure_response_type_code_id_token_fails",
        "fapi2_sp_final_ensure_response_type_token_fails",
        "fapi2_sp_final_ensure_redirect_uri_in_authorization_request",
        "fapi2_sp_final_par_ensure_pkce_required",
        "fapi2_sp_final_par_ensure_plain_pkce_rejected",
    ],
)
async def test_fapi2_sp_final_par_refusals(
    aiohttp_client: AiohttpClient, blind: Legacy, params: dict[str, Any], error: str
) -> None:
    client = await fapi(aiohttp_client, blind)
    response = await push(client, {**authentication(), **authorization(**params)})
    await refused_at_par(response, blind, error)


@pytest.mark.parametrize(
    ("claims", "rule"),
    [
        ({"aud": ISSUER + "/par"}, "as a string"),
        ({"aud": [ISSUER + "/par"]}, "as a string"),
        ({"aud": ISSUER + "/token"}, "as a string"),
        ({"aud": [ISSUER]}, "as a string"),
        ({"nbf": Ahead(90), "iat": Ahead(90)}, "not valid yet"),
        ({"exp": Ahead(-300)}, "expired"),
    ],
    ids=[
        "fapi2_sp_final_par_endpoint_as_audience_fails",
        "fapi2_sp_final_par_endpoint_as_array_audience_fails",
        "fapi2_sp_final_par_token_endpoint_as_audience_fails",
        "issuer_in_an_array",
        "fapi2_sp_final_par_ensure_jwt_client_assertion_with_iat_nbf_over_60_seconds_in_the_future_fails",
        "fapi2_sp_final_ensure_client_assertion_with_exp_is_5_minutes_in_past_fails",
    ],
)
async def test_fapi2_sp_final_client_assertion_refusals(
    aiohttp_client: AiohttpClient, blind: Legacy, claims: dict[str, Any], rule: str
) -> None:
    """FAPI 2.0 final: the issuer alone, as a string, is the assertion's audience."""
    client = await fapi(aiohttp_client, blind)
    response = await push(client, {**authentication(**claims), **authorization()})
    assert rule in await refused_at_par(response, blind, "invalid_client", 401)


async def test_fapi2_sp_final_par_ensure_jwt_client_assertion_with_iat_nbf_8_s_ahead_accepted(
    aiohttp_client: AiohttpClient, blind: Legacy
) -> None:
    client = await fapi(aiohttp_client, blind)
    ahead = int(time.time()) + 8
    await pushed_uri(client, {**authentication(iat=ahead, nbf=ahead), **authorization()})


async def test_fapi2_sp_final_ensure_signed_client_assertion_with_rs256_fails(
    aiohttp_client: AiohttpClient, blind: Legacy
) -> None:
    client = await fapi(aiohttp_client, blind)
    now = int(time.time())
    claims = {"iss": "bank", "sub": "bank", "aud": ISSUER, "exp": now + 60, "jti": "j-rs256"}
    form = {
        "client_id": "bank",
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": sign(claims, "RS256", key=RSA, typ=DROP),
        **authorization(),
    }
    assert "not allowed" in await refused_at_par(
        await push(client, form), blind, "invalid_client", 401
    )


# ------------------------------------------------------------------ Message Signing


@pytest.mark.parametrize(
    ("claims", "alg", "rule"),
    [
        ({"exp": DROP}, "ES256", "exp is required"),
        ({"nbf": DROP}, "ES256", "nbf is required"),
        ({"nbf": Ahead(-3900), "exp": Ahead(60)}, "ES256", "60 minutes"),
        ({"exp": Ahead(3900)}, "ES256", "60 minutes"),
        ({"aud": "https://www.other1.example.com/"}, "ES256", "aud"),
        ({}, "RS256", "not allowed"),
    ],
    ids=[
        "fapi2_sp_final_ensure_request_object_without_exp_fails",
        "fapi2_sp_final_ensure_request_object_without_nbf_fails",
        "fapi2_sp_final_ensure_request_object_with_nbf_over_60_fails",
        "fapi2_sp_final_ensure_request_object_with_exp_over_60_fails",
        "fapi2_sp_final_ensure_request_object_with_bad_aud_fails",
        "fapi2_sp_final_ensure_signed_request_object_with_rs256_fails",
    ],
)
async def test_fapi2_ms_request_object_refusals(
    aiohttp_client: AiohttpClient, blind: Legacy, claims: dict[str, Any], alg: str, rule: str
) -> None:
    # A longer JARGATE_MAX_REQUEST_OBJECT_LIFETIME_SECONDS does not lift Message Signing's.
    client = await fapi(aiohttp_client, blind, MS, max_request_object_lifetime_seconds=7200)
    form = {**authentication(), "request": request_object(alg, **claims)}
    assert rule in await refused_at_par(await push(client, form), blind, "invalid_request_object")


@pytest.mark.parametrize(
    "claims",
    [{"nbf": Ahead(8)}, {"aud": [ISSUER, "https://other.example"]}],
    ids=[
        "fapi2_sp_final_ensure_request_object_with_nbf_8_seconds_in_the_future_is_accepted",
        "fapi2_sp_final_ensure_server_accepts_request_object_with_multiple_aud",
    ],
)
async def test_fapi2_ms_request_objects_accepted(
    aiohttp_client: AiohttpClient, blind: Legacy, claims: dict[str, Any]
) -> None:
    client = await fapi(aiohttp_client, blind, MS)
    await pushed_uri(client, {**authentication(), "request": request_object(**claims)})


async def test_fapi2_sp_final_ensure_unsigned_request_at_par_endpoint_fails(
    aiohttp_client: AiohttpClient, blind: Legacy
) -> None:
    client = await fapi(aiohttp_client, blind, MS)
    response = await push(client, {**authentication(), **authorization()})
    assert "signed request object" in await refused_at_par(response, blind, "invalid_request")


async def test_a_plain_response_mode_is_refused_under_message_signing(
    aiohttp_client: AiohttpClient, blind: Legacy
) -> None:
    client = await fapi(aiohttp_client, blind, MS)
    form = {**authentication(), "request": request_object(response_mode="query")}
    assert "JARM" in await refused_at_par(await push(client, form), blind, "invalid_request")


# ------------------------------------------------------------------ token endpoint


async def code_through_par(client: TestClient[Any, Any]) -> str:
    uri = await pushed_uri(client, {**authentication(), **authorization()})
    return str((await authorize_pushed(client, uri))["code"])


async def test_fapi2_sp_final_par_ensure_pkce_code_verifier_required(
    aiohttp_client: AiohttpClient, blind: Legacy
) -> None:
    client = await fapi(aiohttp_client, blind)
    code = await code_through_par(client)
    response = await exchange(client, code, code_verifier="DROP")
    assert 400 == response.status
    assert "invalid_grant" == (await response.json())["error"]
    assert [] == token_requests(blind)


async def test_fapi2_sp_final_par_incorrect_pkce_code_verifier_rejected(
    aiohttp_client: AiohttpClient, blind: Legacy
) -> None:
    client = await fapi(aiohttp_client, blind)
    code = await code_through_par(client)
    response = await exchange(client, code, code_verifier="x" * 43)
    assert "invalid_grant" == (await response.json())["error"]
    assert [] == token_requests(blind)


async def test_fapi2_sp_final_ensure_authorization_code_is_bound_to_client(
    aiohttp_client: AiohttpClient, blind: Legacy
) -> None:
    """The code delivered to bank, redeemed by web (another client, its own assertion)."""
    client = await fapi(aiohttp_client, blind)
    code = await code_through_par(client)
    other = {
        "client_id": "web",
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion("web", EC),
    }
    response = await exchange(client, code, **other)
    assert "invalid_grant" == (await response.json())["error"]
    assert [] == token_requests(blind)


async def test_fapi2_sp_final_attempt_reuse_authorization_code_after_one_second(
    aiohttp_client: AiohttpClient, blind: Legacy
) -> None:
    client = await fapi(aiohttp_client, blind)
    code = await code_through_par(client)
    assert 200 == (await exchange(client, code)).status
    await asyncio.sleep(1)
    response = await exchange(client, code)
    assert "invalid_grant" == (await response.json())["error"]
    assert 1 == len(token_requests(blind))


async def test_fapi2_sp_final_attempt_to_use_expired_auth_code(
    aiohttp_client: AiohttpClient, blind: Legacy
) -> None:
    """Codes live at most 60 s under FAPI 2.0 (here 1 s, as the setting may shorten it)."""
    client = await fapi(aiohttp_client, blind, code_lifetime_seconds=1)
    code = await code_through_par(client)
    await asyncio.sleep(1.2)
    response = await exchange(client, code)
    assert "invalid_grant" == (await response.json())["error"]
    assert [] == token_requests(blind)


# ------------------------------------------------------------------ refused at start


@pytest.mark.parametrize(
    ("change", "settings", "problem"),
    [
        ({"jwks": "weak"}, {}, "1024 bits"),
        (
            {"token_endpoint_auth_method": "client_secret_basic", "client_secret": "s"},
            {},
            "private_key_jwt",
        ),
        ({"request_object_signing_alg": "RS256"}, {}, "RS256 is not allowed"),
        (
            {"authorization_signed_response_alg": None},
            {"profile": MS},
            "JARM responses would be signed with RS256",
        ),
        ({}, {"clock_skew_seconds": 90}, "at most 60"),
        ({}, {"par_ttl_seconds": 600}, "below 600"),
    ],
    ids=["weak-rsa-key", "secret-authentication", "rs256-pinned", "rs256-jarm", "skew", "par-ttl"],
)
def test_what_fapi2_forbids_is_refused_at_start(
    change: dict[str, Any], settings: dict[str, Any], problem: str
) -> None:
    if change.get("jwks") == "weak":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            change = {"jwks": public_jwks(RSAKey.generate_key(1024, private=True))}
    client = {k: v for k, v in {**BANK, **change}.items() if v is not None}
    full = make_settings(**{"profile": SP, **settings}, clients=json.dumps({"clients": [client]}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # joserfc's own warning about the weak key
        with pytest.raises(RegistryError, match=problem):
            load_registry(full)
