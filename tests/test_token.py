"""The token endpoint guard: codes the gateway delivered, PKCE checked for an upstream that
never checks it, client authentication translated for an upstream that knows only secrets.

Every refusal asserts the RFC 6749 section 5.2 error, that it is the gateway's JSON with
``no-store``, and that the upstream's token endpoint saw nothing."""

from __future__ import annotations

import asyncio
import json
import string
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlsplit

import pytest
import redis
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient

from proxy.app import create_app
from proxy.clients import load_registry
from proxy.codes import SEALED_PREFIX
from proxy.demo.legacy import LEGACY
from proxy.keyring import Keyring
from proxy.observability import Metrics
from proxy.store import MemoryStore, RedisStore, Store
from tests.conftest import AiohttpClient, AiohttpServer, Legacy
from tests.jar import ISSUER, REDIRECT, private_key, public_jwks
from tests.legacy_upstream import Recorder, legacy_app
from tests.support import make_settings, upstream_code_of
from tests.test_par import assertion, basic

#: RFC 7636 appendix B's verifier and its S256 challenge.
VERIFIER = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
KEY = private_key("p256", "token")
UPSTREAM_SECRET = "the-upstream-knows-this"
DIRECT_SECRET = "direct-secret"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
CLIENTS: list[dict[str, Any]] = [
    {
        # FAPI-grade at the gateway, a secret at the upstream.
        "client_id": "web",
        "jwks": public_jwks(KEY),
        "redirect_uris": [REDIRECT],
        "token_endpoint_auth_method": "private_key_jwt",
        "require_pkce": True,
        "upstream_token_endpoint_auth_method": "client_secret_basic",
        "upstream_client_secret": UPSTREAM_SECRET,
    },
    {
        "client_id": "post",
        "jwks": public_jwks(KEY),
        "redirect_uris": [REDIRECT],
        "token_endpoint_auth_method": "private_key_jwt",
        "upstream_token_endpoint_auth_method": "client_secret_post",
        "upstream_client_secret": UPSTREAM_SECRET,
    },
    # Its own credentials go upstream unchanged.
    {"client_id": "direct", "redirect_uris": [REDIRECT], "client_secret": DIRECT_SECRET},
    {"client_id": "other", "redirect_uris": ["https://other.example/cb", REDIRECT]},
]


@pytest.fixture
async def blind(aiohttp_server: AiohttpServer) -> Legacy:
    """A legacy server that stores PKCE but never checks it, and knows web, post and direct
    only by their secrets."""
    recorder = Recorder()
    app = legacy_app(recorder)
    app[LEGACY].check_pkce = False
    app[LEGACY].client_secrets = {
        "web": UPSTREAM_SECRET,
        "post": UPSTREAM_SECRET,
        "direct": DIRECT_SECRET,
    }
    return Legacy(server=await aiohttp_server(app), recorder=recorder)


async def guard(
    aiohttp_client: AiohttpClient,
    upstream: Legacy,
    store: Store | None = None,
    metrics: Metrics | None = None,
    keyring: Keyring | None = None,
    **settings: Any,
) -> TestClient[Any, Any]:
    full = make_settings(upstream.url, clients=json.dumps({"clients": CLIENTS}), **settings)
    app = create_app(
        full,
        registry=load_registry(full),
        keyring=keyring or Keyring.throwaway(["ES256"]),
        store=store or MemoryStore(),
        metrics=metrics,
    )
    return await aiohttp_client(app)


async def code_for(
    client: TestClient[Any, Any],
    client_id: str,
    *,
    challenge: str | None = CHALLENGE,
    redirect_uri: str | None = REDIRECT,
    **extra: str,
) -> str:
    """Run an authorization through the gateway; the code it delivered."""
    params = {"client_id": client_id, "response_type": "code", "state": "s", **extra}
    if redirect_uri is not None:
        params["redirect_uri"] = redirect_uri
    if challenge is not None:
        params.update(code_challenge=challenge, code_challenge_method="S256")
    response = await client.get("/authorize", params=params, allow_redirects=False)
    assert 302 == response.status, await response.text()
    query = parse_qs(urlsplit(response.headers["Location"]).query)
    assert "code" in query, query
    return query["code"][0]


