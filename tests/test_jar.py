"""JAR at the authorization endpoint: what is accepted, what is refused, and where refusals go.

Every refusal asserts three things: the error code, where it was delivered (the gateway's
own page or a redirect to a registered redirect URI), and that the upstream got nothing.
Every test runs against the memory store and a real Redis.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import redis
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient
from joserfc import jws
from joserfc.jwk import Key, RSAKey

from proxy.flows import HANDLE_PREFIX, flow_key
from proxy.keyring import Keyring
from proxy.observability import Metrics
from proxy.store import RedisStore
from tests.conftest import GatewayFactory, Jar, Legacy
from tests.jar import (
    DROP,
    ISSUER,
    KEY_FOR_ALG,
    REDIRECT,
    Claims,
    b64,
    client_registry,
    encrypt,
    forge,
    location_params,
    private_key,
    sign,
    sign_raw,
)
from tests.support import raw_url, redis_data_commands

ERROR_PARAMS = {"error", "error_description", "error_uri", "state", "iss"}


def enc_key(keyring: Keyring, alg: str) -> Key:
    """The gateway's public encryption key for ``alg``."""
    for key in keyring.keys:
        if key.use == "enc" and key.alg == alg:
            return RSAKey.import_key(key.public_jwk()) if alg.startswith("RSA") else _ec(key)
    raise LookupError(alg)


def _ec(key: Any) -> Key:
    from joserfc.jwk import ECKey

    return ECKey.import_key(key.public_jwk())


async def authorize(client: TestClient[Any, Any], **params: str) -> ClientResponse:
    return await client.get("/authorize", params=params, allow_redirects=False)


async def assert_refused(
    response: ClientResponse, legacy: Legacy, error: str, where: str = "page"
) -> dict[str, list[str]]:
    """The error code, where it went, and that the upstream got nothing."""
    assert legacy.recorder.requests == [], "the upstream must receive nothing"
    if where == "page":
        assert response.status == 400
        body = await response.json()
        assert error == body["error"], body
        return {"error_description": [body["error_description"]]}
    assert response.status == 302
    base, params = location_params(response)
    assert where == base
    assert [error] == params["error"], params
    assert set(params) <= ERROR_PARAMS
    assert params["iss"] == [ISSUER]
    return params


def assert_accepted(response: ClientResponse, legacy: Legacy, claims: dict[str, Any]) -> None:
    """The upstream received exactly the verified parameters; the client got its answer."""
    assert response.status == 302, response.headers
    (received,) = [r for r in legacy.recorder.requests if r.raw_path.startswith("/authorize")]
    assert received.method == "GET"
    upstream = {k: v[0] for k, v in parse_qs(urlsplit(received.raw_path).query).items()}
    assert upstream["state"].startswith(HANDLE_PREFIX)
    for name in ("client_id", "response_type", "scope", "nonce", "redirect_uri"):
        if name in claims:
            assert str(claims[name]) == upstream[name], name
    assert not {"request", "request_uri", "iss", "aud", "exp", "jti", "response_mode"} & set(
        upstream
    )
    base, params = location_params(response)
    assert claims.get("redirect_uri", REDIRECT).split("?")[0] == base
    assert params["iss"] == [ISSUER]
    assert "code" in params
    if "state" in claims:
        assert [claims["state"]] == params["state"]
    else:
        assert "state" not in params


# ---------------------------------------------------------------- accepted


@pytest.mark.parametrize("alg", list(KEY_FOR_ALG))
async def test_each_alg_by_value_is_accepted(jar: Jar, legacy: Legacy, alg: str) -> None:
    """Every allowed signature alg verifies against the client's registered key."""
    client = await jar()
    claims = Claims().build()
    response = await authorize(client, client_id="app", request=sign(claims, alg))
    assert_accepted(response, legacy, claims)


