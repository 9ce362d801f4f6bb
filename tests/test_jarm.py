"""JARM: every mode and response type round-trips, verified with joserfc against the keys
found through discovery; encryption, errors, state, callbacks, rotation, form_post's CSP."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient
from joserfc import jwe, jwt
from joserfc.jwk import ECKey, Key, KeySet, RSAKey

from proxy.app import create_app
from proxy.clients import load_registry
from proxy.flows import HANDLE_PREFIX
from proxy.keyring import GatewayKey, Keyring
from proxy.response.jarm import build_jarm_response
from proxy.store import Store
from tests.conftest import AiohttpClient, Legacy
from tests.jar import ISSUER, REDIRECT, Claims, private_key, public_jwks, sign
from tests.support import make_settings

ENC_RSA = RSAKey.generate_key(2048, parameters={"kid": "client-enc-rsa", "use": "enc"})
ENC_EC = ECKey.generate_key("P-256", parameters={"kid": "client-enc-ec", "use": "enc"})
SIG = private_key("p256", "jarm")

CLIENTS: list[dict[str, Any]] = [
    {
        "client_id": "jarm",
        "jwks": public_jwks(SIG),
        "redirect_uris": [REDIRECT, "https://rp.example/cb2?keep=1"],
        "authorization_signed_response_alg": "ES256",
    },
    {"client_id": "jarm-default", "jwks": public_jwks(SIG), "redirect_uris": [REDIRECT]},
    {
        "client_id": "jarm-enc",
        "jwks": public_jwks(SIG, ENC_RSA),
        "redirect_uris": [REDIRECT],
        "authorization_signed_response_alg": "PS256",
        "authorization_encrypted_response_alg": "RSA-OAEP-256",
        "authorization_encrypted_response_enc": "A256GCM",
    },
    {
        "client_id": "jarm-ecdh",
        "jwks": public_jwks(SIG, ENC_EC),
        "redirect_uris": [REDIRECT],
        "authorization_signed_response_alg": "ES256",
        "authorization_encrypted_response_alg": "ECDH-ES+A128KW",
    },
]


@pytest.fixture(scope="module")
def jarm_keyring() -> Keyring:
    return Keyring.throwaway(["PS256"])


async def jarm_gateway(
    aiohttp_client: AiohttpClient,
    legacy: Legacy,
    store: Store,
    keyring: Keyring,
    **settings: Any,
) -> TestClient[Any, Any]:
    settings.setdefault("upstream_jwks_path", "/jwks")
    full = make_settings(legacy.url, clients=json.dumps({"clients": CLIENTS}), **settings)
    app = create_app(full, registry=load_registry(full), keyring=keyring, store=store)
    return await aiohttp_client(app)


@pytest.fixture
async def client(
    aiohttp_client: AiohttpClient, legacy: Legacy, store: Store, jarm_keyring: Keyring
) -> TestClient[Any, Any]:
    """The gateway with the JARM clients, on the parametrised store."""
    return await jarm_gateway(aiohttp_client, legacy, store, jarm_keyring)


async def published_keys(client: TestClient[Any, Any]) -> KeySet:
    """The keys a client finds through discovery (jwks_uri), fetched through the gateway."""
    discovery = await (await client.get("/.well-known/openid-configuration")).json()
    jwks_path = urlsplit(discovery["jwks_uri"]).path
    return KeySet.import_key_set(await (await client.get(jwks_path)).json())


def response_token(response: ClientResponse, body: str = "") -> tuple[str, str]:
    """(where the JWT came, the JWT) for any of the JWT modes; nothing else may travel."""
    if response.status == 200:
        (token,) = re.findall(r'name="response" value="([^"]+)"', body)
        assert 1 == body.count('type="hidden"')
        return "form_post", token
    assert 302 == response.status
    location = urlsplit(response.headers["Location"])
    carrier = "fragment" if location.fragment else "query"
    params = parse_qs(location.fragment or location.query)
    assert ["response"] == list(params), "only `response` may travel next to the JWT"
    return carrier, params["response"][0]


async def verified_claims(
    client: TestClient[Any, Any], token: str, client_id: str, decrypt_with: Key | None = None
) -> dict[str, Any]:
    """Decrypt (when encrypted), then verify with the published keys; check iss, aud, exp."""
    if decrypt_with is not None:
        assert 5 == len(token.split("."))
        header = json.loads(base64.urlsafe_b64decode(token.split(".", maxsplit=1)[0] + "=="))
        decrypted = jwe.decrypt_compact(
            token, decrypt_with, algorithms=[header["alg"], header["enc"]]
        )
        assert "JWT" == decrypted.protected["cty"]
        assert decrypted.plaintext is not None
        token = decrypted.plaintext.decode()
    assert 3 == len(token.split("."))
    keys = await published_keys(client)
    verified = jwt.decode(token, keys, algorithms=["ES256", "RS256", "PS256"])
    jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": ISSUER},
        aud={"essential": True, "value": client_id},
        exp={"essential": True},
        iat={"essential": True},
    ).validate(verified.claims)
    return dict(verified.claims)


async def authorize(client: TestClient[Any, Any], **params: str) -> tuple[ClientResponse, str]:
    params.setdefault("redirect_uri", REDIRECT)
    response = await client.get("/authorize", params=params, allow_redirects=False)
    return response, await response.text()


TYPES = ["code", "code id_token", "id_token", "token", "id_token token"]
MODES = ["query.jwt", "fragment.jwt", "form_post.jwt", "jwt"]


@pytest.mark.parametrize("response_type", TYPES)
@pytest.mark.parametrize("mode", MODES)
async def test_each_mode_and_response_type(
    client: TestClient[Any, Any], legacy: Legacy, mode: str, response_type: str
) -> None:
    """Every combination round-trips as one verified JWT in the right place; query.jwt with a
    token is refused before the upstream is asked (JARM §2.3.1), the refusal itself in JARM."""
    response, body = await authorize(
        client,
        client_id="jarm",
        response_type=response_type,
        response_mode=mode,
        redirect_uri=REDIRECT,
        state="st-1",
        nonce="n-1",
        scope="openid",
    )
    carrier, token = response_token(response, body)
    claims = await verified_claims(client, token, "jarm")
    assert "st-1" == claims["state"]
    tokens = response_type != "code"
    if mode == "query.jwt" and tokens:
        assert [] == [p for p in legacy.recorder.paths() if p.startswith("/authorize")]
        assert "invalid_request" == claims["error"]
        return
    expected = {"query.jwt": "query", "fragment.jwt": "fragment", "form_post.jwt": "form_post"}
    want = expected.get(mode, "fragment" if tokens else "query")
    assert want == carrier
    for part in response_type.split():
        assert ("access_token" if part == "token" else part) in claims
    if "token" in response_type.split():
        assert 3600 == claims["expires_in"]
    assert not token.count("jgf_")


async def test_jarm_signature_and_lifetime(
    client: TestClient[Any, Any], jarm_keyring: Keyring
) -> None:
    """Signed with the client's alg and a kid found in the published JWKS; exp - iat is the
    configured lifetime; the upstream's session_state is inside only."""
    response, body = await authorize(
        client,
        client_id="jarm",
        response_type="code",
        response_mode="query.jwt",
        redirect_uri=REDIRECT,
    )
    _, token = response_token(response, body)
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert "ES256" == header["alg"]
    assert header["kid"] in {k.kid for k in await published_keys(client)}
    claims = await verified_claims(client, token, "jarm")
    assert 600 == claims["exp"] - claims["iat"]
    assert "state" not in claims
    assert claims["session_state"].startswith("legacy-session-")
    assert "session_state" not in response.headers["Location"]