def web_form(code: str, **extra: str) -> dict[str, str]:
    """A token request from web, authenticated with private_key_jwt."""
    return {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "code_verifier": VERIFIER,
        "client_id": "web",
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion("web", KEY, aud=ISSUER + "/token"),
        **extra,
    }


def token_requests(upstream: Legacy) -> list[Any]:
    return [r for r in upstream.recorder.requests if r.raw_path.startswith("/token")]


async def refused(response: ClientResponse, upstream: Legacy, error: str, status: int = 400) -> str:
    """The gateway's RFC 6749 §5.2 answer, and nothing at the upstream's token endpoint."""
    assert [] == token_requests(upstream), "the upstream must receive nothing"
    body = await response.json()
    assert (status, error) == (response.status, body["error"]), body
    assert "no-store" == response.headers["Cache-Control"]
    return str(body["error_description"])


async def test_fapi_grade_exchange_in_front_of_a_secret_only_server_that_ignores_pkce(
    aiohttp_client: AiohttpClient, blind: Legacy, store: Store
) -> None:
    """PKCE and private_key_jwt at the gateway; the upstream gets its secret by Basic and
    never the assertion; its answer comes back unchanged."""
    client = await guard(aiohttp_client, blind, store)
    code = await code_for(client, "web")
    response = await client.post("/token", data=web_form(code))
    assert 200 == response.status, await response.text()
    body = await response.json()
    assert "Bearer" == body["token_type"]
    assert "no-store" == response.headers["Cache-Control"]
    (received,) = token_requests(blind)
    assert basic("web", UPSTREAM_SECRET)["Authorization"] == received.headers["Authorization"]
    sent = dict(parse_qsl(received.body.decode()))
    assert {"grant_type", "code", "redirect_uri", "code_verifier"} == set(sent)
    assert upstream_code_of(client, code) == sent["code"]


async def test_client_secret_post_to_the_upstream(
    aiohttp_client: AiohttpClient, blind: Legacy
) -> None:
    """upstream_token_endpoint_auth_method client_secret_post: the secret in the body."""
    client = await guard(aiohttp_client, blind)
    code = await code_for(client, "post")
    form = web_form(code, client_id="post", client_assertion=assertion("post", KEY))
    assert 200 == (await client.post("/token", data=form)).status
    (received,) = token_requests(blind)
    assert "Authorization" not in received.headers
    sent = dict(parse_qsl(received.body.decode()))
    assert ("post", UPSTREAM_SECRET) == (sent["client_id"], sent["client_secret"])
    assert "client_assertion" not in sent


@pytest.mark.parametrize(
    ("change", "rule"),
    [
        ({"code_verifier": "x" * 43}, "does not match"),
        ({"code_verifier": VERIFIER[:-1] + "Y"}, "does not match"),
        ({"code_verifier": "short"}, "does not match"),
        ({"code_verifier": None}, "code_verifier is required"),
    ],
    ids=["other-verifier", "one-character-off", "malformed", "missing"],
)
async def test_pkce_is_checked_by_the_gateway(
    aiohttp_client: AiohttpClient, blind: Legacy, change: dict[str, Any], rule: str
) -> None:
    """RFC 7636 §4.6 checked by the gateway though the upstream ignores PKCE; a failed
    attempt does not use the code up."""
    client = await guard(aiohttp_client, blind)
    code = await code_for(client, "web")
    form = {k: v for k, v in {**web_form(code), **change}.items() if v is not None}
    assert rule in await refused(await client.post("/token", data=form), blind, "invalid_grant")
    assert 200 == (await client.post("/token", data=web_form(code))).status


async def test_a_verifier_for_a_code_without_challenge_is_refused(
    aiohttp_client: AiohttpClient, blind: Legacy
) -> None:
    """RFC 9700 §2.1.1: no PKCE downgrade (a verifier where no challenge was sent)."""
    client = await guard(aiohttp_client, blind)
    code = await code_for(client, "direct", challenge=None)
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT}
    headers = basic("direct", DIRECT_SECRET)
    response = await client.post(
        "/token", data={**form, "code_verifier": VERIFIER}, headers=headers
    )
    assert "no code_challenge" in await refused(response, blind, "invalid_grant")
    response = await client.post("/token", data=form, headers=headers)
    assert 200 == response.status
    (received,) = token_requests(blind)
    assert headers["Authorization"] == received.headers["Authorization"]


