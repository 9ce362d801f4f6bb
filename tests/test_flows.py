"""Flows that wait for a login: bound to their browser, resumable through real servers'
round trips, never altered on the way.

The legacy upstream answers ``prompt=login`` with its login page (``/login?return=...``),
whose sign-in sends the browser back to the authorization URL with the handle as
``state``; its POST /authorize records what it got. Each refusal asserts its error, that
the gateway answered itself, and that the upstream received nothing after the refused
request.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit

import aiohttp
import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

from proxy.flows import HANDLE_PREFIX
from tests.conftest import Jar, Legacy
from tests.jar import REDIRECT, Claims, location_params, sign
from tests.support import raw_url, upstream_code_of

Browser = Callable[..., Awaitable[ClientResponse]]


@pytest.fixture
async def other_browser() -> AsyncIterator[Callable[[TestClient[Any, Any]], Browser]]:
    """A second browser (its own cookie jar) on the same gateway."""
    sessions: list[aiohttp.ClientSession] = []

    def make(client: TestClient[Any, Any]) -> Browser:
        session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        sessions.append(session)

        async def request(method: str, path: str, **kwargs: Any) -> ClientResponse:
            return await session.request(
                method, client.make_url(path), allow_redirects=False, **kwargs
            )

        return request

    yield make
    for session in sessions:
        await session.close()


async def start(client: TestClient[Any, Any], **claims: Any) -> tuple[str, str]:
    """A signed request that waits at the login page: its saved authorization URL (the
    re-entry target, carrying the handle) and the handle."""
    token = sign(Claims().build(prompt="login", **claims), "ES256")
    response = await client.get(
        "/authorize", params={"client_id": "app", "request": token}, allow_redirects=False
    )
    assert 302 == response.status
    saved = parse_qs(urlsplit(response.headers["Location"]).query)["return"][0]
    (handle,) = parse_qs(urlsplit(saved).query)["state"]
    assert handle.startswith(HANDLE_PREFIX)
    return saved, handle


async def sign_in(client: TestClient[Any, Any]) -> None:
    """The upstream's login (its own session cookie), without following its redirect."""
    response = await client.get("/login?return=/nowhere", allow_redirects=False)
    assert 302 == response.status


async def raw(
    client: TestClient[Any, Any], method: str, target: str, **kwargs: Any
) -> ClientResponse:
    """A request whose target is sent exactly as written, in the client's browser."""
    return await client.session.request(
        method, raw_url(client, target), allow_redirects=False, **kwargs
    )


async def refused(response: ClientResponse, legacy: Legacy, seen: int, error: str) -> str:
    assert seen == len(legacy.recorder.requests), "the upstream must receive nothing more"
    assert "Location" not in response.headers
    body = await response.json()
    assert (400, error) == (response.status, body["error"])
    return str(body["error_description"])


# ---------------------------------------------------------------- the browser binding


async def test_waiting_flow_sets_a_binding_cookie_and_an_immediate_one_does_not(jar: Jar) -> None:
    """A flow that must wait gives its browser an HttpOnly, SameSite cookie (no Secure for
    a loopback http issuer); a flow the upstream answers at once sets none."""
    client = await jar()
    token = sign(Claims().build(), "ES256")
    at_once = await client.get(
        "/authorize", params={"client_id": "app", "request": token}, allow_redirects=False
    )
    assert "jargate-flow" not in at_once.headers.get("Set-Cookie", "")
    token = sign(Claims().build(prompt="login"), "ES256")
    waiting = await client.get(
        "/authorize", params={"client_id": "app", "request": token}, allow_redirects=False
    )
    (cookie,) = [c for c in waiting.headers.getall("Set-Cookie") if "jargate-flow=" in c]
    assert cookie.startswith("jargate-flow=")
    assert {"Path=/", "HttpOnly", "SameSite=Lax"} <= {p.strip() for p in cookie.split(";")}
    assert "Secure" not in cookie


