"""Property-based tests of the other surfaces: the PAR endpoint, headers, and the response
rewriting (whatever Location the upstream sends back). Never a 5xx; nothing accepted that
should not be; no unsigned response to a flow that asked for JARM."""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from aiohttp.test_utils import TestClient
from hypothesis import given
from hypothesis import strategies as st
from joserfc import jwt
from joserfc.jwk import KeySet

from proxy.app import create_app
from proxy.keyring import Keyring
from proxy.store import MemoryStore
from tests.conftest import AiohttpClient, Legacy
from tests.jar import REDIRECT, Claims, client_registry, sign
from tests.support import make_settings
from tests.test_par import CLIENTS as PAR_CLIENTS
from tests.test_par import pushed_params

pytestmark = pytest.mark.fuzz

KEYRING = Keyring.throwaway()
TEXT = st.text(max_size=60)
NAMES = st.sampled_from(
    [
        "client_id",
        "client_secret",
        "client_assertion",
        "client_assertion_type",
        "request",
        "request_uri",
        "response_type",
        "redirect_uri",
        "scope",
        "state",
        "code_challenge",
        "code_challenge_method",
        "x",
    ]
)


@pytest.fixture
async def fuzz_gateway(aiohttp_client: AiohttpClient, legacy: Legacy) -> TestClient[Any, Any]:
    """One gateway for all examples of a test."""
    registry = client_registry(extra_clients=PAR_CLIENTS[:4])
    app = create_app(
        make_settings(legacy.url), registry=registry, keyring=KEYRING, store=MemoryStore()
    )
    return await aiohttp_client(app)


@given(
    change=st.tuples(NAMES, TEXT),
    drop=st.none() | NAMES,
    authorization=st.none()
    | st.from_regex(r"\A[ -~]{0,60}\Z")
    | st.binary(max_size=40).map(lambda raw: "Basic " + base64.b64encode(raw).decode()),
    content_type=st.sampled_from(
        [
            "application/x-www-form-urlencoded",
            "application/json",
            "text/plain",
            "multipart/form-data",
        ]
    ),
)
async def test_par_endpoint_never_5xx_and_never_accepts_a_wrong_secret(
    fuzz_gateway: TestClient[Any, Any],
    change: tuple[str, str],
    drop: str | None,
    authorization: str | None,
    content_type: str,
) -> None:
    """A valid push, then one field changed or dropped, an Authorization header and a content
    type thrown in: below 500 always, and 201 only for the right client and secret."""
    form = {"client_id": "post", "client_secret": "s3cret-post", **pushed_params()}
    form[change[0]] = change[1]
    if drop is not None:
        form.pop(drop, None)
    headers = {"Content-Type": content_type}
    if authorization is not None:
        headers["Authorization"] = authorization
    response = await fuzz_gateway.post("/par", data=urlencode(form), headers=headers)
    assert response.status < 500
    if response.status == 201:
        assert form.get("client_secret") == "s3cret-post"
        assert form.get("client_id", "post") == "post"
        # Only a Basic attempt is client authentication; any other Authorization is ignored.
        assert not headers.get("Authorization", "").strip().lower().startswith("basic")


@given(
    headers=st.dictionaries(
        st.from_regex(r"\A[A-Za-z][A-Za-z0-9-]{0,20}\Z"),
        st.from_regex(r"\A[ -~]{0,80}\Z"),
        max_size=6,
    )
)
async def test_headers_never_cause_a_5xx(
    fuzz_gateway: TestClient[Any, Any], legacy: Legacy, headers: dict[str, str]
) -> None:
    """Arbitrary headers (forwarding headers, hosts, cookies) next to a valid request object."""
    legacy.recorder.requests.clear()
    token = sign(Claims().build(), "ES256")
    query = urlencode({"client_id": "app", "request": token})
    response = await fuzz_gateway.get(f"/authorize?{query}", headers=headers, allow_redirects=False)
    assert response.status < 500


LOCATIONS = st.one_of(
    st.just(REDIRECT),
    st.just("https://rp.example/cb2?keep=1"),
    st.just("https://evil.example/cb"),
    st.just("/login"),
    st.from_regex(r"\Ahttps?://[a-z]{1,8}(\.[a-z]{2,3})?(:[0-9]{1,5})?/[a-z0-9/._-]{0,20}\Z"),
    TEXT,
)
STATES = st.sampled_from(["live", "forged", "none", "random"])


@given(
    base=LOCATIONS,
    state=STATES,
    extra=st.dictionaries(
        st.sampled_from(["code", "error", "iss", "access_token", "x"]), TEXT, max_size=3
    ),
    in_fragment=st.booleans(),
)
async def test_response_rewriting_never_leaks_an_unsigned_response(
    fuzz_gateway: TestClient[Any, Any],
    base: str,
    state: str,
    extra: dict[str, str],
    in_fragment: bool,
) -> None:
    """Whatever Location the upstream answers a JARM flow with, the gateway answers below 500,
    and a redirect to the client carries one signed `response` and nothing else."""
    started = await fuzz_gateway.get(
        "/authorize?"
        + urlencode(
            {
                "client_id": "app",
                "request": sign(Claims().build(prompt="login", response_mode="query.jwt"), "ES256"),
            }
        ),
        allow_redirects=False,
    )
    saved = parse_qs(urlsplit(started.headers["Location"]).query)["return"][0]
    handle = parse_qs(urlsplit(saved).query)["state"][0]
    params = dict(extra)
    if state == "live":
        params["state"] = handle
    elif state == "forged":
        params["state"] = "jgf_" + handle[::-1]
    elif state == "random":
        params["state"] = "s"
    separator = "#" if in_fragment else ("&" if "?" in base else "?")
    location = base + separator + urlencode(params)
    response = await fuzz_gateway.get(
        "/bounce?" + urlencode({"location": location}), allow_redirects=False
    )
    assert response.status < 500 or response.status == 502  # 502: a live flow sent elsewhere
    answer = response.headers.get("Location", "")
    if response.status == 302 and answer.startswith(REDIRECT) and state == "live":
        query = parse_qs(urlsplit(answer).query)
        assert ["response"] == list(query)
        keys = KeySet.import_key_set(KEYRING.public_jwks())  # type: ignore[arg-type]
        jwt.decode(query["response"][0], keys, algorithms=["RS256"])