async def test_a_second_redemption_is_refused_logged_and_counted(
    aiohttp_client: AiohttpClient, blind: Legacy, caplog: pytest.LogCaptureFixture
) -> None:
    """RFC 6749 §4.1.2: a code used twice is refused; the upstream sees the first only."""
    metrics = Metrics()
    client = await guard(aiohttp_client, blind, metrics=metrics)
    code = await code_for(client, "web")
    assert 200 == (await client.post("/token", data=web_form(code))).status
    blind.recorder.requests.clear()
    response = await client.post("/token", data=web_form(code))
    assert "already used" in await refused(response, blind, "invalid_grant")
    assert "jargate_code_replays_total 1.0" in metrics.render().decode()
    assert any("likely stolen" in record.getMessage() for record in caplog.records)
    assert code not in caplog.text


async def test_a_code_is_redeemed_once_across_replicas(
    aiohttp_client: AiohttpClient, blind: Legacy, clean_redis: str
) -> None:
    """Two gateways on one Redis and one keys file: the code delivered by one is redeemed at
    the other, and refused at the first after that."""
    stores = [RedisStore.from_url(clean_redis), RedisStore.from_url(clean_redis)]
    keys = Keyring.throwaway(["ES256"])
    first, second = [await guard(aiohttp_client, blind, store, keyring=keys) for store in stores]
    code = await code_for(first, "web")
    assert 200 == (await second.post("/token", data=web_form(code))).status
    blind.recorder.requests.clear()
    response = await first.post("/token", data=web_form(code))
    assert "already used" in await refused(response, blind, "invalid_grant")
    for store in stores:
        await store.close()


async def test_codes_the_gateway_did_not_deliver_to_this_client_are_refused(
    aiohttp_client: AiohttpClient, blind: Legacy
) -> None:
    """Another client's code, and a code the gateway never delivered: invalid_grant."""
    client = await guard(aiohttp_client, blind)
    code = await code_for(client, "direct", challenge=None)
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT}
    response = await client.post("/token", data={**form, "client_id": "other"})
    assert "not this client's" in await refused(response, blind, "invalid_grant")
    response = await client.post("/token", data={**form, "code": "made-up", "client_id": "other"})
    assert "unknown" in await refused(response, blind, "invalid_grant")


async def test_a_code_past_its_lifetime_is_refused(
    aiohttp_client: AiohttpClient, blind: Legacy
) -> None:
    """JARGATE_CODE_LIFETIME_SECONDS: redeemable through the gateway this long."""
    client = await guard(aiohttp_client, blind, code_lifetime_seconds=1)
    code = await code_for(client, "web")
    await asyncio.sleep(1.2)
    response = await client.post("/token", data=web_form(code))
    assert "invalid_grant" == (await response.json())["error"]
    assert [] == token_requests(blind)


async def test_redirect_uri_as_in_the_authorization_request(
    aiohttp_client: AiohttpClient, blind: Legacy
) -> None:
    """RFC 6749 §4.1.3: another redirect_uri is invalid_grant; one named at authorization
    must be named again; one the client left out (its only registered) is added upstream."""
    client = await guard(aiohttp_client, blind)
    code = await code_for(client, "web")
    response = await client.post("/token", data=web_form(code, redirect_uri=REDIRECT + "x"))
    assert "redirect_uri" in await refused(response, blind, "invalid_grant")
    form = web_form(code)
    del form["redirect_uri"]
    response = await client.post("/token", data=form)
    assert "redirect_uri is required" in await refused(response, blind, "invalid_request")
    unnamed = await code_for(client, "web", redirect_uri=None)
    form = web_form(unnamed)
    del form["redirect_uri"]
    assert 200 == (await client.post("/token", data=form)).status
    (received,) = token_requests(blind)
    assert REDIRECT == dict(parse_qsl(received.body.decode()))["redirect_uri"]