async def test_https_issuer_binds_with_a_host_prefixed_secure_cookie(jar: Jar) -> None:
    """For an https issuer the cookie is __Host- prefixed and Secure (no sibling domain can
    set or read it); SameSite=None is available for cross-site federation."""
    client = await jar(issuer="https://idp.example", flow_cookie_samesite="none")
    token = sign(Claims().build(prompt="login", aud="https://idp.example"), "ES256")
    waiting = await client.get(
        "/authorize", params={"client_id": "app", "request": token}, allow_redirects=False
    )
    (cookie,) = [c for c in waiting.headers.getall("Set-Cookie") if "jargate-flow=" in c]
    assert cookie.startswith("__Host-jargate-flow=")
    assert {"Path=/", "HttpOnly", "Secure", "SameSite=None"} <= {
        p.strip() for p in cookie.split(";")
    }


async def test_another_browser_cannot_resume_the_flow(
    jar: Jar, legacy: Legacy, other_browser: Callable[[TestClient[Any, Any]], Browser]
) -> None:
    """A victim sent the link to someone else's waiting flow gets nothing: re-entry from a
    browser without the flow's cookie is refused."""
    attacker = await jar()
    saved, _ = await start(attacker)
    victim = other_browser(attacker)
    seen = len(legacy.recorder.requests)
    response = await victim("GET", saved)
    assert "another browser" in await refused(response, legacy, seen, "invalid_request")


async def test_another_browser_cannot_complete_the_flow(
    jar: Jar, legacy: Legacy, other_browser: Callable[[TestClient[Any, Any]], Browser]
) -> None:
    """The upstream's callback for a flow reached in another browser (login CSRF: the
    victim's session, the attacker's flow) is refused, the code never delivered; the flow's
    own browser completes it."""
    client = await jar()
    _, handle = await start(client)
    callback = f"{REDIRECT}?code=c1&state={handle}"
    victim = other_browser(client)
    response = await victim("GET", "/bounce?" + urlencode({"location": callback}))
    assert (400, "invalid_request") == (response.status, (await response.json())["error"])
    assert "Location" not in response.headers
    _, handle = await start(client)
    own = await client.get(
        "/bounce?" + urlencode({"location": f"{REDIRECT}?code=c2&state={handle}"}),
        allow_redirects=False,
    )
    (code,) = location_params(own)[1]["code"]
    assert (302, "c2") == (own.status, upstream_code_of(client, code))


async def test_forged_binding_cookie_does_not_help(
    jar: Jar, legacy: Legacy, other_browser: Callable[[TestClient[Any, Any]], Browser]
) -> None:
    """A browser that makes up its own binding value still is not the flow's browser."""
    client = await jar()
    saved, _ = await start(client)
    victim = other_browser(client)
    seen = len(legacy.recorder.requests)
    response = await victim("GET", saved, headers={"Cookie": "jargate-flow=" + "A" * 43})
    await refused(response, legacy, seen, "invalid_request")


# ---------------------------------------------------------------- re-entry as real servers do it


async def test_reentry_with_the_servers_own_parameter_passes(jar: Jar, legacy: Legacy) -> None:
    """A login page that returns to the authorization URL with a continuation parameter of
    its own: passed on as it came, and the flow completes."""
    client = await jar()
    saved, _ = await start(client, state="mine")
    await sign_in(client)
    response = await raw(client, "GET", saved + "&g_continue=1")
    assert saved + "&g_continue=1" == legacy.recorder.requests[-1].raw_path
    base, params = location_params(response)
    assert (REDIRECT, ["mine"]) == (base, params["state"])
    assert "code" in params


