"""PAR (RFC 9126): client authentication, pushed requests, and using the handle."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import redis
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

from proxy.app import create_app
from proxy.clients import load_registry
from proxy.keyring import Keyring
from proxy.metadata import DISCOVERY_PATHS
from proxy.observability import Metrics
from proxy.request.make import pkce_pair
from proxy.store import MemoryStore, RedisStore, Store
from tests.conftest import AiohttpClient, Legacy
from tests.jar import DROP, ISSUER, REDIRECT, Claims, private_key, public_jwks, sign
from tests.support import chunked, make_settings, redis_data_commands

PAR_URL = ISSUER + "/par"
TOKEN_URL = ISSUER + "/token"
PK = private_key("p256", "pk")
OTHER = private_key("p256", "pkother")

CLIENTS: list[dict[str, Any]] = [
    {
        "client_id": "pkjwt",
        "jwks": public_jwks(PK),
        "redirect_uris": [REDIRECT],
        "token_endpoint_auth_method": "private_key_jwt",
    },
    {
        "client_id": "basic",
        "redirect_uris": [REDIRECT],
        "token_endpoint_auth_method": "client_secret_basic",
        "client_secret": "s3cret:basic/1",
    },
    {
        "client_id": "post",
        "redirect_uris": [REDIRECT],
        "token_endpoint_auth_method": "client_secret_post",
        "client_secret": "s3cret-post",
    },
    {"client_id": "public", "redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none"},
    {
        "client_id": "must-par",
        "jwks": public_jwks(PK),
        "redirect_uris": [REDIRECT],
        "require_pushed_authorization_requests": True,
        "require_signed_request_object": True,
    },
    {
        "client_id": "other",
        "jwks": public_jwks(OTHER),
        "redirect_uris": ["https://other.example/cb"],
    },
]


async def par_gateway(
    aiohttp_client: AiohttpClient, legacy: Legacy, store: Store, **settings: Any
) -> TestClient[Any, Any]:
    metrics = settings.pop("metrics", None)
    full = make_settings(legacy.url, clients=json.dumps({"clients": CLIENTS}), **settings)
    app = create_app(
        full,
        registry=load_registry(full),
        keyring=Keyring.throwaway(),
        store=store,
        metrics=metrics,
    )
    return await aiohttp_client(app)


@pytest.fixture
async def client(
    aiohttp_client: AiohttpClient, legacy: Legacy, store: Store
) -> TestClient[Any, Any]:
    """The gateway with the PAR clients, on the parametrised store."""
    return await par_gateway(aiohttp_client, legacy, store)


def assertion(
    client_id: str = "pkjwt", key: Any = PK, *, kid: str | None = None, **overrides: Any
) -> str:
    """An RFC 7523 client assertion; override claims freely (DROP removes one)."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": client_id,
        "sub": client_id,
        "aud": ISSUER,
        "iat": now,
        "exp": now + 60,
        "jti": secrets.token_hex(12),
    }
    for name, value in overrides.items():
        if value is DROP:
            claims.pop(name)
        else:
            claims[name] = value
    return sign(claims, "ES256", key=key, typ=DROP, kid=kid or key.kid)


def pushed_params(**extra: str) -> dict[str, str]:
    _, challenge = pkce_pair()
    return {
        "response_type": "code",
        "redirect_uri": REDIRECT,
        "scope": "openid",
        "state": "par-state",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        **extra,
    }


async def push(
    client: TestClient[Any, Any], form: dict[str, str], headers: dict[str, str] | None = None
) -> ClientResponse:
    return await client.post("/par", data=form, headers=headers or {})


def pkjwt_form(**params: str) -> dict[str, str]:
    return {
        "client_id": "pkjwt",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": assertion(),
        **pushed_params(),
        **params,
    }


def basic(client_id: str, secret: str) -> dict[str, str]:
    from urllib.parse import quote_plus

    raw = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


async def use(
    client: TestClient[Any, Any], client_id: str, request_uri: str, **extra: str
) -> ClientResponse:
    params = {"client_id": client_id, "request_uri": request_uri, **extra}
    return await client.get("/authorize?" + urlencode(params), allow_redirects=False)


async def assert_pushed(response: ClientResponse) -> str:
    """201, a URN with at least 128 random bits, expires_in, no-store."""
    assert 201 == response.status, await response.text()
    body = await response.json()
    assert body["request_uri"].startswith("urn:ietf:params:oauth:request_uri:")
    random_part = body["request_uri"].rsplit(":", 1)[1]
    assert len(base64.urlsafe_b64decode(random_part + "==")) >= 16
    assert 90 == body["expires_in"]
    assert "no-store" == response.headers["Cache-Control"]
    return str(body["request_uri"])


