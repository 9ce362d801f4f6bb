"""The transparent reverse proxy: everything the gateway does not own passes through as it came."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import json
import logging
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from proxy.observability import JsonFormatter, Metrics, TextFormatter, metrics_app
from proxy.store import RedisStore
from tests.conftest import AiohttpClient, GatewayFactory, Legacy
from tests.legacy_upstream import pattern
from tests.support import RedisServer, free_port, raw_url
from tests.test_observability import read_text_line


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE", "PATCH"])
async def test_methods_and_bodies_reach_upstream_unchanged(
    gateway: GatewayFactory, legacy: Legacy, method: str
) -> None:
    """Each method reaches the upstream with its path, query and body intact."""
    client = await gateway()
    body = b"" if method in ("GET", "DELETE") else b"payload \x00\xff bytes"
    response = await client.request(method, "/any/path?x=1", data=body or None)
    assert response.status == 200
    seen = legacy.recorder.requests[-1]
    assert (method, "/any/path?x=1") == (seen.method, seen.raw_path)
    assert hashlib.sha256(body).hexdigest() == seen.body_sha256
    assert response.headers["X-Upstream"] == "legacy"


@pytest.mark.parametrize(
    "target",
    [
        "/q?a=1&a=2&a=3",
        "/q?b=%2F%2f%20+plus&c=%E2%82%AC",
        "/q?odd=%zz&empty=&=novalue&flag",
        "/q?state=abc%3D%3D&redirect_uri=https%3A%2F%2Frp.example%2Fcb%3Fx%3D1",
        "/path%20with%2Fencoded/segments?;semi=1",
    ],
)
async def test_request_target_is_forwarded_byte_for_byte(
    gateway: GatewayFactory, legacy: Legacy, target: str
) -> None:
    """Repeated parameters and odd encodings reach the upstream exactly as the client sent them."""
    client = await gateway()
    response = await client.session.get(raw_url(client, target))
    assert response.status == 200
    assert target == legacy.recorder.requests[-1].raw_path


async def test_ten_megabyte_bodies_stream_both_ways(
    gateway: GatewayFactory, legacy: Legacy
) -> None:
    """A 10 MB upload and a 10 MB download arrive complete and unaltered."""
    client = await gateway()
    size = 10 * 1024 * 1024
    data = pattern(size)
    up = await client.post("/upload", data=io.BytesIO(data))
    assert (size, hashlib.sha256(data).hexdigest()) == (
        (await up.json())["body_length"],
        (await up.json())["body_sha256"],
    )
    for length in ("0", "1"):
        down = await client.get(f"/big?size={size}&length={length}")
        assert hashlib.sha256(data).hexdigest() == hashlib.sha256(await down.read()).hexdigest()


async def test_response_body_is_streamed_not_buffered(
    gateway: GatewayFactory, legacy: Legacy
) -> None:
    """The client reads the first chunk while the upstream is still holding the rest."""
    client = await gateway()
    response = await client.get("/held")
    first = await asyncio.wait_for(response.content.readexactly(len(b"first;")), timeout=5)
    assert first == b"first;"
    legacy.recorder.gate.set()
    assert await response.content.read() == b"rest"


async def test_request_body_is_streamed_not_buffered(
    gateway: GatewayFactory, legacy: Legacy
) -> None:
    """The upstream receives the first chunk of an upload before the client sends the rest."""
    client = await gateway()

    async def body() -> AsyncIterator[bytes]:
        yield b"a" * 70000
        await asyncio.wait_for(legacy.recorder.first_chunk_seen.wait(), timeout=5)
        yield b"b" * 10

    response = await client.post("/upload", data=body())
    assert (await response.json())["body_length"] == 70010


async def test_cookies_and_repeated_headers_survive(gateway: GatewayFactory) -> None:
    """Every Set-Cookie and every repeated header comes back; hop-by-hop ones do not."""
    client = await gateway()
    response = await client.get("/cookies")
    assert response.headers.getall("Set-Cookie") == [
        "a=1; Path=/; HttpOnly",
        "b=2; Path=/; Secure",
        "c=3; Path=/login; SameSite=Lax",
    ]
    assert ["one", "two"] == response.headers.getall("X-Multi")
    assert "X-Hop-Only" not in response.headers
    assert ["text/plain; charset=utf-8"] == response.headers.getall("Content-Type")


async def test_redirects_are_returned_not_followed(gateway: GatewayFactory, legacy: Legacy) -> None:
    """A 3xx from the upstream reaches the client with its Location untouched."""
    client = await gateway()
    response = await client.get("/redirect", allow_redirects=False)
    assert response.status == 302
    assert response.headers["Location"] == "https://elsewhere.example/landing?x=1&y=%2F#frag"
    assert legacy.recorder.paths() == ["/redirect"]


async def test_compressed_bodies_are_not_decompressed(
    gateway: GatewayFactory, legacy: Legacy
) -> None:
    """Content-Encoding and the compressed bytes pass through as they are."""
    client = await gateway()
    response = await client.session.get(
        raw_url(client, "/gzip"), headers={"Accept-Encoding": "gzip"}, auto_decompress=False
    )
    assert response.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(await response.read()) == b"hello compressed world" * 100
    assert legacy.recorder.requests[-1].headers["Accept-Encoding"] == "gzip"


async def test_no_headers_are_invented(gateway: GatewayFactory, legacy: Legacy) -> None:
    """Headers the client did not send (Accept, Accept-Encoding, User-Agent, and
    Content-Type with a body or a method that may carry one) are not added; those it sent
    go as they came."""
    client = await gateway()
    everything = ["Accept-Encoding", "User-Agent", "Accept", "Content-Type"]
    await client.get("/plain", skip_auto_headers=everything)
    seen = legacy.recorder.requests[-1].headers
    assert not {"Accept", "Accept-Encoding", "User-Agent", "Content-Type"} & set(seen)
    for method, body in (("POST", b"raw bytes"), ("DELETE", None), ("PUT", None)):
        await client.request(method, "/plain", data=body, skip_auto_headers=everything)
        seen = legacy.recorder.requests[-1].headers
        assert (method, None) == (legacy.recorder.requests[-1].method, seen.get("Content-Type"))
    sent = {"Accept": "text/html", "Accept-Encoding": "br", "User-Agent": "Browser/1"}
    await client.post("/plain", data=b"raw", headers={**sent, "Content-Type": "text/plain"})
    seen = legacy.recorder.requests[-1].headers
    assert {**sent, "Content-Type": "text/plain"} == {
        name: seen[name] for name in [*sent, "Content-Type"]
    }


async def test_hop_by_hop_request_headers_are_removed(
    gateway: GatewayFactory, legacy: Legacy
) -> None:
    """Connection, TE, Proxy-Authorization and headers named in Connection stay behind."""
    client = await gateway()
    await client.get(
        "/hop",
        headers={
            "Connection": "keep-alive, X-Private-Hop",
            "X-Private-Hop": "secret",
            "Proxy-Authorization": "Basic Zm9vOmJhcg==",
            "TE": "trailers",
            "X-End-To-End": "kept",
        },
    )
    seen = legacy.recorder.requests[-1].headers
    for name in ("X-Private-Hop", "Proxy-Authorization", "TE"):
        assert name not in seen
    assert seen["X-End-To-End"] == "kept"


async def test_host_is_kept_and_forwarding_headers_set(
    gateway: GatewayFactory, legacy: Legacy
) -> None:
    """The client's Host reaches the upstream; spoofed X-Forwarded-* from untrusted peers do not."""
    client = await gateway()
    await client.get(
        "/fwd",
        headers={
            "Host": "idp.example.com",
            "X-Forwarded-For": "6.6.6.6",
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "evil.example",
            "Forwarded": "for=6.6.6.6",
        },
    )
    seen = legacy.recorder.requests[-1].headers
    assert seen["Host"] == "idp.example.com"
    assert seen["X-Forwarded-For"] == "127.0.0.1"
    assert seen["X-Forwarded-Proto"] == "http"
    assert seen["X-Forwarded-Host"] == "idp.example.com"
    assert "Forwarded" not in seen