async def test_reentry_with_forwarded_parameters_missing_passes(jar: Jar, legacy: Legacy) -> None:
    """Parameters the gateway forwarded may come back absent (a server that keeps them in
    its session)."""
    client = await jar()
    _, handle = await start(client)
    response = await raw(client, "GET", f"/authorize?client_id=app&state={handle}")
    assert f"/authorize?client_id=app&state={handle}" == legacy.recorder.requests[-1].raw_path
    assert 400 == response.status  # the legacy server itself wants redirect_uri back


async def test_consent_form_posted_to_the_authorization_url_passes(
    jar: Jar, legacy: Legacy
) -> None:
    """django-oauth-toolkit's consent form has no action: it posts to the authorization URL
    with the whole query, and in the body its CSRF token, the user's choice and copies of
    the parameters. The upstream receives it byte for byte."""
    client = await jar()
    saved, handle = await start(client)
    query = parse_qs(urlsplit(saved).query)
    body = urlencode(
        {
            "csrfmiddlewaretoken": "t0k3n",
            "allow": "Authorize",
            "redirect_uri": query["redirect_uri"][0],
            "scope": query["scope"][0],
            "client_id": "app",
            "state": handle,
        }
    )
    response = await raw(
        client,
        "POST",
        saved,
        data=body,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert 200 == response.status
    received = legacy.recorder.requests[-1]
    assert ("POST", saved) == (received.method, received.raw_path)
    assert hashlib.sha256(body.encode()).hexdigest() == received.body_sha256


async def test_consent_form_with_empty_and_null_fields_passes(jar: Jar, legacy: Legacy) -> None:
    """django-oauth-toolkit's consent form sends the hidden fields of parameters the request
    did not have as empty (resource=) or JSON null (claims=null): absent (RFC 6749 section
    3.1), they pass; a claims request that was not in the flow is still refused."""
    client = await jar()
    saved, handle = await start(client)
    form = {"csrfmiddlewaretoken": "t0k3n", "state": handle, "claims": "null", "resource": ""}
    body = urlencode({**form, "allow": "Authorize"})
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    response = await raw(client, "POST", saved, data=body, headers=headers)
    assert 200 == response.status
    received = legacy.recorder.requests[-1]
    assert ("POST", saved) == (received.method, received.raw_path)
    seen = len(legacy.recorder.requests)
    added = urlencode({**form, "claims": '{"id_token":{"acr":null}}'})
    response = await raw(client, "POST", saved, data=added, headers=headers)
    assert "was not in" in await refused(response, legacy, seen, "invalid_request")


async def test_consent_form_posted_to_the_starting_url_passes(jar: Jar, legacy: Legacy) -> None:
    """A consent page shown at once (the user is signed in) and without action posts back to
    the URL the flow started from, the client's request in its query: the body alone
    resumes the flow and alone goes upstream, to the authorization path without the query."""
    client = await jar()
    token = sign(Claims().build(prompt="login"), "ES256")
    started = "/authorize?" + urlencode({"client_id": "app", "request": token})
    response = await raw(client, "GET", started)
    assert 302 == response.status
    saved = parse_qs(urlsplit(response.headers["Location"]).query)["return"][0]
    query = dict(parse_qsl(urlsplit(saved).query))
    body = urlencode({"csrfmiddlewaretoken": "t0k3n", "allow": "Authorize", **query})
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    response = await raw(client, "POST", started, data=body, headers=headers)
    assert 200 == response.status
    received = legacy.recorder.requests[-1]
    assert ("POST", "/authorize") == (received.method, received.raw_path)
    assert hashlib.sha256(body.encode()).hexdigest() == received.body_sha256
    seen = len(legacy.recorder.requests)
    changed = urlencode({**query, "scope": "openid admin"})
    response = await raw(client, "POST", started, data=changed, headers=headers)
    assert "differs" in await refused(response, legacy, seen, "invalid_request")


def _changed(saved: str, name: str, value: str) -> str:
    parts = urlsplit(saved)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    query = [(key, value if key == name else old) for key, old in pairs]
    return parts.path + "?" + urlencode(query)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda saved: _changed(saved, "scope", "openid admin"), "differs"),
        (lambda saved: _changed(saved, "redirect_uri", "https://evil.example/cb"), "differs"),
        (lambda saved: saved + "&max_age=0", "was not in"),
        (lambda saved: saved + "&login_hint=victim", "was not in"),
        (lambda saved: saved + "&request=a.b.c", "was not in"),
        (lambda saved: saved + "&response_mode=query", "was not in"),
        (lambda saved: saved + "&scope=openid", "repeated"),
        (lambda saved: saved + "&Redirect_URI=https://evil.example/cb", "not spelled"),
    ],
    ids=[
        "scope-changed",
        "redirect-uri-changed",
        "max-age-added",
        "login-hint-added",
        "request-added",
        "response-mode-added",
        "scope-repeated",
        "near-spelling",
    ],
)
async def test_reentry_that_changes_the_flow_is_refused(
    jar: Jar, legacy: Legacy, change: Callable[[str], str], expected: str
) -> None:
    """No OAuth parameter is changed, added or repeated on the way back."""
    client = await jar()
    saved, _ = await start(client)
    seen = len(legacy.recorder.requests)
    response = await raw(client, "GET", change(saved))
    assert expected in await refused(response, legacy, seen, "invalid_request")