@pytest.mark.parametrize(
    ("change", "headers", "basic_tried"),
    [
        ({"client_assertion": assertion("web", private_key("p256", "thief"))}, {}, False),
        ({"client_assertion": assertion("web", KEY, aud="https://evil.example/token")}, {}, False),
        ({"client_assertion": None, "client_assertion_type": None}, basic("web", "guess"), True),
        ({"client_assertion": None, "client_assertion_type": None}, {}, False),
    ],
    ids=["other-key", "other-audience", "basic-instead", "none"],
)
async def test_translated_clients_must_authenticate_to_the_gateway(
    aiohttp_client: AiohttpClient,
    blind: Legacy,
    change: dict[str, Any],
    headers: dict[str, str],
    basic_tried: bool,
) -> None:
    """With upstream_token_endpoint_auth_method, only the registered method opens the
    upstream: 401 invalid_client, with WWW-Authenticate when Basic was tried."""
    client = await guard(aiohttp_client, blind)
    code = await code_for(client, "web")
    form = {k: v for k, v in {**web_form(code), **change}.items() if v is not None}
    response = await client.post("/token", data=form, headers=headers)
    await refused(response, blind, "invalid_client", status=401)
    assert basic_tried == ("WWW-Authenticate" in response.headers)


async def test_every_grant_of_a_translated_client_is_translated(
    aiohttp_client: AiohttpClient, blind: Legacy
) -> None:
    """A refresh token request: authenticated at the gateway, the upstream secret sent on,
    and the upstream's own answer (here its error) returned unchanged."""
    client = await guard(aiohttp_client, blind)
    form = {
        "grant_type": "refresh_token",
        "refresh_token": "rt-1",
        "client_id": "web",
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion("web", KEY),
    }
    response = await client.post("/token", data=form)
    assert (400, {"error": "invalid_grant"}) == (response.status, await response.json())
    (received,) = token_requests(blind)
    assert basic("web", UPSTREAM_SECRET)["Authorization"] == received.headers["Authorization"]
    assert {"grant_type": "refresh_token", "refresh_token": "rt-1"} == dict(
        parse_qsl(received.body.decode())
    )


async def test_unregistered_clients_pass_through_byte_for_byte(
    aiohttp_client: AiohttpClient, blind: Legacy
) -> None:
    """A client the registry does not know: its request reaches the upstream as sent."""
    client = await guard(aiohttp_client, blind)
    body = "grant_type=authorization_code&code=abc&redirect_uri=https%3A%2F%2Fs.example%2Fcb"
    headers = {**basic("stranger", "s3cret"), "Content-Type": "application/x-www-form-urlencoded"}
    response = await client.post("/token", data=body, headers=headers)
    assert (400, {"error": "invalid_grant"}) == (response.status, await response.json())
    (received,) = token_requests(blind)
    assert body.encode() == received.body
    assert headers["Authorization"] == received.headers["Authorization"]


@pytest.mark.parametrize(
    ("target", "form", "headers", "error", "status"),
    [
        ("/token?client_id=web", {"grant_type": "refresh_token"}, {}, "invalid_request", 400),
        ("/token", {"grant_type": "refresh_token", "client_id": "WEB"}, {}, "invalid_client", 401),
        (
            "/token",
            {"grant_type": "refresh_token", "client_id": "other"},
            basic("direct", DIRECT_SECRET),
            "invalid_request",
            400,
        ),
        ("/token", {"grant_type": "refresh_token", "Client_ID": "web"}, {}, "invalid_request", 400),
        ("/token", {"client_id": "direct"}, {}, "invalid_request", 400),
        (
            "/token",
            {"grant_type": "authorization_code", "client_id": "other"},
            {},
            "invalid_request",
            400,
        ),
    ],
    ids=["query", "other-spelling", "two-clients", "near-spelling", "no-grant", "no-code"],
)
async def test_requests_the_gateway_cannot_read_as_the_upstream_would_are_refused(
    aiohttp_client: AiohttpClient,
    blind: Legacy,
    target: str,
    form: dict[str, str],
    headers: dict[str, str],
    error: str,
    status: int,
) -> None:
    """A query (servers that merge it into the form), a folded client_id, two clients, a
    near-spelling of a parameter, a registered client without grant_type or code."""
    client = await guard(aiohttp_client, blind)
    response = await client.post(target, data=form, headers=headers)
    await refused(response, blind, error, status)