async def test_forwarding_headers_from_trusted_proxy_are_kept(
    gateway: GatewayFactory, legacy: Legacy
) -> None:
    """From a trusted proxy, X-Forwarded-For is appended to and Proto/Host are believed."""
    client = await gateway(trusted_proxies="127.0.0.0/8")
    await client.get(
        "/fwd",
        headers={
            "X-Forwarded-For": "203.0.113.7",
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "login.example.com",
        },
    )
    seen = legacy.recorder.requests[-1].headers
    assert seen["X-Forwarded-For"] == "203.0.113.7, 127.0.0.1"
    assert seen["X-Forwarded-Proto"] == "https"
    assert seen["X-Forwarded-Host"] == "login.example.com"


#: Headers that make servers route elsewhere, or believe another origin, scheme or client.
SPOOFED = {
    "X-Original-URL": "/authorize",
    "X-Rewrite-URL": "/authorize",
    "X-HTTP-Method-Override": "GET",
    "X-Forwarded-Prefix": "/evil",
    "X-Forwarded-Ssl": "on",
    "X-Forwarded-Scheme": "https",
    "X-Forwarded-Server": "evil.example",
    "X-Forwarded-Port": "443",
    "X-Real-IP": "6.6.6.6",
    "True-Client-IP": "6.6.6.6",
    "X-Url-Scheme": "https",
    "Front-End-Https": "on",
    "X_Forwarded_For": "6.6.6.6",
    "X_Forwarded_Host": "evil.example",
    "X_Forwarded_Proto": "https",
    "X_Original_URL": "/authorize",
}