async def test_flow_answered_at_once_costs_one_redis_write(
    gateway: GatewayFactory, legacy: Legacy, clean_redis: str
) -> None:
    """A request object the upstream answers at once costs one Redis round trip: the jti
    claim, with the store's memory marker checked in it (SET NX and GET of the marker; the
    flow completes from memory, never stored, never taken; its code goes to the client
    sealed, no record written). A flow that must wait for a login is stored, once, with the
    same handle the upstream got."""
    counter = redis.Redis.from_url(clean_redis)
    store = RedisStore.from_url(clean_redis)
    client = await gateway(registry=client_registry(), store=store)

    counter.config_resetstat()
    claims = Claims().build()
    assert_accepted(await authorize(client, client_id="app", request=sign(claims)), legacy, claims)
    assert {"set": 2, "get": 1} == redis_data_commands(counter)
    keys = [key.decode() if isinstance(key, bytes) else key for key in counter.keys("jargate:*")]
    written = sorted(key.split(":")[1] for key in keys if key != "jargate:since")
    assert ["jti"] == written  # the memory marker was written at start

    response = await authorize(
        client, client_id="app", request=sign(Claims().build(prompt="login"))
    )
    assert response.headers["Location"].startswith("/login")
    handle = parse_qs(urlsplit(legacy.recorder.requests[-1].raw_path).query)["state"][0]
    assert await store.peek(flow_key(handle)) is not None
    await store.close()
    counter.close()


@pytest.mark.parametrize(
    "typ",
    [
        DROP,
        "JWT",
        "jwt",
        "oauth-authz-req+jwt",
        "OautH-auThZ-REQ+jWt",
        "application/oauth-authz-req+jwt",
    ],
)
async def test_accepted_typ_values(jar: Jar, legacy: Legacy, typ: Any) -> None:
    """typ may be absent, jwt, or the JAR type in any case, with or without application/."""
    client = await jar()
    claims = Claims().build()
    response = await authorize(client, client_id="app", request=sign(claims, "ES256", typ=typ))
    assert_accepted(response, legacy, claims)


@pytest.mark.parametrize(
    "overrides",
    [
        {"aud": [ISSUER, "https://bogus.example"]},
        {"nbf": lambda: int(time.time()) + 8},
        {"iat": lambda: int(time.time()) + 8},
        {"jti": DROP},
        {"state": "s" * 1000},
        {"state": DROP},
        {"nonce": "n" * 384},
        {"max_age": 600, "claims": {"id_token": {"acr": {"essential": True}}}},
    ],
    ids=[
        "aud-array",
        "nbf-8s-ahead",
        "iat-8s-ahead",
        "no-jti",
        "long-state",
        "no-state",
        "long-nonce",
        "json-params",
    ],
)
async def test_accepted_claim_variants(jar: Jar, legacy: Legacy, overrides: dict[str, Any]) -> None:
    """Arrays containing the issuer, small clock skew, long state and nonce all work.
    Times are taken when the test runs (a callable), not when it is collected."""
    client = await jar()
    overrides = {name: value() if callable(value) else value for name, value in overrides.items()}
    claims = Claims().build(**overrides)
    response = await authorize(client, client_id="app", request=sign(claims, "ES256"))
    assert_accepted(response, legacy, claims)
    upstream = parse_qs(urlsplit(legacy.recorder.requests[0].raw_path).query)
    if "max_age" in overrides:
        assert upstream["max_age"] == ["600"]
        assert [json.dumps(overrides["claims"], separators=(",", ":"))] == upstream["claims"]


async def test_outer_parameters_are_tolerated_but_not_used(jar: Jar, legacy: Legacy) -> None:
    """OIDC clients repeat response_type and scope outside; only the object's values count."""
    client = await jar()
    claims = Claims().build(scope="openid inner")
    response = await authorize(
        client,
        client_id="app",
        response_type="code",
        scope="openid admin",
        redirect_uri="https://rp.example/other-outer",
        request=sign(claims, "PS256"),
    )
    assert_accepted(response, legacy, claims)
    upstream = parse_qs(urlsplit(legacy.recorder.requests[0].raw_path).query)
    assert upstream["scope"] == ["openid inner"]


async def test_registered_redirect_with_query_is_kept_exactly(jar: Jar, legacy: Legacy) -> None:
    """A redirect URI's own query survives; the response parameters are added to it."""
    client = await jar()
    claims = Claims().build(redirect_uri="https://rp.example/cb2?keep=1")
    response = await authorize(client, client_id="app", request=sign(claims, "ES256"))
    assert response.headers["Location"].startswith("https://rp.example/cb2?keep=1&code=")


async def test_single_registered_redirect_uri_may_be_omitted(jar: Jar, legacy: Legacy) -> None:
    """A client with exactly one registered redirect URI need not name it."""
    client = await jar()
    claims = Claims("strict").build(redirect_uri=DROP)
    token = sign(claims, "PS256", key=private_key("rsa", "strict"))
    response = await authorize(client, client_id="strict", request=token)
    assert_accepted(response, legacy, claims)


