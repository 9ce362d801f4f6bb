"""Reading the authorization request as every server behind the gateway would.

The gateway decides from what it reads; the upstream acts on what it reads. Each case is
a way two server stacks could read one request differently (a client_id another lookup
folds to a registered one, a parameter name a framework folds, a separator, an encoding, a
body the gateway would not read): refused before anything reaches the upstream. Requests of
unregistered clients that are not ambiguous pass untouched.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from typing import Any

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

from proxy.clients import ClientRegistry, RegistryError, fold_identifier, load_registry
from tests.conftest import GatewayFactory, Jar, Legacy
from tests.support import make_settings, raw_url


async def raw(
    client: TestClient[Any, Any], method: str, target: str, **kwargs: Any
) -> ClientResponse:
    return await client.session.request(
        method, raw_url(client, target), allow_redirects=False, **kwargs
    )


async def refused(response: ClientResponse, legacy: Legacy, status: int = 400) -> str:
    assert legacy.recorder.requests == [], "the upstream must receive nothing"
    assert "Location" not in response.headers
    body = await response.json()
    assert (status, "invalid_request") == (response.status, body["error"])
    return str(body["error_description"])


@pytest.mark.parametrize(
    "client_id",
    [
        "STRICT",
        "Strict",
        "strict%20",
        "%20strict",
        "strict%09",
        "%EF%BD%93trict",
        "str%C3%ADct",
        "strict%E2%80%8B",
        "s%C2%ADtrict",
        "strict%00",
    ],
    ids=[
        "upper",
        "title",
        "trailing-space",
        "leading-space",
        "tab",
        "fullwidth",
        "accent",
        "zero-width-space",
        "soft-hyphen",
        "nul",
    ],
)
async def test_client_id_equivalent_to_a_registered_one_is_refused(
    jar: Jar, legacy: Legacy, client_id: str
) -> None:
    """An unknown client_id that a case-, accent- or Unicode-folding lookup (MySQL's default
    collation) would find as a registered client is refused, never passed through as plain."""
    client = await jar()
    response = await raw(client, "GET", f"/authorize?client_id={client_id}&response_type=code")
    assert "exact identifier" in await refused(response, legacy)


def test_registry_refuses_clients_that_fold_together() -> None:
    """Two registered clients that differ only in case or Unicode form are refused at start."""
    clients = [{"client_id": "App"}, {"client_id": "app"}]
    with pytest.raises(RegistryError, match="differ only in case"):
        load_registry(make_settings(clients=json.dumps({"clients": clients})))
    assert fold_identifier("ａｐｐ\u200b ") == fold_identifier("APP")
    assert ClientRegistry([]).equivalent("x") is None


@pytest.mark.parametrize(
    "query",
    [
        "client_id=stranger&Client_ID=strict&response_type=code",
        "client_id=stranger&CLIENT_ID=strict&response_type=code",
        "client_id=stranger&client.id=strict&response_type=code",
        "client_id=stranger&client_id%5B%5D=strict&response_type=code",
        "client_id=stranger&client%20id=strict&response_type=code",
        "client_id=stranger&response_type=code&Request=x.y.z",
    ],
    ids=["mixed-case", "upper", "php-dot", "php-array", "space", "request"],
)
async def test_near_spellings_of_oauth_parameter_names_are_refused(
    jar: Jar, legacy: Legacy, query: str
) -> None:
    """ASP.NET reads names case-insensitively, PHP turns '.' and ' ' into '_' and '[]' into
    an array: a name that folds to an OAuth parameter's is refused."""
    client = await jar()
    response = await raw(client, "GET", f"/authorize?{query}")
    assert "not spelled" in await refused(response, legacy)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("client_id=stranger;client_id=strict&response_type=code", "';'"),
        ("client_id=%FF&response_type=code", "UTF-8"),
        ("client_id=strict%ED%A0%80&response_type=code", "UTF-8"),
        ("client_id=stranger&client_id=strict&response_type=code", "differs"),
    ],
    ids=["semicolon", "not-utf-8", "surrogate", "two-client-ids"],
)
async def test_ambiguous_queries_are_refused(
    jar: Jar, legacy: Legacy, query: str, expected: str
) -> None:
    """A raw ';' (a separator to some servers), bytes that are not UTF-8 (decoded as
    U+FFFD by one reader and as Latin-1 by another), two client_ids: refused."""
    client = await jar()
    response = await raw(client, "GET", f"/authorize?{query}")
    assert expected in await refused(response, legacy)


