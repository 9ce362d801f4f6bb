"""PAR held to the same borders as the authorization endpoint: a pushed request's URL is
usable only by the browser that first used it and only until it expires; assertions are
NumericDates and Unicode; nothing is used up by a refusal."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

from tests.conftest import AiohttpClient, Legacy
from tests.test_par import PK, par_gateway, pkjwt_form, push, use


@pytest.fixture
async def client(aiohttp_client: AiohttpClient, legacy: Legacy) -> TestClient[Any, Any]:
    from proxy.store import MemoryStore

    return await par_gateway(aiohttp_client, legacy, MemoryStore(), par_ttl_seconds=2)


async def pushed(response: ClientResponse) -> str:
    assert 201 == response.status, await response.text()
    return str((await response.json())["request_uri"])


async def other_use(client: TestClient[Any, Any], request_uri: str) -> ClientResponse:
    """The same request_uri, from another browser (no cookies of the first)."""
    async with aiohttp.ClientSession() as browser:
        query = urlencode({"client_id": "pkjwt", "request_uri": request_uri})
        response = await browser.get(client.make_url("/authorize?" + query), allow_redirects=False)
        await response.read()
        return response


async def test_pushed_url_reloads_only_in_its_own_browser(
    client: TestClient[Any, Any], legacy: Legacy
) -> None:
    """After its first use (the user at the login page), a request_uri continues that flow in
    the same browser only; another browser is refused and leaves it usable by the first."""
    request_uri = await pushed(await push(client, pkjwt_form(prompt="login")))
    first = await use(client, "pkjwt", request_uri)
    assert first.headers["Location"].startswith("/login")
    seen = len(legacy.recorder.requests)
    stranger = await other_use(client, request_uri)
    assert (400, seen) == (stranger.status, len(legacy.recorder.requests))
    assert "invalid_request_uri" == json.loads(await stranger.text())["error"]
    again = await use(client, "pkjwt", request_uri)
    assert first.headers["Location"] == again.headers["Location"]


async def test_pushed_url_is_refused_once_expired_even_mid_flow(
    client: TestClient[Any, Any], legacy: Legacy
) -> None:
    """A request_uri is usable until its expires_in, for reloads too (not for the flow's
    whole lifetime): once expired it is refused."""
    request_uri = await pushed(await push(client, pkjwt_form(prompt="login")))
    assert (await use(client, "pkjwt", request_uri)).headers["Location"].startswith("/login")
    await asyncio.sleep(2.2)
    seen = len(legacy.recorder.requests)
    late = await use(client, "pkjwt", request_uri)
    assert (400, "invalid_request_uri") == (late.status, (await late.json())["error"])
    assert seen == len(legacy.recorder.requests)


@pytest.mark.parametrize("exp", ["NaN", "Infinity", "1e999", "1" + "0" * 40])
async def test_assertion_exp_must_be_a_finite_numeric_date(
    client: TestClient[Any, Any], legacy: Legacy, exp: str
) -> None:
    """NaN and numbers no float holds are refused in client assertions too (invalid_client)."""
    from tests.jar import sign_raw

    now = int(time.time())
    claims = {"iss": "pkjwt", "sub": "pkjwt", "aud": "http://127.0.0.1:8000", "iat": now}
    claims.update({"exp": 0, "jti": "j-" + exp})
    payload = json.dumps(claims).replace('"exp": 0', f'"exp": {exp}')
    forged = sign_raw({"alg": "ES256", "kid": PK.kid}, claims, PK, payload)  # type: ignore[arg-type]
    response = await push(client, pkjwt_form(client_assertion=forged))
    assert (401, "invalid_client") == (response.status, (await response.json())["error"])
    assert [] == [p for p in legacy.recorder.paths() if p.startswith("/authorize")]


async def test_surrogate_in_a_pushed_parameter_is_a_clean_400(
    client: TestClient[Any, Any], legacy: Legacy
) -> None:
    """A parameter that is not UTF-8 (an encoded lone surrogate) is a clean 400 at push, and
    the assertion it came with is not used up."""
    form = pkjwt_form()
    body = urlencode(form) + "&login_hint=%ED%A0%80"
    response = await client.post(
        "/par", data=body, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert (400, "invalid_request") == (response.status, (await response.json())["error"])
    assert 201 == (await push(client, form)).status