async def test_post_form_is_accepted_and_forwarded_as_get(jar: Jar, legacy: Legacy) -> None:
    """A POSTed authorization request reaches the upstream as a plain GET query."""
    client = await jar()
    claims = Claims().build()
    response = await client.post(
        "/authorize",
        data={"client_id": "app", "request": sign(claims, "ES256")},
        allow_redirects=False,
    )
    assert_accepted(response, legacy, claims)


@pytest.mark.parametrize(
    ("alg", "enc"),
    [
        ("RSA-OAEP-256", "A256GCM"),
        ("RSA-OAEP", "A128GCM"),
        ("ECDH-ES", "A128CBC-HS256"),
        ("ECDH-ES+A128KW", "A128GCM"),
        ("ECDH-ES+A256KW", "A256GCM"),
    ],
)
async def test_encrypted_objects_are_accepted(
    jar: Jar, legacy: Legacy, jar_keyring: Keyring, alg: str, enc: str
) -> None:
    """A signed object encrypted to the gateway's published enc key is decrypted and verified."""
    client = await jar()
    claims = Claims().build()
    token = encrypt(sign(claims, "ES256"), enc_key(jar_keyring, alg), alg, enc)
    assert len(token.split(".")) == 5
    response = await authorize(client, client_id="app", request=token)
    assert_accepted(response, legacy, claims)


async def test_client_that_registered_encryption_uses_it(
    jar: Jar, legacy: Legacy, jar_keyring: Keyring
) -> None:
    """A client registered for RSA-OAEP-256/A256GCM is accepted when it uses exactly that."""
    client = await jar()
    claims = Claims("enc").build()
    inner = sign(claims, "ES256", key=private_key("p256", "enc"))
    token = encrypt(inner, enc_key(jar_keyring, "RSA-OAEP-256"), "RSA-OAEP-256", "A256GCM")
    response = await authorize(client, client_id="enc", request=token)
    assert_accepted(response, legacy, claims)


async def test_plain_request_from_registered_client_passes(jar: Jar, legacy: Legacy) -> None:
    """A client without require_signed_request_object keeps working with plain requests."""
    client = await jar()
    params = {
        "client_id": "plain",
        "response_type": "code",
        "redirect_uri": REDIRECT,
        "state": "xyz",
    }
    response = await authorize(client, **params)
    assert_accepted(response, legacy, params)


async def test_unknown_client_plain_request_passes_untouched(jar: Jar, legacy: Legacy) -> None:
    """A client the gateway does not know is passed through byte for byte."""
    client = await jar()
    target = (
        "/authorize?client_id=stranger&response_type=code"
        "&redirect_uri=https%3A%2F%2Fx.example%2Fcb&state=s1"
    )
    response = await client.session.get(raw_url(client, target), allow_redirects=False)
    assert response.status == 302
    assert [target] == legacy.recorder.paths()
    assert ["s1"] == location_params(response)[1]["state"]


async def test_login_bounce_reenters_with_the_handle(jar: Jar, legacy: Legacy) -> None:
    """A server that saves the request, shows its login page and replays the request works;
    the browser never carries the verified parameters in the clear on the way in."""
    client = await jar()
    claims = Claims().build(prompt="login")
    response = await authorize(client, client_id="app", request=sign(claims, "ES256"))
    hops = 0
    while response.headers["Location"].startswith("/"):
        hops += 1
        response = await client.get(response.headers["Location"], allow_redirects=False)
    assert hops == 2  # the login page, then the replayed authorization request
    assert [p.split("?")[0] for p in legacy.recorder.paths()] == [
        "/authorize",
        "/login",
        "/authorize",
    ]
    base, params = location_params(response)
    assert (REDIRECT, [claims["state"]]) == (base, params["state"])


async def test_reentry_that_differs_from_the_flow_is_refused(jar: Jar, legacy: Legacy) -> None:
    """Changing a parameter on the way back from the login page is refused."""
    client = await jar()
    claims = Claims().build(prompt="login")
    response = await authorize(client, client_id="app", request=sign(claims, "ES256"))
    login = await client.get(response.headers["Location"], allow_redirects=False)
    replay = login.headers["Location"].replace("scope=openid+profile", "scope=openid+admin")
    assert replay != login.headers["Location"]
    legacy.recorder.requests.clear()
    refused = await client.get(replay, allow_redirects=False)
    await assert_refused(refused, legacy, "invalid_request")