async def assert_par_refused(
    response: ClientResponse, legacy: Legacy, error: str, status: int = 400
) -> str:
    """JSON error at the PAR endpoint (never a redirect); nothing reached the upstream."""
    assert status == response.status
    assert "application/json" == response.content_type
    body = await response.json()
    assert error == body["error"], body
    assert [] == [p for p in legacy.recorder.paths() if p.startswith("/authorize")]
    return str(body["error_description"])


def final_params(response: ClientResponse) -> dict[str, list[str]]:
    assert 302 == response.status
    return parse_qs(urlsplit(response.headers["Location"]).query)


# ------------------------------------------------------------------ accepted


@pytest.mark.parametrize(
    "method", ["private_key_jwt", "client_secret_basic", "client_secret_post", "none"]
)
async def test_each_authentication_method_pushes_and_authorizes(
    client: TestClient[Any, Any], legacy: Legacy, method: str
) -> None:
    """Each method: push, then send the browser with only client_id and request_uri."""
    headers: dict[str, str] = {}
    if method == "private_key_jwt":
        client_id, form = "pkjwt", pkjwt_form()
    elif method == "client_secret_basic":
        client_id, form = "basic", pushed_params()
        headers = basic("basic", "s3cret:basic/1")
    elif method == "client_secret_post":
        client_id, form = (
            "post",
            {"client_id": "post", "client_secret": "s3cret-post", **pushed_params()},
        )
    else:
        client_id, form = "public", {"client_id": "public", **pushed_params()}
    request_uri = await assert_pushed(await push(client, form, headers))
    response = await use(client, client_id, request_uri)
    params = final_params(response)
    assert (["par-state"], [ISSUER]) == (params["state"], params["iss"])
    (authorize,) = [r for r in legacy.recorder.requests if r.raw_path.startswith("/authorize")]
    upstream = parse_qs(urlsplit(authorize.raw_path).query)
    assert [form["code_challenge"]] == upstream["code_challenge"]
    assert "request_uri" not in upstream


async def test_pushed_request_object(client: TestClient[Any, Any], legacy: Legacy) -> None:
    """A signed request object pushed; its parameters are the request."""
    claims = Claims("pkjwt").build(scope="openid object")
    form = {**pkjwt_form(), "request": sign(claims, "ES256", key=PK)}
    for name in ("scope", "state", "response_type", "redirect_uri", "code_challenge"):
        form.pop(name)
    request_uri = await assert_pushed(await push(client, form))
    params = final_params(await use(client, "pkjwt", request_uri))
    assert [claims["state"]] == params["state"]
    upstream = parse_qs(urlsplit(legacy.recorder.requests[-1].raw_path).query)
    assert ["openid object"] == upstream["scope"]


async def test_outside_parameters_are_ignored_at_authorization(
    client: TestClient[Any, Any], legacy: Legacy
) -> None:
    """Besides client_id and request_uri, nothing the browser carries is used."""
    request_uri = await assert_pushed(await push(client, pkjwt_form()))
    response = await use(
        client,
        "pkjwt",
        request_uri,
        scope="admin",
        redirect_uri="https://evil.example/cb",
        state="x",
    )
    assert response.headers["Location"].startswith(REDIRECT + "?")
    assert ["par-state"] == final_params(response)["state"]
    upstream = parse_qs(urlsplit(legacy.recorder.requests[-1].raw_path).query)
    assert ["openid"] == upstream["scope"]


async def test_reload_before_completion_continues_the_flow(
    client: TestClient[Any, Any], legacy: Legacy
) -> None:
    """A reload while the user is at the login page continues the same flow; once the flow
    completed, the request_uri is used up."""
    request_uri = await assert_pushed(await push(client, pkjwt_form(prompt="login")))
    first = await use(client, "pkjwt", request_uri)
    reload = await use(client, "pkjwt", request_uri)
    assert first.headers["Location"] == reload.headers["Location"]  # the same flow, same handle
    response = reload
    while response.headers["Location"].startswith("/"):
        response = await client.get(response.headers["Location"], allow_redirects=False)
    assert "code" in final_params(response)
    legacy.recorder.requests.clear()
    reused = await use(client, "pkjwt", request_uri)
    assert 400 == reused.status
    assert "invalid_request_uri" == (await reused.json())["error"]
    assert [] == legacy.recorder.requests


