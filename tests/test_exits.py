"""However the upstream sends a flow's response back, it reaches the client only through
the gateway's response builder: a redirect, a Refresh header, an auto-posting form, a meta
refresh or a script; the handle plain or percent-encoded; the client on any host.

The upstream is the legacy server's ``/scripted`` route (tests/legacy_upstream.py), set
as the authorization endpoint where the gateway's own call must be answered that way.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient
from joserfc import jwt
from joserfc.jwk import KeySet

from proxy.clients import load_registry
from proxy.flows import HANDLE_PREFIX
from tests.conftest import AiohttpClient, Legacy
from tests.jar import ISSUER, REDIRECT, Claims, private_key, public_jwks, sign
from tests.support import make_settings, upstream_code_of

SIG = private_key("p256", "exits")
CLIENTS = [
    {
        "client_id": "jarm",
        "jwks": public_jwks(SIG),
        "redirect_uris": [REDIRECT, f"{ISSUER}/client/cb"],
        "authorization_signed_response_alg": "ES256",
    },
]


async def gateway(
    aiohttp_client: AiohttpClient, legacy: Legacy, **settings: Any
) -> TestClient[Any, Any]:
    from proxy.app import create_app
    from proxy.keyring import Keyring

    full = make_settings(legacy.url, clients=json.dumps({"clients": CLIENTS}), **settings)
    app = create_app(full, registry=load_registry(full), keyring=Keyring.throwaway(["ES256"]))
    return await aiohttp_client(app)


async def jarm_claims(client: TestClient[Any, Any], token: str) -> dict[str, Any]:
    keys = KeySet.import_key_set(await (await client.get("/.well-known/jargate/jwks.json")).json())
    return dict(jwt.decode(token, keys).claims)


def response_token(response: ClientResponse, body: str) -> str:
    """The JARM ``response`` from a redirect or a form_post page."""
    if response.status == 302:
        return parse_qs(urlsplit(response.headers["Location"]).query)["response"][0]
    assert 200 == response.status
    return body.split('name="response" value="', 1)[1].split('"', 1)[0]


@pytest.mark.parametrize(
    "answer",
    [
        {"page": "form", "to": REDIRECT, "fields": '[["code", "c1"], ["state", "{state}"]]'},
        {"page": "meta", "to": REDIRECT + "?code=c1&state={state}"},
        {"page": "script", "to": REDIRECT + "?code=c1&state={state}"},
        {"refresh": "1", "to": REDIRECT + "?code=c1&state={state}"},
    ],
    ids=["auto-posting-form", "meta-refresh", "script", "refresh-header"],
)
@pytest.mark.parametrize("mode", ["query.jwt", "form_post.jwt"])
async def test_upstream_pages_that_answer_the_flow_are_wrapped(
    aiohttp_client: AiohttpClient, legacy: Legacy, answer: dict[str, str], mode: str
) -> None:
    """An upstream that answers the gateway's call with a page sending the code on (its own
    form_post, a meta refresh, a script, a Refresh header): the client gets the gateway's
    signed response, never the upstream's page."""
    client = await gateway(aiohttp_client, legacy, authorization_path="/scripted")
    claims = Claims("jarm").build(response_mode=mode, state="s1", aud=ISSUER, **answer)
    response = await client.get(
        "/scripted",
        params={"client_id": "jarm", "request": sign(claims, "ES256", key=SIG)},
        allow_redirects=False,
    )
    body = await response.text()
    assert HANDLE_PREFIX not in body + response.headers.get("Location", "")
    assert "Refresh" not in response.headers
    payload = await jarm_claims(client, response_token(response, body))
    code = upstream_code_of(client, payload["code"])
    assert ("c1", "s1", ISSUER) == (code, payload["state"], payload["iss"])


async def start_waiting(client: TestClient[Any, Any], **claims: Any) -> str:
    """A flow waiting at the login page; returns its handle."""
    token = sign(Claims("jarm").build(prompt="login", aud=ISSUER, **claims), "ES256", key=SIG)
    response = await client.get(
        "/authorize", params={"client_id": "jarm", "request": token}, allow_redirects=False
    )
    saved = parse_qs(urlsplit(response.headers["Location"]).query)["return"][0]
    return parse_qs(urlsplit(saved).query)["state"][0]


async def scripted(client: TestClient[Any, Any], **query: str) -> ClientResponse:
    return await client.get("/scripted?" + urlencode(query), allow_redirects=False)