async def test_pkce_required_at_the_authorization_endpoint(
    aiohttp_client: AiohttpClient, blind: Legacy
) -> None:
    """require_pkce (and JARGATE_REQUIRE_PKCE): no challenge, or plain, is refused to the
    redirect URI before the upstream sees the request."""
    client = await guard(aiohttp_client, blind)
    strict = await guard(aiohttp_client, blind, require_pkce=True)
    plain = {"code_challenge": VERIFIER, "code_challenge_method": "plain"}
    cases: list[tuple[TestClient[Any, Any], str, dict[str, str]]] = [
        (client, "web", {}),
        (client, "web", plain),
        (strict, "direct", {}),
        (strict, "direct", plain),
    ]
    for gateway, client_id, extra in cases:
        params = {"client_id": client_id, "response_type": "code", "redirect_uri": REDIRECT}
        response = await gateway.get(
            "/authorize", params={**params, **extra}, allow_redirects=False
        )
        assert 302 == response.status
        query = parse_qs(urlsplit(response.headers["Location"]).query)
        assert ["invalid_request"] == query["error"], (client_id, extra)
    assert [] == blind.recorder.requests


async def test_the_token_path_comes_from_the_upstreams_discovery(
    aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer
) -> None:
    """JARGATE_TOKEN_PATH unset: the path the upstream's discovery names is the gateway's,
    in every spelling; discovery says so, with what the gateway enforces."""
    asked: list[str] = []

    async def upstream(request: web.Request) -> web.Response:
        asked.append(request.path)
        if request.path == "/.well-known/openid-configuration":
            return web.json_response(
                {
                    "issuer": ISSUER,
                    "authorization_endpoint": ISSUER + "/authorize",
                    "token_endpoint": "http://internal:9000/oauth2/v1/token",
                    "token_endpoint_auth_methods_supported": ["client_secret_basic"],
                }
            )
        return web.json_response({"error": "invalid_grant"}, status=400)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", upstream)
    server = await aiohttp_server(app)
    fake = Legacy(server=server, recorder=Recorder())
    client = await guard(aiohttp_client, fake, token_path=None)
    document = await (await client.get("/.well-known/openid-configuration")).json()
    assert ISSUER + "/oauth2/v1/token" == document["token_endpoint"]
    assert ["S256", "plain"] == document["code_challenge_methods_supported"]
    assert ["client_secret_basic", "private_key_jwt"] == document[
        "token_endpoint_auth_methods_supported"
    ]
    asked.clear()
    for path in ("/oauth2/v1/token", "/OAUTH2/v1/token/", "/oauth2//v1/token;x"):
        response = await client.post(path, data={"grant_type": "refresh_token", "client_id": "WEB"})
        assert 401 == response.status, path
    assert [] == asked


async def test_the_store_keeps_no_code(
    aiohttp_client: AiohttpClient, blind: Legacy, clean_redis: str
) -> None:
    """A sealed code costs the store nothing when delivered; redeemed, it leaves one claim
    under a digest of the upstream's code, and neither code is in any key or value."""
    store = RedisStore.from_url(clean_redis)
    client = await guard(aiohttp_client, blind, store)
    code = await code_for(client, "web")
    counter = redis.Redis.from_url(clean_redis, decode_responses=True)
    assert ["jargate:since"] == [str(key) for key in counter.keys("jargate:*")]
    assert 200 == (await client.post("/token", data=web_form(code))).status
    keys = [str(key) for key in counter.keys("jargate:*")]
    assert ["jargate:code_redeemed:"] == [
        key[:22] for key in keys if key.startswith("jargate:code")
    ]
    for key in keys:
        for secret in (code, upstream_code_of(client, code)):
            assert secret not in key + str(counter.get(key))
    counter.close()
    await store.close()


async def test_a_sealed_code_opens_only_whole_and_with_the_gateways_keys(
    aiohttp_client: AiohttpClient, blind: Legacy, store: Store
) -> None:
    """The client gets the upstream's code sealed: not readable in it, not redeemable once
    altered in any place, nor at a gateway holding other keys; none reaches the upstream."""
    client = await guard(aiohttp_client, blind, store)
    for _ in range(20):  # one whose base64url ends in unused bits (two codes in three)
        code = await code_for(client, "web")
        if (len(code) - len(SEALED_PREFIX)) % 4:
            break
    assert code.startswith(SEALED_PREFIX)
    assert upstream_code_of(client, code) not in code
    elsewhere = await guard(aiohttp_client, blind, store)
    response = await elsewhere.post("/token", data=web_form(code))
    assert "unknown" in await refused(response, blind, "invalid_grant")
    alphabet = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"
    altered = [code[:i] + ("A" if code[i] != "A" else "B") + code[i + 1 :] for i in (5, 99)]
    # The same bytes spelt otherwise: the last character's lowest bit is an unused one.
    altered.append(code[:-1] + alphabet[alphabet.index(code[-1]) ^ 1])
    for other in altered:
        response = await client.post("/token", data=web_form(other))
        assert "unknown" in await refused(response, blind, "invalid_grant")
    for mangled in (SEALED_PREFIX, SEALED_PREFIX + "!!!", code + "A" * 5000):
        response = await client.post("/token", data=web_form(mangled))
        assert "unknown" in await refused(response, blind, "invalid_grant")
    assert 200 == (await client.post("/token", data=web_form(code))).status