@pytest.mark.parametrize(
    ("body", "headers", "expected"),
    [
        (lambda h: urlencode({"scope": "openid admin"}), {}, "differs"),
        (lambda h: urlencode({"state": h, "client_id": "other"}), {}, "differs"),
        (
            lambda h: json.dumps({"scope": "admin", "state": h}),
            {"Content-Type": "application/json"},
            "must be",
        ),
        (
            lambda h: gzip.compress(urlencode({"state": h}).encode()),
            {"Content-Encoding": "gzip"},
            "encoded",
        ),
        (
            lambda h: (
                f'--b\r\nContent-Disposition: form-data; name="state"\r\n\r\n{h}\r\n--b--\r\n'
            ),
            {"Content-Type": "multipart/form-data; boundary=b"},
            "must be",
        ),
        (
            lambda h: urlencode({"state": h}),
            {"Content-Type": "application/x-www-form-urlencoded; charset=latin-1"},
            "UTF-8",
        ),
        (lambda h: b"state=" + h.encode() + b"&x=%FF", {}, "UTF-8"),
    ],
    ids=[
        "body-changes-scope",
        "body-changes-client",
        "json-body",
        "gzip-body",
        "multipart-body",
        "latin-1",
        "bad-utf-8",
    ],
)
async def test_posted_reentry_is_covered_whole(
    jar: Jar,
    legacy: Legacy,
    body: Callable[[str], str | bytes],
    headers: dict[str, str],
    expected: str,
) -> None:
    """Whatever reaches the upstream's authorization endpoint is what the gateway checked:
    a body it cannot read as a UTF-8 form is refused, not forwarded (Rails, Laravel and
    Express merge JSON bodies into parameters)."""
    client = await jar()
    saved, handle = await start(client)
    seen = len(legacy.recorder.requests)
    headers = {"Content-Type": "application/x-www-form-urlencoded", **headers}
    response = await raw(client, "POST", saved, data=body(handle), headers=headers)
    assert expected in await refused(response, legacy, seen, "invalid_request")


async def test_unknown_handle_at_the_authorization_endpoint_is_refused(
    jar: Jar, legacy: Legacy
) -> None:
    """A state that looks like a handle but names no flow is refused, registered client or
    not (it is never passed upstream as if the gateway had made it)."""
    client = await jar()
    for client_id in ("app", "stranger"):
        response = await client.get(
            "/authorize",
            params={"client_id": client_id, "response_type": "code", "state": HANDLE_PREFIX + "x"},
            allow_redirects=False,
        )
        await refused(response, legacy, 0, "invalid_request")