async def test_reentry_with_unknown_handle_is_refused(jar: Jar, legacy: Legacy) -> None:
    """A made-up handle at the authorization endpoint never reaches the upstream."""
    client = await jar()
    response = await authorize(
        client, client_id="app", response_type="code", state=HANDLE_PREFIX + "made-up"
    )
    await assert_refused(response, legacy, "invalid_request")


async def test_upstream_errors_come_back_with_the_clients_state(jar: Jar, legacy: Legacy) -> None:
    """An upstream error redirect is answered with the client's own state restored."""
    client = await jar()
    claims = Claims().build(scope="deny")
    response = await authorize(client, client_id="app", request=sign(claims, "ES256"))
    _base, params = location_params(response)
    assert (["access_denied"], [claims["state"]]) == (params["error"], params["state"])


async def test_replayed_object_is_refused(jar: Jar, legacy: Legacy) -> None:
    """The same object twice: the second is a replay, refused to the verified redirect URI."""
    client = await jar()
    token = sign(Claims().build(), "ES256")
    assert (await authorize(client, client_id="app", request=token)).status == 302
    legacy.recorder.requests.clear()
    response = await authorize(client, client_id="app", request=token)
    params = await assert_refused(response, legacy, "invalid_request_object", REDIRECT)
    assert "replay" in params["error_description"][0]


async def test_replay_without_jti_uses_the_objects_digest(jar: Jar, legacy: Legacy) -> None:
    """Without a jti the object itself is remembered."""
    client = await jar()
    token = sign(Claims().build(jti=DROP), "ES256")
    assert (await authorize(client, client_id="app", request=token)).status == 302
    legacy.recorder.requests.clear()
    await assert_refused(
        await authorize(client, client_id="app", request=token),
        legacy,
        "invalid_request_object",
        REDIRECT,
    )


async def test_concurrent_replay_has_one_winner(jar: Jar, legacy: Legacy) -> None:
    """Two requests racing with one object: exactly one is forwarded."""
    client = await jar()
    token = sign(Claims().build(), "ES256")
    responses = await asyncio.gather(
        *(authorize(client, client_id="app", request=token) for _ in range(2))
    )
    statuses = sorted("error=" in r.headers["Location"] for r in responses)
    assert statuses == [False, True]
    assert len(legacy.recorder.requests) == 1


async def test_report_mode_lets_policy_refusals_through(jar: Jar, legacy: Legacy) -> None:
    """In report mode a plain request from a client that must sign is counted and passed on."""
    metrics = Metrics()
    client = await jar(enforcement="report", metrics=metrics)
    params = {
        "client_id": "strict",
        "response_type": "code",
        "redirect_uri": REDIRECT,
        "state": "r",
    }
    response = await authorize(client, **params)
    assert_accepted(response, legacy, params)
    text = metrics.render().decode()
    assert (
        'jargate_authorization_decisions_total{error="invalid_request",outcome="reported",'
        'reason="policy.signed_request_object",source="plain"} 1.0'
    ) in text


async def test_report_mode_still_refuses_forged_objects(jar: Jar, legacy: Legacy) -> None:
    """Report mode is about policy only: a bad signature is refused all the same."""
    client = await jar(enforcement="report")
    token = sign(Claims().build(), "ES256", key=private_key("p256", "other"))
    response = await authorize(client, client_id="app", request=token)
    await assert_refused(response, legacy, "invalid_request_object")


async def test_decisions_are_counted(jar: Jar, legacy: Legacy) -> None:
    """Each decision is counted by outcome, error, the rule that refused and how the object
    came."""
    metrics = Metrics()
    client = await jar(metrics=metrics)
    await authorize(client, client_id="app", request=sign(Claims().build(), "ES256"))
    await authorize(client, client_id="app", request="a.b")
    text = metrics.render().decode()
    assert (
        'jargate_authorization_decisions_total{error="none",outcome="accepted",reason="none",'
        'source="value"} 1.0'
    ) in text
    assert (
        '{error="invalid_request_object",outcome="refused",reason="request_object.compact",'
        'source="value"} 1.0'
    ) in text