async def test_default_alg_is_rs256(client: TestClient[Any, Any]) -> None:
    """A client that registered no authorization_signed_response_alg gets RS256 (JARM §3)."""
    response, body = await authorize(
        client, client_id="jarm-default", response_type="code", response_mode="jwt"
    )
    _, token = response_token(response, body)
    assert "RS256" == json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))["alg"]
    await verified_claims(client, token, "jarm-default")


async def test_default_alg_setting(
    aiohttp_client: AiohttpClient, legacy: Legacy, store: Store, jarm_keyring: Keyring
) -> None:
    """JARGATE_JARM_DEFAULT_ALG=ES256 changes the default."""
    gateway = await jarm_gateway(
        aiohttp_client, legacy, store, jarm_keyring, jarm_default_alg="ES256"
    )
    response, body = await authorize(
        gateway, client_id="jarm-default", response_type="code", response_mode="jwt"
    )
    _, token = response_token(response, body)
    assert "ES256" == json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))["alg"]


@pytest.mark.parametrize(
    ("client_id", "key", "alg", "enc"),
    [
        ("jarm-enc", ENC_RSA, "RSA-OAEP-256", "A256GCM"),
        ("jarm-ecdh", ENC_EC, "ECDH-ES+A128KW", "A128CBC-HS256"),
    ],
)
async def test_encrypted_jarm_decrypts_into_a_signed_jwt(
    client: TestClient[Any, Any], client_id: str, key: Key, alg: str, enc: str
) -> None:
    """A client that registered encryption gets a nested JWT: encrypted to its key (cty JWT),
    signed by the gateway; query.jwt may then carry tokens."""
    response, body = await authorize(
        client,
        client_id=client_id,
        response_type="code id_token",
        response_mode="query.jwt",
        nonce="n",
        state="enc-state",
    )
    carrier, token = response_token(response, body)
    assert "query" == carrier
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert (alg, enc, "JWT") == (header["alg"], header["enc"], header["cty"])
    claims = await verified_claims(client, token, client_id, decrypt_with=key)
    assert ("enc-state", True) == (claims["state"], "id_token" in claims)