async def test_override_and_forwarding_variants_from_untrusted_peers_are_dropped(
    gateway: GatewayFactory, legacy: Legacy
) -> None:
    """Path and method overrides, every forwarding header variant and their underscore
    spellings (which CGI-style servers read as the same names) never reach the upstream from
    an untrusted peer."""
    client = await gateway()
    await client.post("/fwd", headers=SPOOFED, data=b"x")
    seen = {name.lower().replace("_", "-") for name in legacy.recorder.requests[-1].headers}
    assert set() == {name.lower().replace("_", "-") for name in SPOOFED} & seen - {
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
    }
    headers = legacy.recorder.requests[-1].headers
    assert ("127.0.0.1", "http") == (headers["X-Forwarded-For"], headers["X-Forwarded-Proto"])
    assert not [name for name in headers if "_" in name]


async def test_trusted_proxies_keep_forwarding_headers_but_never_overrides(
    gateway: GatewayFactory, legacy: Legacy
) -> None:
    """From a trusted proxy the forwarding headers are believed, but path and method
    overrides and underscore spellings are dropped all the same."""
    client = await gateway(trusted_proxies="127.0.0.0/8")
    await client.get("/fwd", headers=SPOOFED)
    headers = legacy.recorder.requests[-1].headers
    assert ("/evil", "on") == (headers["X-Forwarded-Prefix"], headers["X-Forwarded-Ssl"])
    for name in ("X-Original-URL", "X-Rewrite-URL", "X-HTTP-Method-Override"):
        assert name not in headers
    assert not [name for name in headers if "_" in name]


async def test_head_and_no_content(gateway: GatewayFactory) -> None:
    """HEAD and 204 answers carry no body and keep their status."""
    client = await gateway()
    head = await client.head("/big?size=100&length=1")
    assert (head.status, head.headers.get("Content-Length")) == (200, "100")
    empty = await client.get("/empty")
    assert (empty.status, await empty.read()) == (204, b"")