@pytest.mark.parametrize("spelling", ["jgf%5F", "jgf%5f", "%6Agf_"])
async def test_percent_encoded_handle_is_recognised(
    aiohttp_client: AiohttpClient, legacy: Legacy, spelling: str
) -> None:
    """A handle the upstream percent-encodes in its redirect still completes the flow
    through the gateway (never the raw code to the client)."""
    client = await gateway(aiohttp_client, legacy)
    handle = await start_waiting(client, response_mode="query.jwt", state="s2")
    encoded = spelling + quote(handle[len(HANDLE_PREFIX) :], safe="")
    response = await scripted(client, status="302", location=f"{REDIRECT}?code=c2&state={encoded}")
    assert "response=" in response.headers["Location"]
    assert "code=" not in response.headers["Location"]


async def test_plain_client_gets_exactly_one_iss_the_issuer(
    aiohttp_client: AiohttpClient, legacy: Legacy
) -> None:
    """An upstream iss (another issuer, or a second one) never reaches a plain-mode client:
    it gets exactly one iss, the gateway's issuer (RFC 9207)."""
    client = await gateway(aiohttp_client, legacy)
    handle = await start_waiting(client, state="s3")
    location = f"{REDIRECT}?code=c3&state={handle}&iss=https%3A%2F%2Fevil.example&iss=x"
    response = await scripted(client, status="302", location=location)
    assert [ISSUER] == parse_qs(urlsplit(response.headers["Location"]).query)["iss"]


async def test_host_header_cannot_make_a_callback_look_internal(
    aiohttp_client: AiohttpClient, legacy: Legacy
) -> None:
    """With ``Host:`` the client's redirect host, the upstream's callback is still the
    flow's response, completed by the gateway."""
    client = await gateway(aiohttp_client, legacy)
    handle = await start_waiting(client, response_mode="query.jwt", state="s4")
    response = await client.get(
        "/scripted?"
        + urlencode({"status": "302", "location": f"{REDIRECT}?code=c4&state={handle}"}),
        headers={"Host": "rp.example"},
        allow_redirects=False,
    )
    assert "response=" in response.headers["Location"]


async def test_client_on_the_issuers_host_is_completed(
    aiohttp_client: AiohttpClient, legacy: Legacy
) -> None:
    """A client whose redirect URI is on the issuer's own host gets the gateway's response:
    a registered redirect URI is an exit even there."""
    client = await gateway(aiohttp_client, legacy)
    own = f"{ISSUER}/client/cb"
    handle = await start_waiting(client, response_mode="query.jwt", redirect_uri=own)
    response = await scripted(client, status="302", location=f"{own}?code=c5&state={handle}")
    assert response.headers["Location"].startswith(own + "?response=")


async def test_gateway_pages_carry_only_their_own_policy(
    aiohttp_client: AiohttpClient, legacy: Legacy
) -> None:
    """The form_post page the gateway writes keeps its own CSP only (an upstream's, helmet's
    `script-src 'self'`, would block its submit); the upstream's cookies still pass."""
    client = await gateway(aiohttp_client, legacy)
    handle = await start_waiting(client, response_mode="form_post.jwt")
    response = await scripted(
        client,
        status="302",
        location=f"{REDIRECT}?code=c6&state={handle}",
        csp="script-src 'self'; form-action 'self'",
        cookie="idp_session=1; Path=/",
    )
    (csp,) = response.headers.getall("Content-Security-Policy")
    assert "form-action https://rp.example" in csp
    assert "idp_session=1; Path=/" in response.headers.getall("Set-Cookie")


async def test_consent_page_posting_back_to_the_gateway_is_relayed_untouched(
    aiohttp_client: AiohttpClient, legacy: Legacy
) -> None:
    """A page whose form carries the handle back to the authorization URL (a consent page)
    is the upstream's own: relayed as it came, the flow stored and bound to the browser."""
    client = await gateway(aiohttp_client, legacy, authorization_path="/scripted")
    fields = '[["state", "{state}"], ["allow", "yes"]]'
    claims = Claims("jarm").build(page="form", to="/scripted", fields=fields, aud=ISSUER)
    response = await client.get(
        "/scripted",
        params={"client_id": "jarm", "request": sign(claims, "ES256", key=SIG)},
        allow_redirects=False,
    )
    body = await response.text()
    assert 200 == response.status
    assert 'action="/scripted"' in body
    assert HANDLE_PREFIX in body
    assert any("jargate-flow=" in c for c in response.headers.getall("Set-Cookie"))