async def test_a_code_next_to_an_id_token_is_delivered_as_made_and_recorded(
    aiohttp_client: AiohttpClient, blind: Legacy, clean_redis: str
) -> None:
    """A response with an ID token keeps the upstream's code (the ID token's c_hash covers
    it, OpenID Connect Core 3.3.2.11); its record goes in the store, and it is redeemed once
    like a sealed one."""
    store = RedisStore.from_url(clean_redis)
    client = await guard(aiohttp_client, blind, store)
    response = await client.get(
        "/authorize",
        params={
            "client_id": "direct",
            "response_type": "code id_token",
            "redirect_uri": REDIRECT,
            "state": "s",
            "nonce": "n",
            "prompt": "login",
        },
        allow_redirects=False,
    )
    saved = parse_qs(urlsplit(response.headers["Location"]).query)["return"][0]
    (handle,) = parse_qs(urlsplit(saved).query)["state"]
    answer = f"{REDIRECT}?code=made-upstream&id_token=e30.e30.c2ln&state={handle}"
    done = await client.get("/bounce", params={"location": answer}, allow_redirects=False)
    assert 302 == done.status, await done.text()
    query = parse_qs(urlsplit(done.headers["Location"]).fragment)  # its default response mode
    assert (["made-upstream"], ["e30.e30.c2ln"]) == (query["code"], query["id_token"])
    counter = redis.Redis.from_url(clean_redis, decode_responses=True)
    assert 1 == len(counter.keys("jargate:code:*"))
    counter.close()
    form = {"grant_type": "authorization_code", "code": "made-upstream", "redirect_uri": REDIRECT}
    creds = basic("direct", DIRECT_SECRET)
    blind.recorder.requests.clear()
    await client.post("/token", data=form, headers=creds)  # the upstream's answer relayed
    (received,) = token_requests(blind)
    assert "made-upstream" == dict(parse_qsl(received.body.decode()))["code"]
    blind.recorder.requests.clear()
    response = await client.post("/token", data=form, headers=creds)
    assert "already used" in await refused(response, blind, "invalid_grant")
    await store.close()


async def test_a_sealed_code_from_before_the_stores_memory_began_is_refused(
    aiohttp_client: AiohttpClient, blind: Legacy
) -> None:
    """A gateway restarted with an empty store (its in-memory store, or a Redis that lost
    its data) cannot know whether a code it sealed before was redeemed: refused."""
    keys = Keyring.throwaway(["ES256"])
    before = await guard(aiohttp_client, blind, MemoryStore(), keyring=keys)
    code = await code_for(before, "web")
    await asyncio.sleep(0.01)
    after = await guard(aiohttp_client, blind, MemoryStore(), keyring=keys)
    response = await after.post("/token", data=web_form(code))
    assert "lost its memory" in await refused(response, blind, "invalid_grant")
    fresh = await code_for(after, "web")
    assert 200 == (await after.post("/token", data=web_form(fresh))).status


async def test_registered_clients_only_refuses_a_request_naming_no_client(
    aiohttp_client: AiohttpClient, blind: Legacy
) -> None:
    """JARGATE_REQUIRE_REGISTERED_CLIENTS: a token request that names no client, or an
    unregistered one, never reaches the upstream."""
    client = await guard(aiohttp_client, blind, require_registered_clients=True)
    for form in ({"grant_type": "refresh_token"}, {"grant_type": "x", "client_id": "stranger"}):
        response = await client.post("/token", data={**form, "refresh_token": "rt"})
        await refused(response, blind, "unauthorized_client")