async def test_upstream_down_is_502(aiohttp_client: AiohttpClient) -> None:
    """An unreachable upstream answers 502 temporarily_unavailable as JSON."""
    from proxy.app import create_app
    from proxy.keyring import Keyring
    from tests.support import make_settings

    app = create_app(make_settings(f"http://127.0.0.1:{free_port()}"), keyring=Keyring.throwaway())
    client = await aiohttp_client(app)
    response = await client.get("/anything")
    assert response.status == 502
    assert (await response.json())["error"] == "temporarily_unavailable"
    ready = await client.get("/readyz")
    assert (ready.status, (await ready.json())["upstream"]) == (503, "unavailable")


async def test_upstream_too_slow_is_504(gateway: GatewayFactory) -> None:
    """An upstream that does not answer within the read timeout gives 504."""
    client = await gateway(upstream_read_timeout_seconds=0.2)
    response = await client.get("/slow?seconds=2")
    assert response.status == 504
    assert (await response.json())["error"] == "temporarily_unavailable"


async def test_health_and_readiness(gateway: GatewayFactory, legacy: Legacy) -> None:
    """/healthz answers without touching anything; /readyz checks store and upstream."""
    client = await gateway()
    health = await client.get("/healthz")
    assert (health.status, await health.json()) == (200, {"status": "ok"})
    ready = await client.get("/readyz")
    assert ready.status == 200
    expected = {"status": "ready", "store": "ok", "upstream": "ok", "config": "ok"}
    assert await ready.json() == expected
    assert "/healthz" not in legacy.recorder.paths()


@pytest.mark.slow
async def test_readiness_follows_the_store(gateway: GatewayFactory) -> None:
    """With Redis gone readiness is 503; once Redis is back it recovers without a restart."""
    server = RedisServer().start()
    store = RedisStore.from_url(server.url)
    try:
        client = await gateway(store=store)
        assert (await client.get("/readyz")).status == 200
        server.stop()
        down = await client.get("/readyz")
        assert (down.status, (await down.json())["store"]) == (503, "unavailable")
        server.start()
        assert (await client.get("/readyz")).status == 200
    finally:
        server.stop()


async def test_metrics_count_requests_on_their_own_port(
    gateway: GatewayFactory, aiohttp_client: AiohttpClient, legacy: Legacy
) -> None:
    """Requests are counted; /metrics on the public port is the upstream's, not ours."""
    metrics = Metrics()
    client = await gateway(metrics=metrics)
    await client.get("/some/page")
    public = await client.get("/metrics")
    assert "/metrics" in legacy.recorder.paths()
    assert "jargate_http_requests_total" not in await public.text()
    scrape = await (await aiohttp_client(metrics_app(metrics))).get("/metrics")
    text = await scrape.text()
    assert 'jargate_http_requests_total{method="GET",route="proxy",status="200"} 2.0' in text


async def test_posted_authorization_request_is_relayed_with_its_body(
    gateway: GatewayFactory, legacy: Legacy
) -> None:
    """A POSTed authorization request the gateway passes through (an unregistered client)
    reaches the upstream with its body: the gateway read it for its parameters, and sends
    that copy (it used to send nothing, and the upstream waited for the body: a 504)."""
    client = await gateway()
    form = "client_id=stranger&response_type=code&redirect_uri=https%3A%2F%2Fx.example%2Fcb"
    response = await asyncio.wait_for(
        client.post(
            "/authorize",
            data=form,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            allow_redirects=False,
        ),
        timeout=20,
    )
    assert 200 == response.status
    seen = legacy.recorder.requests[-1]
    assert ("POST", len(form)) == (seen.method, seen.body_length)
    assert hashlib.sha256(form.encode()).hexdigest() == seen.body_sha256