async def test_use_answered_at_once_costs_one_redis_read(
    aiohttp_client: AiohttpClient, legacy: Legacy, clean_redis: str
) -> None:
    """A pushed request whose use the upstream answers at once is taken in one round trip
    (GETDEL) and is gone: nothing else is read or written at the authorization endpoint
    (the code goes to the client sealed)."""
    counter = redis.Redis.from_url(clean_redis)
    store = RedisStore.from_url(clean_redis)
    client = await par_gateway(aiohttp_client, legacy, store)
    request_uri = await assert_pushed(await push(client, pkjwt_form()))
    counter.config_resetstat()
    assert "code" in final_params(await use(client, "pkjwt", request_uri))
    assert {"getdel": 1} == redis_data_commands(counter)
    assert [] == counter.keys("jargate:par:*")
    assert [] == counter.keys("jargate:code:*")
    await store.close()
    counter.close()


@pytest.mark.parametrize(
    ("setting", "aud"),
    [
        (False, PAR_URL),
        (False, TOKEN_URL),
        (False, [ISSUER, "https://other.example"]),
        (True, ISSUER),
    ],
    ids=["par-url", "token-url", "array-with-issuer", "strict-issuer"],
)
async def test_accepted_assertion_audiences(
    aiohttp_client: AiohttpClient, legacy: Legacy, store: Store, setting: bool, aud: Any
) -> None:
    """RFC 9126 §2: the issuer, the PAR URL or the token endpoint URL; strict: the issuer."""
    client = await par_gateway(aiohttp_client, legacy, store, strict_assertion_audience=setting)
    await assert_pushed(await push(client, pkjwt_form(client_assertion=assertion(aud=aud))))


# ------------------------------------------------------------------ refused


@pytest.mark.parametrize(
    ("make_form", "reason"),
    [
        (lambda: {"client_assertion": assertion(key=OTHER)}, "no key with kid"),
        (lambda: {"client_assertion": assertion(key=OTHER, kid="p256pk")}, "does not verify"),
        (lambda: {"client_assertion": assertion(exp=int(time.time()) - 120)}, "expired"),
        (lambda: {"client_assertion": assertion(exp=int(time.time()) + 3600)}, "more than 300 s"),
        (lambda: {"client_assertion": assertion(exp=DROP)}, "exp is required"),
        (
            lambda: {"client_assertion": assertion(aud="https://other.example")},
            "aud is not this server",
        ),
        (
            lambda: {"client_assertion": assertion(aud=ISSUER + "/authorize")},
            "aud is not this server",
        ),
        (lambda: {"client_assertion": assertion(iss="other")}, "iss and sub"),
        (lambda: {"client_assertion": assertion(sub="someone")}, "iss and sub"),
        (lambda: {"client_assertion": assertion(jti=DROP)}, "jti"),
        (lambda: {"client_assertion": assertion(iat=int(time.time()) + 600)}, "iat"),
        (lambda: {"client_assertion_type": "urn:other"}, "client_assertion_type"),
        (lambda: {"client_assertion": "not-a-jwt"}, "not a compact"),
        (
            lambda: {"client_assertion": sign(Claims("pkjwt").build(sub="pkjwt"), "ES256", key=PK)},
            "a request object is not a client assertion",
        ),
    ],
    ids=[
        "wrong-key",
        "wrong-key-own-kid",
        "expired",
        "too-long",
        "no-exp",
        "wrong-aud",
        "authorize-aud",
        "wrong-iss",
        "wrong-sub",
        "no-jti",
        "iat-future",
        "wrong-type",
        "malformed",
        "request-object",
    ],
)
async def test_bad_assertions_are_invalid_client(
    client: TestClient[Any, Any],
    legacy: Legacy,
    make_form: Callable[[], dict[str, str]],
    reason: str,
) -> None:
    """Each kind of bad client assertion is 401 invalid_client. The assertions are made
    when the test runs: made at collection, their times would have passed on a slow run."""
    response = await push(client, pkjwt_form(**make_form()))
    assert reason in await assert_par_refused(response, legacy, "invalid_client", 401)


async def test_replayed_assertion_is_refused(client: TestClient[Any, Any], legacy: Legacy) -> None:
    """A client assertion's jti is claimed once."""
    once = assertion()
    await assert_pushed(await push(client, pkjwt_form(client_assertion=once)))
    response = await push(client, pkjwt_form(client_assertion=once))
    assert "replay" in await assert_par_refused(response, legacy, "invalid_client", 401)