@pytest.mark.parametrize(
    ("body", "headers", "expected"),
    [
        (json.dumps({"client_id": "strict"}), {"Content-Type": "application/json"}, "must be"),
        ("client_id=strict", {"Content-Type": "text/plain"}, "must be"),
        (
            gzip.compress(b"client_id=strict"),
            {"Content-Type": "application/x-www-form-urlencoded", "Content-Encoding": "gzip"},
            "encoded",
        ),
        ("client_id=strict", {"Content-Type": "application/x-www-form-urlencoded"}, "differs"),
    ],
    ids=["json", "text", "gzip", "other-client-in-body"],
)
async def test_bodies_that_could_name_another_client_are_refused(
    jar: Jar, legacy: Legacy, body: str | bytes, headers: dict[str, str], expected: str
) -> None:
    """An unregistered client_id in the query with a body the gateway would not read (Rails,
    Laravel and Express merge JSON bodies into parameters) or that names another client."""
    client = await jar()
    response = await raw(
        client,
        "POST",
        "/authorize?client_id=stranger&response_type=code",
        data=body,
        headers=headers,
    )
    assert expected in await refused(response, legacy)


async def test_unregistered_consent_post_passes_untouched(
    gateway: GatewayFactory, legacy: Legacy
) -> None:
    """An unregistered client's consent form posted to the authorization URL, its
    parameters in both query and body, reaches the upstream byte for byte."""
    client = await gateway()
    target = (
        "/authorize?client_id=stranger&redirect_uri=https%3A%2F%2Fs.example%2Fcb&response_type=code"
    )
    body = (
        "csrfmiddlewaretoken=t&allow=Authorize&client_id=stranger"
        "&redirect_uri=https%3A%2F%2Fs.example%2Fcb"
    )
    response = await raw(
        client,
        "POST",
        target,
        data=body,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert 200 == response.status
    (received,) = legacy.recorder.requests
    assert ("POST", target) == (received.method, received.raw_path)
    assert hashlib.sha256(body.encode()).hexdigest() == received.body_sha256


async def test_consent_post_with_the_servers_own_request_field_passes_untouched(
    gateway: GatewayFactory, legacy: Legacy
) -> None:
    """django-allauth's consent form posts its own signed state as ``request`` (not a JWT)
    without client_id: the upstream's field, passed on byte for byte; a request object
    without client_id is still refused."""
    client = await gateway()
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    jwt_shaped = "csrfmiddlewaretoken=t&request=a.b.c&action=grant"
    response = await raw(client, "POST", "/authorize", data=jwt_shaped, headers=headers)
    assert "client_id is required" in await refused(response, legacy)
    body = "csrfmiddlewaretoken=t&request=eyJzY29wZXMiOlsib3BlbmlkIl19%3A1uX2Zq%3Asig&action=grant"
    response = await raw(client, "POST", "/authorize", data=body, headers=headers)
    assert 200 == response.status
    (received,) = legacy.recorder.requests
    assert ("POST", "/authorize") == (received.method, received.raw_path)
    assert hashlib.sha256(body.encode()).hexdigest() == received.body_sha256


@pytest.mark.parametrize(
    "value",
    ["", " ", ".b.c", "a..c", " a.b.c", "a.b.c\n", "a.b.c.d.e ", '{"payload":"e30"}'],
    ids=["empty", "blank", "no-header", "no-payload", "leading-space", "newline", "jwe", "json"],
)
@pytest.mark.parametrize("client_id", [None, "", "stranger"], ids=["absent", "empty", "unknown"])
async def test_a_request_any_jose_parser_might_read_never_passes_unverified(
    gateway: GatewayFactory, legacy: Legacy, value: str, client_id: str | None
) -> None:
    """From an absent, empty or unregistered client_id, a ``request`` that some lenient JOSE
    parser could take for a request object (empty, padded, empty segments, JSON serialized)
    is refused on the gateway's page, never forwarded as the upstream's own field."""
    client = await gateway()
    query = {"request": value, "response_type": "code"}
    if client_id is not None:
        query["client_id"] = client_id
    response = await client.get("/authorize", params=query, allow_redirects=False)
    assert legacy.recorder.requests == [], "the upstream must receive nothing"
    assert "Location" not in response.headers
    body = await response.json()
    if client_id:
        assert (400, "unauthorized_client") == (response.status, body["error"])
        assert "not registered for signed" in body["error_description"]
    else:
        assert (400, "invalid_request") == (response.status, body["error"])
        assert "client_id is required" in body["error_description"]


async def test_encoded_bodies_pass_through_as_sent(gateway: GatewayFactory, legacy: Legacy) -> None:
    """A gzip-encoded body to a path the gateway does not own reaches the upstream as the
    client encoded it (it is not decoded on the way)."""
    client = await gateway()
    plain = b"hello compressed request" * 100
    response = await client.post(
        "/upload", data=gzip.compress(plain), headers={"Content-Encoding": "gzip"}
    )
    assert 200 == response.status
    received = legacy.recorder.requests[-1]
    assert "gzip" == received.headers["Content-Encoding"]
    assert hashlib.sha256(plain).hexdigest() == received.body_sha256