def test_latency_histogram_is_a_prometheus_histogram() -> None:
    """The request counts and latencies kept as plain numbers scrape as Prometheus
    families: bounds inclusive (le), buckets cumulative, +Inf = count, the sum of seconds."""
    metrics = Metrics()
    for elapsed in (0.001, 0.0011, 0.3, 42.0):
        metrics.observe_request("proxy", "GET", 200, elapsed)
    metrics.observe_request("/authorize", "POST", 400, 0.002)
    for invented in ("FOO1", "FOO2"):  # methods clients make up share one label value
        metrics.observe_request("proxy", invented, 405, 0.001)
    families = {f.name: f for f in text_string_to_metric_families(metrics.render().decode())}
    counts = {
        (s.labels["route"], s.labels["method"], s.labels["status"]): s.value
        for s in families["jargate_http_requests"].samples
    }
    expected = {
        ("proxy", "GET", "200"): 4.0,
        ("/authorize", "POST", "400"): 1.0,
        ("proxy", "other", "405"): 2.0,
    }
    assert expected == counts
    proxy = {
        (s.name, s.labels.get("le")): s.value
        for s in families["jargate_http_request_duration_seconds"].samples
        if s.labels["route"] == "proxy"
    }
    bucket = "jargate_http_request_duration_seconds_bucket"
    assert 3.0 == proxy[(bucket, "0.001")]  # 0.001 itself is in the 0.001 bucket
    assert 4.0 == proxy[(bucket, "0.0025")]
    assert 5.0 == proxy[(bucket, "0.5")]
    assert 5.0 == proxy[(bucket, "10.0")]
    assert 6.0 == proxy[(bucket, "+Inf")]
    assert 6.0 == proxy[("jargate_http_request_duration_seconds_count", None)]
    assert 42.3041 == pytest.approx(proxy[("jargate_http_request_duration_seconds_sum", None)])


async def test_access_log_has_request_id_and_no_query(
    gateway: GatewayFactory, legacy: Legacy, caplog: pytest.LogCaptureFixture
) -> None:
    """One access line per request, never with the query string (codes, tokens); a
    request merely passed through is logged at debug, a refusal at info."""
    client = await gateway()
    with caplog.at_level(logging.DEBUG, logger="jargate.access"):
        response = await client.get("/cb?code=SECRETCODE&access_token=SECRETTOKEN")
        refused = await client.get("/authorize?request=SECRETOBJECT.e30.sig")
    assert (200, 400) == (response.status, refused.status)
    # The refusal (a request object without client_id) is the gateway's own JSON page,
    # sent back to the caller, and never reached the upstream.
    assert "invalid_request" == (await refused.json())["error"]
    assert "Location" not in refused.headers
    assert ["/cb"] == [urlsplit(r.raw_path).path for r in legacy.recorder.requests]
    records = [r for r in caplog.records if r.name == "jargate.access"]
    assert [("/cb", logging.DEBUG), ("/authorize", logging.INFO)] == [
        (r.__dict__["path"], r.levelno) for r in records
    ]
    for record in records:
        assert "SECRET" not in json.dumps({k: str(v) for k, v in record.__dict__.items()})


@pytest.mark.parametrize("fmt", ["text", "json"])
async def test_line_breaks_in_the_path_cannot_forge_a_log_line(
    gateway: GatewayFactory, legacy: Legacy, fmt: str
) -> None:
    """CR, U+2028, U+0085, VT and FF percent-encoded in the request target (decoded into the
    path) write exactly one access line, in which the path reads back whole."""
    client = await gateway()
    target = "/a%0Dinfo%20%20%20%20jargate.access:%20forged%E2%80%A8x%C2%85y%0Bz%0C"
    path = "/a\rinfo    jargate.access: forged\u2028x\x85y\x0bz\x0c"
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(TextFormatter() if fmt == "text" else JsonFormatter())
    access = logging.getLogger("jargate.access")
    level, access.level = access.level, logging.DEBUG
    access.addHandler(handler)
    try:
        response = await client.session.get(raw_url(client, target))
    finally:
        access.removeHandler(handler)
        access.setLevel(level)
    assert 200 == response.status
    assert [target] == [r.raw_path for r in legacy.recorder.requests]
    (written,) = stream.getvalue().splitlines()
    if fmt == "text":
        assert path == read_text_line(written)[2]["path"]
    else:
        assert path == json.loads(written)["path"]


