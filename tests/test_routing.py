"""The gateway's own paths in every spelling and under every method (proxy/routing.py).

A server stack behind the gateway may route many spellings of a path to the same handler;
each row names the stack that would. Every refusal asserts its error, that the gateway
answered itself, and that the upstream received nothing.
"""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient
from hypothesis import given
from hypothesis import strategies as st

from proxy.routing import route_key
from tests.conftest import GatewayFactory, Jar, Legacy
from tests.support import raw_url

#: Spellings of /authorize, and the server stacks that route each of them to it.
SPELLINGS = {
    "/AUTHORIZE": "IIS, AD FS, Express (case-insensitive routing)",
    "/Authorize/": "IIS; Express non-strict routing",
    "/authorize.json": "Spring suffix pattern matching, Rails formats",
    "/authorize.do": "Spring suffix pattern matching",
    "/authorize%20": "IIS / Windows (trailing space ignored)",
    "/authorize.": "IIS / Windows (trailing dot ignored)",
    "/authorize%09": "trailing whitespace, trimmed by several frameworks",
    "/authorize%00.json": "C servers that end a path at NUL",
    "/authorize%0A": "a line break (servers that read a path up to one)",
    "/authorize%0D%0A": "CRLF",
    "/%61uthorize": "every server that percent-decodes letters",
    "/%41UTHORIZE": "percent-encoded and upper case",
    "/authorize%2F": "WSGI servers (gunicorn) decode %2F into /",
    "/x%2F..%2Fauthorize": "dot segments hidden behind %2F",
    "/x/%2e%2e/authorize": "%2E dot segments",
    "/%5Cauthorize": "IIS: backslash is a separator",
    "/%252Fauthorize": "double decoding (a proxy in front decodes once more)",
    "//authorize": "nginx merge_slashes",
    "///authorize//": "nginx merge_slashes",
    "/authorize;jsessionid=1": "Tomcat path parameters",
    "/authorize;a=b/": "Tomcat path parameters",
    "/./authorize": "dot segments",
    "/x/../authorize": "dot segments",
    "/%EF%BD%81uthorize": "NFKC: fullwidth letters",
    "/" + "x/" * 200 + "../" * 200 + "authorize": "longer than the cached spellings",
}
#: Paths that are not the authorization endpoint on any of those stacks.
OTHERS = ["/authorized", "/authorize/more", "/x/authorize", "/authorizeX", "/auth", "/"]


async def get(client: TestClient[Any, Any], target: str, method: str = "GET") -> ClientResponse:
    return await client.session.request(method, raw_url(client, target), allow_redirects=False)


async def assert_gateway_refused(
    response: ClientResponse, legacy: Legacy, status: int, error: str
) -> None:
    assert legacy.recorder.requests == [], "the upstream must receive nothing"
    assert "Location" not in response.headers
    assert (status, error) == (response.status, (await response.json())["error"])


@pytest.mark.parametrize("path", list(SPELLINGS), ids=list(SPELLINGS.values()))
async def test_every_spelling_of_the_authorization_path_is_the_gateways(
    jar: Jar, legacy: Legacy, path: str
) -> None:
    """A plain request from a client that must sign is refused in every spelling of the path."""
    client = await jar()
    response = await get(client, f"{path}?client_id=strict&response_type=code")
    await assert_gateway_refused(response, legacy, 400, "invalid_request")


@pytest.mark.parametrize(
    "path", ["/o%2Fauthorize/", "/o/authorize%2F", "/O/Authorize", "/o//authorize"]
)
async def test_spellings_of_a_path_with_a_prefix(jar: Jar, legacy: Legacy, path: str) -> None:
    """django-oauth-toolkit's /o/authorize/ under gunicorn: %2F and a missing or doubled
    slash reach its view, so they are the gateway's too."""
    client = await jar(authorization_path="/o/authorize/")
    response = await get(client, f"{path}?client_id=strict&response_type=code")
    await assert_gateway_refused(response, legacy, 400, "invalid_request")


@pytest.mark.parametrize("path", OTHERS)
async def test_other_paths_pass_through(gateway: GatewayFactory, legacy: Legacy, path: str) -> None:
    """Paths that no stack routes to the authorization endpoint reach the upstream as sent."""
    client = await gateway()
    response = await get(client, f"{path}?client_id=strict")
    assert 200 == response.status
    assert [f"{path}?client_id=strict"] == legacy.recorder.paths()


@pytest.mark.parametrize(
    "method", ["HEAD", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "PROPFIND"]
)
@pytest.mark.parametrize("path", ["/authorize", "/AUTHORIZE", "/authorize/"])
async def test_other_methods_on_the_authorization_path_are_405(
    jar: Jar, legacy: Legacy, method: str, path: str
) -> None:
    """Any method but GET and POST at the authorization endpoint is answered 405 with Allow,
    never forwarded: frameworks answer HEAD with their GET handler."""
    client = await jar()
    response = await get(client, f"{path}?client_id=strict&response_type=code", method)
    assert legacy.recorder.requests == []
    assert (405, "GET, POST") == (response.status, response.headers["Allow"])
    if method != "HEAD":
        assert "invalid_request" == (await response.json())["error"]


@pytest.mark.parametrize(
    ("path", "method", "allow"),
    [
        ("/par", "GET", "POST"),
        ("/par", "PUT", "POST"),
        ("/PAR/", "DELETE", "POST"),
        ("/.well-known/openid-configuration", "POST", "GET, HEAD"),
        ("/.well-known/jargate/jwks.json", "PUT", "GET, HEAD"),
        ("/healthz", "DELETE", "GET, HEAD"),
    ],
)
async def test_other_methods_on_owned_paths_are_405(
    gateway: GatewayFactory, legacy: Legacy, path: str, method: str, allow: str
) -> None:
    """Each owned path answers only its own methods; the rest get 405, never the upstream."""
    client = await gateway()
    response = await get(client, path, method)
    assert (405, allow) == (response.status, response.headers["Allow"])
    assert [] == [r for r in legacy.recorder.requests if "well-known" not in r.raw_path]


async def test_head_on_discovery_is_answered_without_a_body(gateway: GatewayFactory) -> None:
    """HEAD on a GET-only owned path is answered like GET, without the body."""
    client = await gateway()
    response = await get(client, "/.well-known/jargate/jwks.json", "HEAD")
    assert (200, b"") == (response.status, await response.read())


_SEGMENT_SPELLINGS = st.sampled_from(
    [
        "authorize",
        "AUTHORIZE",
        "Authorize",
        "%61uthorize",
        "authoriz%65",
        "authorize;x=1",
        "authorize.json",
        "authorize%20",
        "authorize.",
    ]
)


@given(
    st.lists(st.sampled_from(["", ".", "x/..", "%2e", "a/%2E%2E"]), max_size=3),
    _SEGMENT_SPELLINGS,
    st.sampled_from(["", "/", "//", "%2F", "\\"]),
)
def test_route_key_folds_each_spelling_to_the_owned_path(
    before: list[str], segment: str, trailing: str
) -> None:
    """Any combination of dot segments, encodings, case, parameters and suffixes folds to
    the owned path's key."""
    path = "/" + "/".join([*before, segment]) + trailing
    assert route_key("/authorize") == route_key(path)
