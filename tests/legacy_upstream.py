"""The legacy-style upstream for tests: the demo's legacy authorization server (which knows
nothing of JAR or JARM), plus the odd endpoints a reverse proxy must pass through untouched.
It records every request it receives, so tests can assert "the upstream got nothing".
Run alone with ``python -m tests.legacy_upstream --port N``.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import html
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

from proxy.demo import legacy
from proxy.demo.legacy import LEGACY, Received, record

__all__ = ["Received", "Recorder", "legacy_app", "pattern"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Recorder(legacy.Recorder):
    """What the upstream received, plus hooks to hold responses open in streaming tests."""

    gate: asyncio.Event = field(default_factory=asyncio.Event)
    first_chunk_seen: asyncio.Event = field(default_factory=asyncio.Event)

    def on_first_chunk(self) -> None:
        self.first_chunk_seen.set()


def _recorder(request: web.Request) -> Recorder:
    recorder = request.app[LEGACY].recorder
    assert isinstance(recorder, Recorder)
    return recorder


async def echo(request: web.Request) -> web.Response:
    received = await record(request)
    return web.json_response(
        {
            "method": received.method,
            "raw_path": received.raw_path,
            "headers": list(received.headers.items()),
            "body_sha256": received.body_sha256,
            "body_length": received.body_length,
        },
        headers={"X-Upstream": "legacy"},
    )


def pattern(size: int) -> bytes:
    """Deterministic bytes for streaming tests."""
    block = bytes(range(256)) * 256
    return (block * (size // len(block) + 1))[:size]


async def big(request: web.Request) -> web.StreamResponse:
    await record(request)
    size = int(request.query.get("size", "0"))
    response = web.StreamResponse()
    response.content_type = "application/octet-stream"
    if request.query.get("length") == "1":
        response.content_length = size
    await response.prepare(request)
    if request.method == "HEAD":
        return response
    data = pattern(size)
    for start in range(0, size, 256 * 1024):
        await response.write(data[start : start + 256 * 1024])
    await response.write_eof()
    return response


async def held(request: web.Request) -> web.StreamResponse:
    """Sends a first chunk, then waits for the test to open the gate."""
    await record(request)
    response = web.StreamResponse()
    await response.prepare(request)
    await response.write(b"first;")
    await _recorder(request).gate.wait()
    await response.write(b"rest")
    await response.write_eof()
    return response


async def cookies(request: web.Request) -> web.Response:
    await record(request)
    response = web.Response(text="cookies")
    response.headers.add("Set-Cookie", "a=1; Path=/; HttpOnly")
    response.headers.add("Set-Cookie", "b=2; Path=/; Secure")
    response.headers.add("Set-Cookie", "c=3; Path=/login; SameSite=Lax")
    response.headers.add("X-Multi", "one")
    response.headers.add("X-Multi", "two")
    response.headers["Connection"] = "X-Hop-Only"
    response.headers["X-Hop-Only"] = "must not pass"
    return response


async def redirect(request: web.Request) -> web.Response:
    await record(request)
    # Set by hand: web.HTTPFound would normalise the URL, and we test that nothing does.
    return web.Response(
        status=302, headers={"Location": "https://elsewhere.example/landing?x=1&y=%2F#frag"}
    )


async def bounce(request: web.Request) -> web.Response:
    """Redirects to whatever ``location`` says: a stand-in for any upstream handler that
    sends the browser back to the client (tests replay and forge callbacks with it)."""
    await record(request)
    return web.Response(status=302, headers={"Location": request.query["location"]})


async def scripted(request: web.Request) -> web.Response:
    """Answers however the query says, for the ways a server may send a flow's response
    back: ``page`` (``form``, ``meta``, ``script``) to ``to`` with ``fields`` (JSON pairs),
    a ``refresh`` header to ``to``, extra ``csp``, a ``cookie``; ``status`` (default 200).
    ``{state}`` in ``to`` and ``fields`` is the request's own ``state`` (the flow handle when
    the gateway calls it as the authorization endpoint)."""
    await record(request)
    query = request.query
    state = query.get("state", "")
    to = query.get("to", "").replace("{state}", state)
    headers: dict[str, str] = {}
    body = ""
    page = query.get("page")
    if page == "form":
        pairs = json.loads(query.get("fields", "[]").replace("{state}", state))
        inputs = "".join(
            f'<input type="hidden" name="{html.escape(n)}" value="{html.escape(v)}">'
            for n, v in pairs
        )
        body = (
            f'<html><body onload="document.forms[0].submit()"><form method="post" '
            f'action="{html.escape(to)}">{inputs}</form></body></html>'
        )
    elif page == "meta":
        refresh = f'<meta http-equiv="refresh" content="0; url={html.escape(to)}">'
        body = f"<html><head>{refresh}</head></html>"
    elif page == "script":
        body = f"<html><script>window.location.replace({json.dumps(to)});</script></html>"
    if "refresh" in query:
        headers["Refresh"] = f"0; url={to}"
    if "csp" in query:
        headers["Content-Security-Policy"] = query["csp"]
    response = web.Response(
        status=int(query.get("status", "200")), text=body, content_type="text/html", headers=headers
    )
    if "cookie" in query:
        response.headers.add("Set-Cookie", query["cookie"])
    if "location" in query:
        response.headers["Location"] = query["location"]
    return response


async def slow(request: web.Request) -> web.Response:
    await record(request)
    await asyncio.sleep(float(request.query.get("seconds", "1")))
    return web.Response(text="slow")


async def gzipped(request: web.Request) -> web.Response:
    await record(request)
    body = gzip.compress(b"hello compressed world" * 100, mtime=0)
    return web.Response(
        body=body, headers={"Content-Encoding": "gzip", "Content-Type": "text/plain"}
    )


def requested_origin(request: web.Request) -> str:
    """The origin a request names, as oidc-provider with ``proxy: true`` reads it:
    ``X-Forwarded-Proto`` and ``X-Forwarded-Host`` when present, else the scheme and Host."""
    proto = request.headers.get("X-Forwarded-Proto", request.scheme)
    return f"{proto}://{request.headers.get('X-Forwarded-Host', request.host)}"


async def reflected_discovery(request: web.Request) -> web.Response:
    """Discovery whose endpoint URLs are built from the request (the issuer stays fixed)."""
    await record(request)
    origin = requested_origin(request)
    document = {
        "issuer": request.app[LEGACY].issuer,
        "authorization_endpoint": f"{origin}/authorize",
        "token_endpoint": f"{origin}/token",
        "jwks_uri": f"{origin}/jwks",
        "response_types_supported": ["code"],
    }
    return web.json_response(document)


async def reflected_jwks(request: web.Request) -> web.Response:
    """A JWKS that differs by the origin the request names (a key per tenant host)."""
    await record(request)
    key = request.app[LEGACY].key.as_dict(private=False, use="sig", alg="RS256")
    return web.json_response({"keys": [{**key, "kid": "legacy-" + requested_origin(request)}]})


REFLECTED = {
    "/.well-known/openid-configuration": reflected_discovery,
    "/.well-known/oauth-authorization-server": reflected_discovery,
    "/jwks": reflected_jwks,
}


@web.middleware
async def reflecting(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer discovery and the JWKS from the request's Host and forwarding headers."""
    return await REFLECTED.get(request.path, handler)(request)