@pytest.mark.parametrize(
    "aud", [[ISSUER], PAR_URL, TOKEN_URL], ids=["array", "par-url", "token-url"]
)
async def test_strict_audience_refuses_all_but_the_issuer_string(
    aiohttp_client: AiohttpClient, legacy: Legacy, store: Store, aud: Any
) -> None:
    """JARGATE_STRICT_ASSERTION_AUDIENCE (FAPI 2.0, CVE-2025-27370): only the issuer string."""
    client = await par_gateway(aiohttp_client, legacy, store, strict_assertion_audience=True)
    response = await push(client, pkjwt_form(client_assertion=assertion(aud=aud)))
    await assert_par_refused(response, legacy, "invalid_client", 401)


@pytest.mark.parametrize(
    ("client_id", "form", "headers", "status", "error"),
    [
        (
            "basic",
            {},
            {"Authorization": "Basic " + base64.b64encode(b"basic:wrong").decode()},
            401,
            "invalid_client",
        ),
        ("post", {"client_id": "post", "client_secret": "wrong"}, {}, 401, "invalid_client"),
        (
            "basic",
            {"client_id": "basic", "client_secret": "s3cret:basic/1"},
            {},
            401,
            "invalid_client",
        ),
        ("nobody", {"client_id": "nobody"}, {}, 401, "invalid_client"),
        ("pkjwt", {"client_id": "pkjwt"}, {}, 401, "invalid_client"),
        (
            "post",
            {"client_id": "post", "client_secret": "s3cret-post"},
            {"Authorization": "Basic " + base64.b64encode(b"post:s3cret-post").decode()},
            400,
            "invalid_request",
        ),
        (
            "post",
            {"client_id": "post", "client_secret": "s3cret-post"},
            {"Authorization": "Basic "},
            400,
            "invalid_request",
        ),
        ("public", {"client_id": "public", "code_challenge": DROP}, {}, 400, "invalid_request"),
        (
            "public",
            {"client_id": "public", "code_challenge_method": "plain"},
            {},
            400,
            "invalid_request",
        ),
    ],
    ids=[
        "wrong-basic-secret",
        "wrong-post-secret",
        "basic-client-using-post",
        "unknown-client",
        "no-authentication",
        "two-methods",
        "empty-basic-and-post",
        "public-without-pkce",
        "public-plain-pkce",
    ],
)
async def test_authentication_failures(
    client: TestClient[Any, Any],
    legacy: Legacy,
    client_id: str,
    form: dict[str, Any],
    headers: dict[str, str],
    status: int,
    error: str,
) -> None:
    """Wrong secrets, wrong methods and missing PKCE for public clients are refused."""
    body = pushed_params()
    for name, value in form.items():
        if value is DROP:
            body.pop(name)
        else:
            body[name] = value
    response = await push(client, body, headers)
    await assert_par_refused(response, legacy, error, status)
    if status == 401 and "Authorization" in headers:
        assert response.headers["WWW-Authenticate"].startswith("Basic")


@pytest.mark.parametrize(
    ("form", "reason"),
    [
        ({"request_uri": "https://rp.example/r"}, "request_uri is not allowed"),
        ({"redirect_uri": "https://evil.example/cb"}, "not registered"),
        ({"response_mode": "nonsense"}, "response_mode"),
        ({"response_type": "token", "response_mode": "query"}, "cannot carry tokens"),
    ],
)
async def test_pushed_request_is_validated_at_push_time(
    client: TestClient[Any, Any], legacy: Legacy, form: dict[str, str], reason: str
) -> None:
    """The same validation as the authorization endpoint, surfaced to the client at push."""
    response = await push(client, pkjwt_form(**form))
    assert reason in await assert_par_refused(response, legacy, "invalid_request")


async def test_pushed_object_for_another_client_is_refused(
    client: TestClient[Any, Any], legacy: Legacy
) -> None:
    """A request object whose client_id is not the authenticated client's (RFC 9126 §3)."""
    token = sign(Claims("other").build(), "ES256", key=OTHER)
    response = await push(client, {**pkjwt_form(), "request": token})
    await assert_par_refused(response, legacy, "invalid_request_object")