# ---------------------------------------------------------------- refused

RSA = private_key("rsa")
ATTACKER = private_key("p256", "attacker")


def _hs256_with_public_key() -> str:
    """RFC 8725 §2.1: HS256 keyed with the client's RSA public key as the 'secret'."""
    import hashlib
    import hmac

    header = {"alg": "HS256", "kid": RSA.kid, "typ": "oauth-authz-req+jwt"}
    signing_input = f"{b64(json.dumps(header))}.{b64(json.dumps(Claims().build()))}"
    secret = RSA.as_pem(private=False)  # type: ignore[union-attr]
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def _tampered_payload() -> str:
    header, _, signature = sign(Claims().build(), "ES256").split(".")
    return f"{header}.{b64(json.dumps(Claims().build(scope='openid admin')))}.{signature}"


def _tampered_signature() -> str:
    header, payload, signature = sign(Claims().build(), "PS256").split(".")
    flipped = "A" if signature[10] != "A" else "B"
    return f"{header}.{payload}.{signature[:10]}{flipped}{signature[11:]}"


def _jwk_header_attack() -> str:
    return sign(
        Claims().build(), "ES256", key=ATTACKER, kid=DROP, jwk=ATTACKER.as_dict(private=False)
    )


OBJECT_CASES: dict[str, tuple[Callable[[], str], str]] = {
    # RFC 8725 attacks and keys
    "alg-none": (lambda: forge({"alg": "none"}, Claims().build()), "alg none"),
    "hs256-with-public-key": (_hs256_with_public_key, "not allowed"),
    "key-from-jwk-header": (_jwk_header_attack, "does not verify"),
    "key-from-jku-header": (
        lambda: sign(
            Claims().build(), "ES256", key=ATTACKER, kid=DROP, jku="http://127.0.0.1:9/jwks"
        ),
        "does not verify",
    ),
    "key-from-x5u-header": (
        lambda: sign(Claims().build(), "ES256", key=ATTACKER, x5u="http://127.0.0.1:9/cert"),
        "no key with kid",
    ),
    "kid-of-another-client": (
        lambda: sign(Claims().build(), "ES256", key=private_key("p256", "other")),
        "no key with kid",
    ),
    "other-key-with-own-kid": (
        lambda: sign(Claims().build(), "ES256", key=private_key("p256", "other"), kid="p256"),
        "does not verify",
    ),
    "tampered-payload": (_tampered_payload, "does not verify"),
    "tampered-signature": (_tampered_signature, "does not verify"),
    "alg-does-not-fit-key": (
        lambda: sign(Claims().build(), "ES256", kid="rsa"),
        "does not fit alg ES256",
    ),
    "unknown-alg": (
        lambda: forge({"alg": "ES256K", "kid": "p256"}, Claims().build()),
        "not allowed",
    ),
    "unknown-crit": (
        lambda: sign_raw(
            {"alg": "ES256", "kid": "p256", "crit": ["exp-policy"], "exp-policy": 1},
            Claims().build(),
            private_key("p256"),  # type: ignore[arg-type]
        ),
        "not understood",
    ),
    # typ (cross-JWT confusion)
    "typ-access-token": (lambda: sign(Claims().build(), "ES256", typ="at+jwt"), "typ"),
    "typ-logout-token": (lambda: sign(Claims().build(), "ES256", typ="logout+jwt"), "typ"),
    # claims
    "exp-missing": (lambda: sign(Claims().build(exp=DROP), "ES256"), "exp is required"),
    "exp-past": (lambda: sign(Claims().build(exp=int(time.time()) - 3600), "ES256"), "expired"),
    "exp-70min-ahead": (
        lambda: sign(Claims().build(exp=int(time.time()) + 4200, nbf=DROP, iat=DROP), "ES256"),
        "after now",
    ),
    "exp-minus-nbf-too-long": (
        lambda: sign(Claims().build(nbf=int(time.time()) - 4200, iat=DROP), "ES256"),
        "after nbf",
    ),
    "exp-minus-iat-too-long": (
        lambda: sign(Claims().build(iat=int(time.time()) - 4200, nbf=DROP), "ES256"),
        "after iat",
    ),
    "nbf-70s-ahead": (lambda: sign(Claims().build(nbf=int(time.time()) + 70), "ES256"), "nbf"),
    "iat-70s-ahead": (lambda: sign(Claims().build(iat=int(time.time()) + 70), "ES256"), "iat"),
    "aud-other": (
        lambda: sign(Claims().build(aud="https://www.other1.example.com/"), "ES256"),
        "aud",
    ),
    "aud-missing": (lambda: sign(Claims().build(aud=DROP), "ES256"), "aud is required"),
    "aud-par-endpoint": (lambda: sign(Claims().build(aud=ISSUER + "/par"), "ES256"), "aud"),
    "aud-authorization-endpoint": (
        lambda: sign(Claims().build(aud=ISSUER + "/authorize"), "ES256"),
        "aud",
    ),
    "aud-array-without-issuer": (
        lambda: sign(Claims().build(aud=["https://x.example"]), "ES256"),
        "aud",
    ),
    "aud-array-non-string": (
        lambda: sign(Claims().build(aud=[ISSUER, 7]), "ES256"),
        "array of strings",
    ),
    "iss-missing": (lambda: sign(Claims().build(iss=DROP), "ES256"), "iss"),
    "iss-other-client": (lambda: sign(Claims().build(iss="other"), "ES256"), "iss"),
    "exp-string": (
        lambda: sign(Claims().build(exp=str(int(time.time()) + 60)), "ES256"),
        "must be a number",
    ),
    "nbf-boolean": (lambda: sign(Claims().build(nbf=True), "ES256"), "must be a number"),
    "iss-number": (lambda: sign(Claims().build(iss=12), "ES256"), "must be a string"),
    "jti-number": (lambda: sign(Claims().build(jti=12), "ES256"), "must be a string"),
    "jti-too-long": (lambda: sign(Claims().build(jti="j" * 65), "ES256"), "64 bytes"),
    "client-id-differs": (lambda: sign(Claims().build(client_id="other"), "ES256"), "client_id"),
    "request-claim-inside": (
        lambda: sign(Claims().build(request="x.y.z"), "ES256"),
        "must not contain",
    ),
    "request-uri-claim-inside": (
        lambda: sign(Claims().build(request_uri="https://rp.example/requests/1"), "ES256"),
        "must not contain",
    ),
    "scope-array": (lambda: sign(Claims().build(scope=["openid"]), "ES256"), "must be a string"),
    "redirect-uri-unregistered": (
        lambda: sign(Claims().build(redirect_uri="https://evil.example/cb"), "ES256"),
        "not registered",
    ),
    "redirect-uri-missing-two-registered": (
        lambda: sign(Claims().build(redirect_uri=DROP), "ES256"),
        "redirect_uri is required",
    ),
    "response-mode-unknown": (
        lambda: sign(Claims().build(response_mode="query.jwt.evil"), "ES256"),
        "response_mode",
    ),
    # malformed
    "two-segments": (lambda: "eyJhbGciOiJFUzI1NiJ9.eyJhIjoxfQ", "not a compact"),
    "four-segments": (lambda: "a.b.c.d", "not a compact"),
    "bad-base64": (lambda: "e!!.e!!.e!!", "base64url"),
    "header-not-json": (lambda: f"{b64('not json')}.{b64('{}')}.{b64('x')}", "header is not JSON"),
    "header-array": (lambda: f"{b64('[1]')}.{b64('{}')}.{b64('x')}", "not a JSON object"),
    "payload-array": (
        lambda: jws.serialize_compact(
            {"alg": "ES256", "kid": "p256"}, "[1, 2]", private_key("p256"), algorithms=["ES256"]
        ),
        "payload is not a JSON object",
    ),
}


