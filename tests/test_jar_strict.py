"""Request objects read strictly: one JWT has one text and one identity, numbers are real
NumericDates, strings are Unicode, and every mandatory parameter is inside.

Every refusal asserts its error, that the gateway answered on its own page, and that the
upstream received nothing; where a refusal must come before anything is used up, the same
``jti`` is accepted afterwards.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

from tests.conftest import Jar, Legacy
from tests.jar import DROP, Claims, b64, private_key, sign, sign_raw

#: The order of P-256 (the group ECDSA's s lives in).
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


async def authorize(client: TestClient[Any, Any], **params: str) -> ClientResponse:
    return await client.get("/authorize", params=params, allow_redirects=False)


async def assert_page(response: ClientResponse, legacy: Legacy, error: str) -> str:
    """Refused on the gateway's page, the upstream untouched; returns the description."""
    assert legacy.recorder.requests == [], "the upstream must receive nothing"
    assert "Location" not in response.headers
    body = await response.json()
    assert (400, error) == (response.status, body["error"])
    return str(body["error_description"])


def es256(claims: dict[str, Any], payload: str | None = None) -> str:
    """An ES256 object over ``claims`` (or a raw payload text), signed by hand."""
    header = {"alg": "ES256", "kid": "p256", "typ": "oauth-authz-req+jwt"}
    return sign_raw(header, claims, private_key("p256"), payload)  # type: ignore[arg-type]


def high_s(token: str) -> str:
    """The same ES256 object with the other valid signature, s replaced by n - s."""
    import base64

    head, payload, signature = token.split(".")
    raw = base64.urlsafe_b64decode(signature + "==")
    r, s = raw[:32], int.from_bytes(raw[32:], "big")
    return f"{head}.{payload}.{b64(r + (P256_ORDER - s).to_bytes(32, 'big'))}"


def spare_bits(segment: str) -> str:
    """The same bytes in another base64url spelling: the last character's unused bits set."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    unused = {2: 4, 3: 2}[len(segment) % 4]
    last = alphabet.index(segment[-1])
    return segment[:-1] + alphabet[last | ((1 << unused) - 1)]


async def test_jti_less_object_in_another_signature_is_a_replay(jar: Jar, legacy: Legacy) -> None:
    """Without a jti the object's identity is its payload: the same object with ECDSA's other
    signature (n - s) is refused as a replay."""
    client = await jar()
    token = es256(Claims().build(jti=DROP))
    assert 302 == (await authorize(client, client_id="app", request=token)).status
    legacy.recorder.requests.clear()
    response = await authorize(client, client_id="app", request=high_s(token))
    assert 302 == response.status
    assert "invalid_request_object" in response.headers["Location"]
    assert "replay" in response.headers["Location"]
    assert legacy.recorder.requests == []


@pytest.mark.parametrize("part", [0, 2], ids=["header", "signature"])
async def test_non_canonical_base64url_is_refused(jar: Jar, legacy: Legacy, part: int) -> None:
    """A segment whose unused bits are not zero (the same bytes, another text) is refused:
    the signature segment is not signed, so anyone could respell it. (The payload is
    signed: respelling it breaks the signature.)"""
    client = await jar()
    segments = es256(Claims().build(jti=DROP)).split(".")
    assert len(segments[part]) % 4 in (2, 3)
    segments[part] = spare_bits(segments[part])
    response = await authorize(client, client_id="app", request=".".join(segments))
    assert "base64url" in await assert_page(response, legacy, "invalid_request_object")


@pytest.mark.parametrize(
    ("exp", "expected"),
    [
        ("NaN", "not JSON"),
        ("Infinity", "not JSON"),
        ("-Infinity", "not JSON"),
        ("1e400", "not JSON"),
        ("1" + "0" * 400, "out of range"),
        ("-5", "out of range"),
        ("9007199254740993", "out of range"),
    ],
)
async def test_exp_must_be_a_finite_numeric_date(
    jar: Jar, legacy: Legacy, exp: str, expected: str
) -> None:
    """NaN, infinities and numbers no float holds are refused wherever a NumericDate is read
    (with NaN every comparison is false, and the replay record would live a second)."""
    client = await jar()
    claims = Claims().build(exp=0)
    payload = json.dumps(claims).replace('"exp": 0', f'"exp": {exp}')
    response = await authorize(client, client_id="app", request=es256(claims, payload))
    assert expected in await assert_page(response, legacy, "invalid_request_object")


async def test_object_without_client_id_is_refused(jar: Jar, legacy: Legacy) -> None:
    """The object carries every mandatory parameter, client_id included."""
    client = await jar()
    response = await authorize(
        client, client_id="app", request=sign(Claims().build(client_id=DROP), "ES256")
    )
    assert "client_id is required" in await assert_page(response, legacy, "invalid_request_object")


@pytest.mark.parametrize("claim", ["state", "nonce", "login_hint", "jti"])
async def test_lone_surrogate_is_refused_before_the_jti_is_used(
    jar: Jar, legacy: Legacy, claim: str
) -> None:
    """A string that is not Unicode (a lone surrogate) is a clean 400, and nothing was used
    up: the same jti in a clean object is accepted afterwards."""
    client = await jar()
    jti = "j-" + str(time.time_ns())
    claims = {**Claims().build(jti=jti), claim: "\ud800"}
    response = await authorize(client, client_id="app", request=sign(claims, "ES256"))
    await assert_page(response, legacy, "invalid_request_object")
    clean = sign(Claims().build(jti=jti), "ES256")
    assert 302 == (await authorize(client, client_id="app", request=clean)).status
    assert 1 == len(legacy.recorder.requests)
