"""Interoperability with real identity providers no one on the team wrote, through jargate:
django-oauth-toolkit (consent page on, django.contrib.auth's login form),
django-oidc-provider (its consent page, the same login form) and django-allauth's OpenID
provider (its own login form and consent page), each under gunicorn (:mod:`tests.idp`).
A browser (:mod:`tests.browser`) logs in and consents as a person would; Authlib
(:mod:`tests.idp.client`) exchanges the code at the provider's token endpoint through
the gateway and validates the ID token.

Each refusal asserts the error, where it went (the gateway's page, or the client's
redirect URI), that no code was delivered, and that the provider received nothing: its
own record of every request (:mod:`tests.idp.recorder`) did not grow.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator, Iterator
from functools import cache
from urllib.parse import urlencode

import aiohttp
import pytest
from joserfc.jwk import RSAKey
from yarl import URL

from proxy.app import create_app
from proxy.clients import load_registry
from proxy.keyring import Keyring
from proxy.store import MemoryStore
from tests.browser import Browser, query_of
from tests.conftest import AiohttpServer
from tests.idp import process
from tests.idp.client import (
    REDIRECT_URI,
    SECRET,
    Request,
    redeem,
    verify_jarm,
)
from tests.idp.peers import (
    UPSTREAM_CLIENTS,
    Peers,
    authorization_url,
    completed,
    consented,
    gateway_registry,
    signed,
)
from tests.idp.process import IdentityProvider
from tests.idp.provision import PASSWORD, USERNAME
from tests.support import free_port, make_settings

pytestmark = pytest.mark.slow


@cache
def gateway_keys() -> Keyring:
    return Keyring.throwaway(["PS256"])


@pytest.fixture(scope="module", params=list(process.NAMES), ids=list(process.NAMES.values()))
def provider(request: pytest.FixtureRequest) -> Iterator[IdentityProvider]:
    """The provider, started once per module with its issuer at the gateway's origin."""
    origin = f"http://127.0.0.1:{free_port()}"
    clients = [
        {"client_id": client_id, "client_secret": SECRET, "redirect_uris": [REDIRECT_URI]}
        for client_id in UPSTREAM_CLIENTS
    ]
    idp = process.start(request.param, origin, clients)
    yield idp
    # Shown with the output of a failing test: what the provider logged.
    print(f"{process.NAMES[idp.server]} log:\n{idp.stop()}")