@pytest.mark.parametrize("case", list(OBJECT_CASES))
async def test_bad_request_objects_are_refused(jar: Jar, legacy: Legacy, case: str) -> None:
    """Each forged, stale or malformed object is invalid_request_object and never forwarded."""
    client = await jar()
    build, reason = OBJECT_CASES[case]
    response = await authorize(client, client_id="app", request=build())
    params = await assert_refused(response, legacy, "invalid_request_object")
    assert reason in params["error_description"][0]


async def test_refusal_goes_to_registered_outer_redirect_uri(jar: Jar, legacy: Legacy) -> None:
    """A failed object is answered by redirect when the request names a registered redirect URI,
    carrying only error, error_description, state and iss."""
    client = await jar()
    response = await authorize(
        client, client_id="app", redirect_uri=REDIRECT, state="outer", request=_tampered_payload()
    )
    params = await assert_refused(response, legacy, "invalid_request_object", REDIRECT)
    assert params["state"] == ["outer"]


async def test_refusal_never_redirects_to_unregistered_uri(jar: Jar, legacy: Legacy) -> None:
    """An unregistered redirect URI outside never receives a redirect."""
    client = await jar()
    response = await authorize(
        client, client_id="app", redirect_uri="https://evil.example/cb", request=_tampered_payload()
    )
    await assert_refused(response, legacy, "invalid_request_object")