async def test_upstream_errors_are_wrapped(client: TestClient[Any, Any]) -> None:
    """access_denied from the upstream comes back inside the JWT, with the client's state."""
    response, body = await authorize(
        client,
        client_id="jarm",
        response_type="code",
        response_mode="query.jwt",
        scope="deny",
        state="d",
    )
    claims = await verified_claims(client, response_token(response, body)[1], "jarm")
    assert ("access_denied", "d") == (claims["error"], claims["state"])


async def test_errors_after_verification_are_wrapped(
    client: TestClient[Any, Any], legacy: Legacy
) -> None:
    """A replayed request object asking for JARM gets its refusal as a JARM response."""
    extra = {"client_id": "jarm", "response_mode": "query.jwt", "redirect_uri": REDIRECT}
    token = sign(Claims("jarm", extra).build(), "ES256", key=SIG)
    first, _ = await authorize(client, client_id="jarm", request=token)
    assert 302 == first.status
    legacy.recorder.requests.clear()
    response, body = await authorize(client, client_id="jarm", request=token)
    claims = await verified_claims(client, response_token(response, body)[1], "jarm")
    assert "invalid_request_object" == claims["error"]
    assert [] == [p for p in legacy.recorder.paths() if p.startswith("/authorize")]


async def test_plain_flow_gets_state_and_iss(client: TestClient[Any, Any]) -> None:
    """A flow that did not ask for JARM gets its state back and iss added (RFC 9207)."""
    response, _ = await authorize(client, client_id="jarm", response_type="code", state="plain-s")
    params = parse_qs(urlsplit(response.headers["Location"]).query)
    assert (["plain-s"], [ISSUER]) == (params["state"], params["iss"])
    assert "no-store" == response.headers["Cache-Control"]
    assert "no-referrer" == response.headers["Referrer-Policy"]


async def test_login_bounce_then_jarm(client: TestClient[Any, Any], legacy: Legacy) -> None:
    """A login page before the final redirect: the flow survives it and ends in JARM."""
    response, _ = await authorize(
        client,
        client_id="jarm",
        response_type="code",
        response_mode="jwt",
        prompt="login",
        state="b",
    )
    while response.headers["Location"].startswith("/"):
        response = await client.get(response.headers["Location"], allow_redirects=False)
    claims = await verified_claims(client, response_token(response)[1], "jarm")
    assert ("b", True) == (claims["state"], "code" in claims)


async def start_flow_waiting_for_login(client: TestClient[Any, Any]) -> str:
    """A flow whose user has not logged in yet; returns its handle."""
    response, _ = await authorize(
        client, client_id="jarm", response_type="code", response_mode="query.jwt", prompt="login"
    )
    saved = parse_qs(urlsplit(response.headers["Location"]).query)["return"][0]
    (handle,) = parse_qs(urlsplit(saved).query)["state"]
    assert handle.startswith(HANDLE_PREFIX)
    return handle


async def bounce(client: TestClient[Any, Any], location: str) -> ClientResponse:
    return await client.get("/bounce?" + urlencode({"location": location}), allow_redirects=False)


async def test_replayed_callback_gets_no_second_response(client: TestClient[Any, Any]) -> None:
    """The upstream's callback completes the flow once; the same callback again is refused."""
    handle = await start_flow_waiting_for_login(client)
    callback = f"{REDIRECT}?code=c1&state={handle}"
    first = await bounce(client, callback)
    assert "code" in await verified_claims(client, response_token(first)[1], "jarm")
    second = await bounce(client, callback)
    assert 400 == second.status
    assert "invalid_request" == (await second.json())["error"]