async def test_unsigned_push_from_client_that_must_sign(
    client: TestClient[Any, Any], legacy: Legacy
) -> None:
    """require_signed_request_object holds at the PAR endpoint: plain parameters are refused."""
    form = pkjwt_form(client_id="must-par", client_assertion=assertion("must-par"))
    response = await push(client, form)
    assert "signed request object" in await assert_par_refused(response, legacy, "invalid_request")


async def test_par_endpoint_http_rules(client: TestClient[Any, Any], legacy: Legacy) -> None:
    """GET is 405; JSON bodies are refused; oversized bodies are 413; repeated parameters 400."""
    get = await client.get("/par")
    assert (405, "POST") == (get.status, get.headers["Allow"])
    as_json = await client.post("/par", json=pkjwt_form())
    await assert_par_refused(as_json, legacy, "invalid_request")
    huge = await push(client, pkjwt_form(padding="x" * 200_000))
    await assert_par_refused(huge, legacy, "invalid_request", 413)
    repeated = await client.post(
        "/par",
        data=urlencode(pkjwt_form()) + "&scope=again",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert "repeated" in await assert_par_refused(repeated, legacy, "invalid_request")


async def test_assertion_audience_never_comes_from_the_requests_host(
    aiohttp_client: AiohttpClient, reflecting_legacy: Legacy
) -> None:
    """With Host: evil.example, an assertion for http://evil.example/token is 401
    invalid_client, nothing is stored and the upstream is only asked for its discovery as
    the issuer; an assertion for the issuer's own token endpoint is still accepted."""
    store = MemoryStore()
    client = await par_gateway(aiohttp_client, reflecting_legacy, store)
    forged = {"Host": "evil.example", "X-Forwarded-Host": "evil.example"}
    evil = pkjwt_form(client_assertion=assertion(aud="http://evil.example/token"))
    response = await push(client, evil, forged)
    reason = await assert_par_refused(response, reflecting_legacy, "invalid_client", 401)
    assert "aud is not this server" in reason
    assert 0 == len(store)
    for received in reflecting_legacy.recorder.requests:
        assert received.raw_path in DISCOVERY_PATHS
        assert "127.0.0.1:8000" == received.headers["Host"]
    own = pkjwt_form(client_assertion=assertion(aud=TOKEN_URL))
    await assert_pushed(await push(client, own, forged))


async def raw_push(
    client: TestClient[Any, Any], head: dict[str, str], parts: list[bytes]
) -> tuple[int, Any]:
    """POST /par on a raw socket, writing ``parts`` 0.2 s apart; the status and JSON body."""
    assert client.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    fields = {"Host": "127.0.0.1", "Connection": "close", **head}
    writer.write(
        b"POST /par HTTP/1.1\r\n"
        + "".join(f"{name}: {value}\r\n" for name, value in fields.items()).encode()
        + b"\r\n"
    )
    try:
        for part in parts:
            writer.write(part)
            await writer.drain()
            await asyncio.sleep(0.2)
    except ConnectionError:
        pass  # answered (and closed) before the whole body was sent
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    head_bytes, _, body = answer.partition(b"\r\n\r\n")
    return int(head_bytes.split(b" ", 2)[1]), json.loads(body)


FORM = "application/x-www-form-urlencoded"


async def test_par_body_past_the_limit_in_chunks_is_413(
    aiohttp_client: AiohttpClient, legacy: Legacy
) -> None:
    """A chunked body of about 300 KB whose first chunk is a whole valid form is 413
    invalid_request: the body counts whole, not what arrived first; nothing is stored."""
    store = MemoryStore()
    client = await par_gateway(aiohttp_client, legacy, store)
    padding = b"&padding=" + b"x" * 150_000
    parts = chunked(urlencode(pkjwt_form()).encode(), padding, b"x" * 150_000)
    status, body = await raw_push(
        client, {"Content-Type": FORM, "Transfer-Encoding": "chunked"}, parts
    )
    assert (413, "invalid_request") == (status, body["error"])
    assert 0 == len(store)
    assert [] == legacy.recorder.requests


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_par_body_split_across_segments_is_read_whole(
    aiohttp_client: AiohttpClient, legacy: Legacy, framing: str
) -> None:
    """A valid form arriving in three pieces, with pauses between them, is read whole and
    pushed (201)."""
    client = await par_gateway(aiohttp_client, legacy, MemoryStore())
    form = urlencode(pkjwt_form()).encode()
    pieces = [form[: len(form) // 3], form[len(form) // 3 : -20], form[-20:]]
    if framing == "chunked":
        head, parts = {"Content-Type": FORM, "Transfer-Encoding": "chunked"}, chunked(*pieces)
    else:
        head, parts = {"Content-Type": FORM, "Content-Length": str(len(form))}, pieces
    status, body = await raw_push(client, head, parts)
    assert 201 == status, body
    assert body["request_uri"].startswith("urn:ietf:params:oauth:request_uri:")


@pytest.mark.parametrize("case", ["made-up", "other-client", "expired"])
async def test_bad_handles_are_invalid_request_uri(
    aiohttp_client: AiohttpClient, legacy: Legacy, store: Store, case: str
) -> None:
    """Made up, used by another client, or expired: invalid_request_uri, nothing upstream."""
    import asyncio

    client = await par_gateway(aiohttp_client, legacy, store, par_ttl_seconds=1)
    request_uri = "urn:ietf:params:oauth:request_uri:" + secrets.token_urlsafe(32)
    client_id = "pkjwt"
    if case != "made-up":
        pushed = await client.post("/par", data=pkjwt_form())
        request_uri = (await pushed.json())["request_uri"]
    if case == "other-client":
        client_id = "other"
    if case == "expired":
        await asyncio.sleep(1.2)
    response = await use(client, client_id, request_uri)
    assert (400, "invalid_request_uri") == (response.status, (await response.json())["error"])
    assert "Location" not in response.headers  # a JSON answer, never a redirect
    assert [] == [p for p in legacy.recorder.paths() if p.startswith("/authorize")]


async def test_another_clients_try_leaves_the_handle_to_its_own_client(
    aiohttp_client: AiohttpClient, legacy: Legacy, store: Store
) -> None:
    """A handle travels through the browser: presented by another client it is unknown,
    and it is not used up by that try (the store key is bound to the pushing client)."""
    client = await par_gateway(aiohttp_client, legacy, store)
    request_uri = await assert_pushed(await push(client, pkjwt_form()))
    stolen = await use(client, "other", request_uri)
    assert (400, "invalid_request_uri") == (stolen.status, (await stolen.json())["error"])
    assert "Location" not in stolen.headers  # a JSON answer, never a redirect
    assert [] == [p for p in legacy.recorder.paths() if p.startswith("/authorize")]
    own = await use(client, "pkjwt", request_uri)
    assert ["par-state"] == final_params(own)["state"]
    assert 1 == len([p for p in legacy.recorder.paths() if p.startswith("/authorize")])
    again = await use(client, "pkjwt", request_uri)
    assert (400, "invalid_request_uri") == (again.status, (await again.json())["error"])
    assert "Location" not in again.headers
    assert 1 == len([p for p in legacy.recorder.paths() if p.startswith("/authorize")])


async def test_client_that_must_push_cannot_send_by_value(
    client: TestClient[Any, Any], legacy: Legacy
) -> None:
    """require_pushed_authorization_requests: a request by value is invalid_request."""
    token = sign(Claims("must-par").build(), "ES256", key=PK)
    response = await client.get(
        "/authorize?" + urlencode({"client_id": "must-par", "request": token}),
        allow_redirects=False,
    )
    assert (400, "invalid_request") == (response.status, (await response.json())["error"])
    assert [] == legacy.recorder.requests


async def test_require_par_for_everyone_and_report_mode(
    aiohttp_client: AiohttpClient, legacy: Legacy, store: Store
) -> None:
    """JARGATE_REQUIRE_PAR refuses other requests; in report mode they pass and are counted."""
    plain = {"client_id": "post", "response_type": "code", "redirect_uri": REDIRECT}
    client = await par_gateway(aiohttp_client, legacy, store, require_par=True)
    refused = await client.get("/authorize?" + urlencode(plain), allow_redirects=False)
    assert "error=invalid_request" in refused.headers["Location"]
    assert [] == legacy.recorder.requests
    discovery = await (await client.get("/.well-known/openid-configuration")).json()
    assert discovery["require_pushed_authorization_requests"] is True
    assert PAR_URL == discovery["pushed_authorization_request_endpoint"]
    metrics = Metrics()
    reporting = await par_gateway(
        aiohttp_client, legacy, store, require_par=True, enforcement="report", metrics=metrics
    )
    passed = await reporting.get("/authorize?" + urlencode(plain), allow_redirects=False)
    assert "code=" in passed.headers["Location"]
    assert 'error="invalid_request",outcome="reported"' in metrics.render().decode()