async def test_verified_object_missing_response_type_redirects(jar: Jar, legacy: Legacy) -> None:
    """After verification the object's redirect URI is trusted: the error goes there."""
    client = await jar()
    claims = Claims().build(response_type=DROP)
    response = await authorize(client, client_id="app", request=sign(claims, "ES256"))
    params = await assert_refused(response, legacy, "invalid_request_object", REDIRECT)
    assert [claims["state"]] == params["state"]


async def test_response_type_inside_and_outside_must_match(jar: Jar, legacy: Legacy) -> None:
    """response_type outside differing from the object's is refused."""
    client = await jar()
    token = sign(Claims().build(), "ES256")
    response = await authorize(client, client_id="app", response_type="token", request=token)
    await assert_refused(response, legacy, "invalid_request_object")


async def test_pinned_alg_is_enforced(jar: Jar, legacy: Legacy) -> None:
    """A client that registered PS256 may not sign with RS256, even with its own key."""
    client = await jar()
    token = sign(Claims("strict").build(), "RS256", key=private_key("rsa", "strict"))
    response = await authorize(client, client_id="strict", request=token)
    params = await assert_refused(response, legacy, "invalid_request_object")
    assert "PS256" in params["error_description"][0]


async def test_client_that_must_sign_cannot_send_plain(jar: Jar, legacy: Legacy) -> None:
    """require_signed_request_object: a plain request is invalid_request, sent to the client."""
    client = await jar()
    response = await authorize(
        client, client_id="strict", response_type="code", redirect_uri=REDIRECT, state="p"
    )
    params = await assert_refused(response, legacy, "invalid_request", REDIRECT)
    assert params["state"] == ["p"]


def _encryption_cases(keyring: Keyring) -> dict[str, tuple[str, str, str]]:
    rsa = enc_key(keyring, "RSA-OAEP-256")
    inner = sign(Claims("enc").build(), "ES256", key=private_key("p256", "enc"))
    unsigned = forge({"alg": "none"}, Claims("enc").build())
    wrong_key = RSAKey.generate_key(2048, parameters={"kid": rsa.kid})  # type: ignore[arg-type]
    good = encrypt(inner, rsa, "RSA-OAEP-256", "A256GCM")
    head, key, iv, ciphertext, _tag = good.split(".")
    return {
        "plain-object-when-encryption-required": ("enc", inner, "must encrypt"),
        "other-enc-than-registered": (
            "enc",
            encrypt(inner, rsa, "RSA-OAEP-256", "A128GCM"),
            "registered",
        ),
        "rsa1_5": ("enc", forge({"alg": "RSA1_5", "enc": "A128GCM"}, {}) + ".x.y", "not supported"),
        "pbes2": (
            "enc",
            forge({"alg": "PBES2-HS256+A128KW", "enc": "A128GCM"}, {}) + ".x.y",
            "not supported",
        ),
        "dir": ("enc", forge({"alg": "dir", "enc": "A128GCM"}, {}) + ".x.y", "not supported"),
        "zip": ("enc", encrypt(inner, rsa, "RSA-OAEP-256", "A256GCM", zip="DEF"), "zip"),
        "wrong-key": (
            "enc",
            encrypt(inner, wrong_key, "RSA-OAEP-256", "A256GCM"),
            "could not be decrypted",
        ),
        "tampered-tag": (
            "enc",
            f"{head}.{key}.{iv}.{ciphertext}.{b64(b'0' * 16)}",
            "could not be decrypted",
        ),
        "unsigned-inside": ("enc", encrypt(unsigned, rsa, "RSA-OAEP-256", "A256GCM"), "alg none"),
        "json-inside": ("enc", encrypt('{"a": 1}', rsa, "RSA-OAEP-256", "A256GCM"), "signed JWT"),
        "unknown-enc": (
            "app",
            forge({"alg": "RSA-OAEP-256", "enc": "A192GCM"}, {}) + ".x.y",
            "not supported",
        ),
    }


