"""Input limits: every breach is a clean 4xx with no traceback, and nothing reaches upstream."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import urlencode

import pytest
from aiohttp.test_utils import TestClient
from joserfc import jws

from proxy.limits import json_depth, loads_bounded
from tests.conftest import Jar, Legacy
from tests.jar import Claims, private_key, sign_raw


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = [value]
    return value


def deep_object(depth: int) -> str:
    """A validly signed request object whose claims nest ``depth`` deep (built as text:
    Python's own json module cannot write what it cannot read)."""
    claims = (
        json.dumps(Claims().build())[:-1] + ', "claims": ' + "[" * depth + "1" + "]" * depth + "}"
    )
    key = private_key("p256")
    return jws.serialize_compact(
        {"alg": "ES256", "kid": key.kid}, claims, key, algorithms=["ES256"]
    )


async def raw_request(client: TestClient[Any, Any], head: bytes) -> tuple[int, bytes]:
    """Send bytes the HTTP client libraries would refuse to build; return status and body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    writer.write(head)
    await writer.drain()
    response = await asyncio.wait_for(reader.read(), timeout=10)
    writer.close()
    status = int(response.split(b" ", 2)[1])
    return status, response


@pytest.mark.parametrize(
    "head",
    [
        b"GET /authorize?x=" + b"a" * 40_000 + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 40_000 + b"\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n"
        + b"".join(b"X-H%d: v\r\n" % i for i in range(150))
        + b"Connection: close\r\n\r\n",
    ],
    ids=["request-line", "header-field", "header-count"],
)
async def test_oversized_requests_are_a_clean_400(jar: Jar, legacy: Legacy, head: bytes) -> None:
    """Request line, header size and header count limits answer 400 without a traceback."""
    client = await jar()
    status, body = await raw_request(client, head)
    assert 400 == status
    assert b"Traceback" not in body
    assert [] == legacy.recorder.requests


async def test_too_many_parameters(jar: Jar, legacy: Legacy) -> None:
    """More than JARGATE_MAX_PARAMETERS parameters is invalid_request."""
    client = await jar()
    params = {f"p{i}": "v" for i in range(120)} | {"client_id": "app"}
    response = await client.get("/authorize?" + urlencode(params))
    assert (400, "invalid_request") == (response.status, (await response.json())["error"])
    assert [] == legacy.recorder.requests


@pytest.mark.parametrize("depth", [17, 5000, 40_000])
async def test_deeply_nested_request_object_is_refused(
    jar: Jar, legacy: Legacy, depth: int
) -> None:
    """JSON nested past JARGATE_MAX_JSON_DEPTH is refused before parsing (never a 500)."""
    client = await jar()
    token = deep_object(depth)
    response = await client.post("/authorize", data={"client_id": "app", "request": token})
    assert response.status in (400, 413)
    body = await response.json()
    assert body["error"] in ("invalid_request_object", "invalid_request")
    assert [] == legacy.recorder.requests


async def test_deeply_nested_header_is_refused(jar: Jar, legacy: Legacy) -> None:
    """The protected header is bounded the same way."""
    client = await jar()
    header = {"alg": "ES256", "kid": "p256", "x": nested(100)}
    token = sign_raw(header, Claims().build(), private_key("p256"))  # type: ignore[arg-type]
    response = await client.post("/authorize", data={"client_id": "app", "request": token})
    body = await response.json()
    assert (400, "invalid_request_object") == (response.status, body["error"])
    assert "nested deeper than 16" in body["error_description"]


def test_depth_counting_ignores_brackets_in_strings() -> None:
    """Brackets inside strings (and escaped quotes) do not count as nesting."""
    assert 2 == json_depth(b'{"a": ["[[[[", "\\"[[["]}')
    assert {"a": "[[[["} == loads_bounded(json.dumps({"a": "[[[["}).encode(), 1)


async def test_nested_assertion_at_par_is_invalid_client(jar: Jar, legacy: Legacy) -> None:
    """A client assertion nested too deep is refused like any bad assertion."""
    from tests.test_par import CLIENTS, PK

    client = await jar(extra_clients=[CLIENTS[0]])
    claims = '{"iss": "pkjwt", "sub": "pkjwt", "x": ' + "[" * 50 + "1" + "]" * 50 + "}"
    assertion = jws.serialize_compact(
        {"alg": "ES256", "kid": PK.kid}, claims, PK, algorithms=["ES256"]
    )
    response = await client.post(
        "/par",
        data={
            "client_id": "pkjwt",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": assertion,
            "response_type": "code",
        },
    )
    assert (401, "invalid_client") == (response.status, (await response.json())["error"])
    assert [] == legacy.recorder.requests
    assert private_key("p256", "pk").kid == "p256pk"