@pytest.mark.parametrize("mode", ["query", "query.jwt"])
async def test_upstream_error_description_reaches_the_client_in_rfc_6749_characters(
    client: TestClient[Any, Any], mode: str
) -> None:
    """An upstream error whose error_description has a quote, a backslash, é and § reaches the
    client, plainly or inside the JWT, with those in RFC 6749's characters only."""
    response, _ = await authorize(
        client, client_id="jarm", response_type="code", response_mode=mode, prompt="login"
    )
    saved = parse_qs(urlsplit(response.headers["Location"]).query)["return"][0]
    (handle,) = parse_qs(urlsplit(saved).query)["state"]
    error = {
        "error": "access_denied",
        "error_description": 'refus\u00e9 "\u00a7\\',
        "state": handle,
    }
    answer = await bounce(client, f"{REDIRECT}?{urlencode(error)}")
    if mode == "query":
        params = {k: v[0] for k, v in parse_qs(urlsplit(answer.headers["Location"]).query).items()}
    else:
        params = await verified_claims(client, response_token(answer)[1], "jarm")
    assert ("access_denied", "refus? '?/") == (params["error"], params["error_description"])


async def test_forged_handle_is_never_passed_on_raw(client: TestClient[Any, Any]) -> None:
    """Something that looks like a handle but is unknown gets the gateway's page, not a redirect."""
    response = await bounce(client, f"{REDIRECT}?code=c1&state={HANDLE_PREFIX}forged")
    assert 400 == response.status
    assert "Location" not in response.headers


async def test_callback_to_another_uri_is_refused(client: TestClient[Any, Any]) -> None:
    """A live handle on its way to a URI other than the flow's redirect URI is stopped."""
    handle = await start_flow_waiting_for_login(client)
    response = await bounce(client, f"https://evil.example/cb?code=c1&state={handle}")
    assert 502 == response.status
    assert "Location" not in response.headers


async def test_upstream_iss_is_not_duplicated_in_plain_flows(client: TestClient[Any, Any]) -> None:
    """When the upstream already sends iss (RFC 9207), the gateway does not add another."""
    response, _ = await authorize(
        client, client_id="jarm", response_type="code", prompt="login", state="i"
    )
    saved = parse_qs(urlsplit(response.headers["Location"]).query)["return"][0]
    handle = parse_qs(urlsplit(saved).query)["state"][0]
    done = await bounce(client, f"{REDIRECT}?code=c&state={handle}&iss={ISSUER}")
    assert [ISSUER] == parse_qs(urlsplit(done.headers["Location"]).query)["iss"]


async def test_redirect_uri_query_is_kept(client: TestClient[Any, Any]) -> None:
    """The registered redirect URI's own query stays; `response` is added to it."""
    response, _ = await authorize(
        client,
        client_id="jarm",
        response_type="code",
        response_mode="query.jwt",
        redirect_uri="https://rp.example/cb2?keep=1",
    )
    location = response.headers["Location"]
    assert location.startswith("https://rp.example/cb2?keep=1&response=")


async def test_form_post_page_csp_matches_its_script(client: TestClient[Any, Any]) -> None:
    """form_post.jwt: one script allowed by its hash, a visible button without JavaScript,
    no external resources, the form posting to the redirect URI."""
    response, body = await authorize(
        client, client_id="jarm", response_type="code", response_mode="form_post.jwt"
    )
    assert (200, "text/html") == (response.status, response.content_type)
    (script,) = re.findall(r"<script>(.*?)</script>", body)
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    csp = response.headers["Content-Security-Policy"]
    assert f"script-src 'sha256-{digest}'" in csp
    assert "default-src 'none'" in csp
    assert "form-action https://rp.example" in csp
    assert f'action="{REDIRECT}"' in body
    assert '<button type="submit">' in body
    assert not re.search(r"\b(src|href)=", body)
    assert "no-store" == response.headers["Cache-Control"]
    assert "no-referrer" == response.headers["Referrer-Policy"]


async def test_rotated_out_key_still_verifies(legacy: Legacy) -> None:
    """Rotation: the first key signs; a response signed with the old key still verifies
    against the published JWKS."""

    def gateway_key(kid: str) -> GatewayKey:
        return GatewayKey(kid=kid, use="sig", alg="ES256", key=ECKey.generate_key("P-256"))

    new, old = gateway_key("2026-11"), gateway_key("2026-05")
    rotated = Keyring([new, old])
    before = Keyring([old])
    registry = load_registry(make_settings(clients=json.dumps({"clients": CLIENTS})))
    jarm_client = registry.get("jarm")
    assert jarm_client is not None
    settings = make_settings(legacy.url)
    old_token = build_jarm_response([("code", "c")], jarm_client, before, settings)
    new_token = build_jarm_response([("code", "c")], jarm_client, rotated, settings)
    published = KeySet.import_key_set(rotated.public_jwks())  # type: ignore[arg-type]
    for token, kid in ((old_token, "2026-05"), (new_token, "2026-11")):
        decoded = jwt.decode(token, published, algorithms=["ES256"])
        assert kid == decoded.header["kid"]
        assert time.time() < decoded.claims["exp"]