ENCRYPTION_CASE_NAMES = [
    "plain-object-when-encryption-required",
    "other-enc-than-registered",
    "rsa1_5",
    "pbes2",
    "dir",
    "zip",
    "wrong-key",
    "tampered-tag",
    "unsigned-inside",
    "json-inside",
    "unknown-enc",
]


@pytest.mark.parametrize("case", ENCRYPTION_CASE_NAMES)
async def test_bad_encrypted_objects_are_refused(
    jar: Jar, legacy: Legacy, jar_keyring: Keyring, case: str
) -> None:
    """Encryption rules: registered alg/enc only, no RSA1_5/PBES2/dir/zip, a signed JWT inside."""
    client = await jar()
    client_id, token, reason = _encryption_cases(jar_keyring)[case]
    response = await authorize(client, client_id=client_id, request=token)
    params = await assert_refused(response, legacy, "invalid_request_object")
    assert reason in params["error_description"][0]


@pytest.mark.parametrize(
    ("params", "error"),
    [
        (
            {
                "client_id": "app",
                "request": "a.b.c",
                "request_uri": "https://rp.example/requests/1",
            },
            "invalid_request",
        ),
        ({"client_id": "stranger", "request": "a.b.c"}, "unauthorized_client"),
        ({"client_id": "stranger", "request_uri": "https://x.example/r"}, "unauthorized_client"),
        (
            {"client_id": "stranger", "response_type": "code", "response_mode": "query.jwt"},
            "unauthorized_client",
        ),
        ({"request": "a.b.c"}, "invalid_request"),
    ],
    ids=[
        "request-and-request-uri",
        "unknown-client-request",
        "unknown-client-request-uri",
        "unknown-client-jarm",
        "no-client-id",
    ],
)
async def test_parameter_level_refusals(
    jar: Jar, legacy: Legacy, params: dict[str, str], error: str
) -> None:
    """Parameter rules answered on the gateway's page."""
    client = await jar()
    await assert_refused(await authorize(client, **params), legacy, error)


async def test_repeated_parameter_is_refused(jar: Jar, legacy: Legacy) -> None:
    """A parameter sent twice is invalid_request (RFC 6749 §3.1)."""
    client = await jar()
    response = await client.get(
        "/authorize?client_id=plain&response_type=code&scope=a&scope=b", allow_redirects=False
    )
    params = await assert_refused(response, legacy, "invalid_request")
    assert "'scope' is repeated" in params["error_description"][0]


async def test_oversized_object_is_refused(jar: Jar, legacy: Legacy) -> None:
    """An 80 KB request object is refused before it is parsed; a 200 KB body is 413."""
    client = await jar()
    big = sign(Claims().build(padding="x" * 60_000), "ES256")
    response = await client.post("/authorize", data={"client_id": "app", "request": big})
    params = await assert_refused(response, legacy, "invalid_request_object")
    assert "larger than 65536 bytes" in params["error_description"][0]
    huge = sign(Claims().build(padding="x" * 200_000), "ES256")
    response = await client.post("/authorize", data={"client_id": "app", "request": huge})
    assert (413, "invalid_request") == (response.status, (await response.json())["error"])


async def test_plain_request_with_unregistered_redirect_gets_page(jar: Jar, legacy: Legacy) -> None:
    """An unregistered redirect URI in a plain request is answered on the gateway's page."""
    client = await jar()
    response = await authorize(
        client, client_id="plain", response_type="code", redirect_uri="https://evil.example/cb"
    )
    await assert_refused(response, legacy, "invalid_request")


async def test_store_down_fails_closed(
    gateway: GatewayFactory, legacy: Legacy, jar_keyring: Keyring
) -> None:
    """With the store unreachable no object is accepted (its replay claim cannot be made)."""
    from proxy.store import RedisStore
    from tests.support import free_port

    store = RedisStore.from_url(f"redis://127.0.0.1:{free_port()}/0")
    client = await gateway(registry=client_registry(), store=store)
    response = await authorize(client, client_id="app", request=sign(Claims().build(), "ES256"))
    assert response.status == 503
    assert (await response.json())["error"] == "temporarily_unavailable"
    assert legacy.recorder.requests == []