@pytest.fixture
async def peers(
    provider: IdentityProvider,
    aiohttp_server: AiohttpServer,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> Peers:
    """jargate (memory store) at the origin the provider's issuer names."""
    monkeypatch.setenv("AUTHLIB_INSECURE_TRANSPORT", "1")  # the loopback issuer is http
    settings = make_settings(
        provider.url,
        issuer=provider.issuer,
        authorization_path=provider.paths.authorization,
        token_path=provider.paths.token,
        upstream_jwks_path=provider.paths.jwks,
        clients=json.dumps({"clients": gateway_registry()}),
    )
    app = create_app(
        settings, registry=load_registry(settings), keyring=gateway_keys(), store=MemoryStore()
    )
    port = int(provider.gateway_origin.rsplit(":", 1)[1])
    await aiohttp_server(app, port=port)
    return Peers(provider, len(provider.received()))


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """A fresh browser (no session at the provider yet) that knows alice's password."""
    credentials = {"username": USERNAME, "login": USERNAME, "password": PASSWORD}
    person = Browser(REDIRECT_URI, credentials)
    yield person
    await person.close()


# ---------------------------------------------------------------- flows that work


@pytest.mark.parametrize("mode", ["query.jwt", "form_post.jwt"])
@pytest.mark.parametrize("client_id", ["jar-ps256", "jar-es256"])
async def test_jar_by_value_through_login_and_consent(
    peers: Peers, browser: Browser, client_id: str, mode: str
) -> None:
    """JAR by value (PS256, ES256) with query.jwt and form_post.jwt: login, consent, a
    verified JARM response, the code exchanged through the gateway, the ID token valid."""
    request = Request(client_id, response_mode=mode)
    arrival = await browser.visit(await authorization_url(peers, request, "value"))
    assert ("POST" if mode == "form_post.jwt" else "GET") == arrival.method, arrival.trail
    await completed(peers, request, arrival)
    assert consented(peers)


async def test_par_with_a_signed_request_object(peers: Peers, browser: Browser) -> None:
    """PAR with a signed request object, the client authenticated with private_key_jwt at
    the gateway's PAR endpoint; only client_id and request_uri travel through the browser."""
    request = Request("jar-es256", response_mode="jwt")
    url = await authorization_url(peers, request, "par-signed")
    assert {"client_id", "request_uri"} == set(query_of(url))
    await completed(peers, request, await browser.visit(url))
    assert consented(peers)


async def test_par_with_plain_parameters(peers: Peers, browser: Browser) -> None:
    """PAR with plain parameters, the client authenticated with client_secret_basic; the
    response carries the client's state and iss."""
    request = Request("par-basic")
    url = await authorization_url(peers, request, "par-plain")
    await completed(peers, request, await browser.visit(url))
    assert consented(peers)


async def test_plain_flow_of_a_registered_client(peers: Peers, browser: Browser) -> None:
    """A registered client without keys sends a plain request: the gateway forwards it
    under a flow handle (the provider never sees the client's state) and restores the
    client's state in the response, adding iss (RFC 9207)."""
    request = Request("plain-rp")
    await completed(
        peers, request, await browser.visit(await authorization_url(peers, request, "plain"))
    )
    assert consented(peers)
    assert all(request.state not in line for line in peers.received())


async def test_plain_flow_of_an_unregistered_client(peers: Peers, browser: Browser) -> None:
    """A client the gateway does not know passes through untouched: the provider receives
    the browser's own request, its state included, and the code works."""
    request = Request("unregistered-rp")
    url = await authorization_url(peers, request, "plain")
    arrival = await browser.visit(url)
    assert arrival.at_redirect_uri, arrival.trail
    assert request.state == arrival.params["state"]
    assert "GET " + url.removeprefix(peers.idp.gateway_origin) == peers.received()[0]
    _, claims = await redeem(peers.rp("unregistered-rp"), request, arrival.params["code"])
    assert (peers.issuer, request.nonce) == (claims["iss"], claims["nonce"])
    assert consented(peers)


@pytest.mark.parametrize(
    ("client_id", "how"),
    [("jar-es256", "value"), ("jar-es256", "par-signed"), ("plain-rp", "plain")],
    ids=["jar-by-value", "par", "plain-registered"],
)
async def test_a_signed_in_user_consents_again(
    peers: Peers, browser: Browser, client_id: str, how: str
) -> None:
    """A second authorization in a browser already signed in to the provider (single
    sign-on): the provider answers the gateway's authorization URL with its consent page
    at once, the consent is posted back to that URL, and the flow completes."""
    first = Request("plain-rp")
    await completed(
        peers, first, await browser.visit(await authorization_url(peers, first, "plain"))
    )
    seen = len(peers.received())
    request = Request(client_id, response_mode="query.jwt" if how != "plain" else None)
    arrival = await browser.visit(await authorization_url(peers, request, how))
    again = peers.received()[seen:]
    assert not any(line.startswith("GET /accounts/login/") for line in again), again
    await completed(peers, request, arrival)


async def test_the_providers_discovery_names_the_gateways_issuer(peers: Peers) -> None:
    """The provider's own discovery document, passed through, names the issuer the gateway
    serves and the provider's JWKS at the gateway's origin."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(peers.url(peers.idp.paths.discovery)) as answer,
    ):
        metadata = await answer.json()
    assert (peers.issuer, peers.jwks_url) == (metadata["issuer"], metadata["jwks_uri"])
    if peers.idp.paths.discovery == "/.well-known/openid-configuration":
        # At the origin's own discovery path the gateway serves the provider's document
        # with what it adds (django-allauth's issuer is the origin).
        assert peers.url("/par") == metadata["pushed_authorization_request_endpoint"]


# ---------------------------------------------------------------- refusals


async def refused_on_page(peers: Peers, browser: Browser, url: str, error: str) -> None:
    """The gateway answers ``url`` with its own error page (400, ``error``); the provider
    receives nothing and no code is delivered."""
    seen = len(peers.received())
    arrival = await browser.visit(url)
    assert (400, error) == (arrival.status, arrival.gateway_error()), arrival.trail
    assert 1 == len(arrival.trail), arrival.trail
    assert seen == len(peers.received()), peers.received()[seen:]
    assert not arrival.at_redirect_uri


def tampered(token: str) -> str:
    """``token`` with its scope changed after signing."""
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["scope"] = "openid admin"
    changed = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{changed}.{signature}"


FOREIGN_KEY = RSAKey.generate_key(2048, parameters={"kid": "rp-ps256"})


async def test_tampered_request_object_is_refused(peers: Peers, browser: Browser) -> None:
    """A request object changed after signing: the gateway's page, invalid_request_object."""
    request = Request("jar-ps256", response_mode="query.jwt")
    query = {"client_id": "jar-ps256", "request": tampered(signed(peers, request))}
    url = f"{peers.authorization_url}?{urlencode(query)}"
    await refused_on_page(peers, browser, url, "invalid_request_object")


async def test_expired_request_object_is_refused(peers: Peers, browser: Browser) -> None:
    """A request object whose exp has passed (beyond the skew): invalid_request_object."""
    now = int(time.time())
    request = Request("jar-ps256", response_mode="query.jwt")
    url = await authorization_url(
        peers, request, "value", exp=now - 120, iat=now - 600, nbf=now - 600
    )
    await refused_on_page(peers, browser, url, "invalid_request_object")


async def test_request_object_signed_with_a_foreign_key_is_refused(
    peers: Peers, browser: Browser
) -> None:
    """A request object signed with a key the client never registered (under the
    registered key's kid): invalid_request_object."""
    request = Request("jar-ps256", response_mode="query.jwt")
    token = request.request_object(FOREIGN_KEY, "PS256", peers.issuer)
    url = f"{peers.authorization_url}?{urlencode({'client_id': 'jar-ps256', 'request': token})}"
    await refused_on_page(peers, browser, url, "invalid_request_object")


async def test_replayed_request_object_is_refused(peers: Peers, browser: Browser) -> None:
    """A request object used once (the flow completed) and sent again: a JARM error to the
    object's redirect URI (verified, so trusted), invalid_request_object, no code."""
    request = Request("jar-ps256", response_mode="query.jwt")
    url = await authorization_url(peers, request, "value")
    await completed(peers, request, await browser.visit(url))
    seen = len(peers.received())
    arrival = await browser.visit(url)
    assert seen == len(peers.received()), peers.received()[seen:]
    assert arrival.at_redirect_uri, arrival.trail
    response = await verify_jarm(
        arrival.params["response"], peers.jwks_url, peers.issuer, "jar-ps256", "PS256"
    )
    assert ("invalid_request_object", request.state) == (response["error"], response["state"])
    assert "code" not in response


async def test_used_request_uri_is_refused(peers: Peers, browser: Browser) -> None:
    """A request_uri whose flow completed, used again: the gateway's page,
    invalid_request_uri."""
    request = Request("par-basic")
    url = await authorization_url(peers, request, "par-plain")
    await completed(peers, request, await browser.visit(url))
    await refused_on_page(peers, browser, url, "invalid_request_uri")


async def test_plain_request_from_a_must_sign_client_is_refused_in_every_spelling(
    peers: Peers, browser: Browser
) -> None:
    """A plain request from a client that must sign, at the authorization path and at the
    spellings the provider itself routes to its authorization endpoint: an error redirect
    (invalid_request) to the registered redirect URI it names, and the provider receives
    nothing."""
    paths = peers.idp.paths
    for path in (paths.authorization, *paths.spellings):
        query = urlencode(Request("jar-ps256").parameters())
        async with (
            aiohttp.ClientSession() as direct,
            direct.get(
                URL(f"{peers.idp.url}{path}?{query}", encoded=True), allow_redirects=False
            ) as answer,
        ):
            # Sent to the provider itself, it reaches its authorization endpoint (login).
            assert answer.headers["Location"].startswith("/accounts/login/?next="), path
        seen = len(peers.received())
        arrival = await browser.visit(f"{peers.idp.gateway_origin}{path}?{query}")
        assert arrival.at_redirect_uri, (path, arrival.trail)
        assert ("invalid_request", peers.issuer) == (arrival.params["error"], arrival.params["iss"])
        assert "code" not in arrival.params
        assert seen == len(peers.received()), (path, peers.received()[seen:])