async def no_content(request: web.Request) -> web.Response:
    await record(request)
    return web.Response(status=204)


def legacy_app(
    recorder: Recorder | None = None,
    issuer: str = "http://127.0.0.1:8000",
    *,
    reflect_host: bool = False,
) -> web.Application:
    """The upstream app; pass a :class:`Recorder` to inspect what it received. With
    ``reflect_host`` its discovery and JWKS are built from each request's Host and
    X-Forwarded-* (as oidc-provider's are with proxy headers trusted)."""
    app = legacy.legacy_app(issuer, recorder or Recorder(), client_max_size=64 * 1024 * 1024)
    if reflect_host:
        app.middlewares.append(reflecting)
    app.router.add_get("/big", big)
    app.router.add_get("/held", held)
    app.router.add_get("/cookies", cookies)
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/slow", slow)
    app.router.add_get("/bounce", bounce)
    app.router.add_get("/scripted", scripted)
    # RFC 8414's document too (the demo's server has only OpenID Connect's).
    app.router.add_get("/.well-known/oauth-authorization-server", legacy.discovery)
    app.router.add_get("/gzip", gzipped)
    app.router.add_get("/empty", no_content)
    # OpenID Connect Core §3.1.2.1: the authorization endpoint takes POST too.
    app.router.add_post("/authorize", echo)
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--issuer", default="http://127.0.0.1:8000")
    args = parser.parse_args()
    web.run_app(legacy_app(issuer=args.issuer), host="127.0.0.1", port=args.port, print=None)


if __name__ == "__main__":
    main()