async def test_error_page_is_html_for_browsers(aiohttp_client: AiohttpClient) -> None:
    """The gateway's own error answers in HTML to browsers and JSON to everyone else."""
    from proxy.app import create_app
    from proxy.keyring import Keyring
    from tests.support import make_settings

    app: web.Application = create_app(
        make_settings(f"http://127.0.0.1:{free_port()}"), keyring=Keyring.throwaway()
    )
    client = await aiohttp_client(app)
    page = await client.get("/x", headers={"Accept": "text/html,application/xhtml+xml"})
    assert page.content_type == "text/html"
    assert "temporarily_unavailable" in await page.text()
    assert page.headers["Content-Security-Policy"] == (
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
    )


async def test_every_route_is_observed(gateway: GatewayFactory, legacy: Legacy) -> None:
    """Every route, the gateway's own and the catch-all, answers with a request id and is
    counted: the observing wrapper is on each of them (it is not an aiohttp middleware)."""
    metrics = Metrics()
    client = await gateway(metrics=metrics)
    requests = [
        ("GET", "/healthz", "/healthz"),
        ("HEAD", "/healthz", "/healthz"),
        ("GET", "/readyz", "/readyz"),
        ("GET", "/.well-known/jargate/jwks.json", "/.well-known/jargate/jwks.json"),
        ("GET", "/.well-known/openid-configuration", "/.well-known/openid-configuration"),
        ("GET", "/authorize", "/authorize"),  # plain OAuth: relayed
        ("POST", "/authorize", "/authorize"),
        ("GET", "/authorize?response_mode=jwt", "/authorize"),  # refused: no client_id
        ("GET", "/par", "/par"),  # refused: PAR takes POST
        ("POST", "/par", "/par"),  # refused: not a form
        ("GET", "/plain", "proxy"),
        ("PUT", "/plain", "proxy"),
        ("GET", "//authorize", "/authorize"),  # another spelling: the authorization endpoint
    ]
    ids, refused = set(), []
    for method, path, _ in requests:
        response = await client.session.request(method, raw_url(client, path))
        ids.add(response.headers["X-Request-Id"])
        if response.status >= 400:
            assert "Location" not in response.headers
            refused.append((method, path, response.status, (await response.json())["error"]))
    assert len(requests) == len(ids)
    # The gateway's refusals are its own JSON answers, and none of them reached the
    # upstream (which answers a bare GET /authorize with its own 400).
    assert [
        ("GET", "/authorize", 400, "invalid_request"),
        ("GET", "/authorize?response_mode=jwt", 400, "invalid_request"),
        ("GET", "/par", 405, "invalid_request"),
        ("POST", "/par", 400, "invalid_request"),
    ] == refused
    upstream_saw = [(r.method, r.raw_path) for r in legacy.recorder.requests]
    assert not [seen for seen in upstream_saw if "jwt" in seen[1] or "/par" in seen[1]]
    assert ("GET", "/authorize") in upstream_saw
    families = {f.name: f for f in text_string_to_metric_families(metrics.render().decode())}
    counted = [
        (sample.labels["method"], sample.labels["route"], sample.value)
        for sample in families["jargate_http_requests"].samples
        if sample.name.endswith("_total")
    ]
    for method, _, route in requests:
        assert any(m == method and r == route for m, r, _ in counted), (method, route)
    assert len(requests) == sum(value for _, _, value in counted)
