"""A small legacy-style authorization server for tests: it knows nothing of JAR or JARM.

It records every request it receives (so tests can assert "the upstream got nothing"),
and offers the odd endpoints a reverse proxy must pass through untouched.
Run alone with ``python -m tests.legacy_upstream --port N``.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import hashlib
import json
import secrets
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from multidict import CIMultiDict


@dataclass
class Received:
    """One request as the upstream saw it."""

    method: str
    raw_path: str
    headers: CIMultiDict[str]
    body_sha256: str
    body_length: int


@dataclass
class Recorder:
    """Everything the upstream received, in order."""

    requests: list[Received] = field(default_factory=list)
    #: Set by tests that need to hold an upstream response open.
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    first_chunk_seen: asyncio.Event = field(default_factory=asyncio.Event)

    def paths(self) -> list[str]:
        return [r.raw_path for r in self.requests]


RECORDER = web.AppKey("recorder", Recorder)


async def _record(request: web.Request) -> Received:
    digest = hashlib.sha256()
    length = 0
    async for chunk in request.content.iter_chunked(64 * 1024):
        if not request.app[RECORDER].first_chunk_seen.is_set():
            request.app[RECORDER].first_chunk_seen.set()
        digest.update(chunk)
        length += len(chunk)
    received = Received(
        method=request.method,
        raw_path=request.raw_path,
        headers=CIMultiDict(request.headers),
        body_sha256=digest.hexdigest(),
        body_length=length,
    )
    request.app[RECORDER].requests.append(received)
    return received


async def echo(request: web.Request) -> web.Response:
    received = await _record(request)
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
    await _record(request)
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
    await _record(request)
    response = web.StreamResponse()
    await response.prepare(request)
    await response.write(b"first;")
    await request.app[RECORDER].gate.wait()
    await response.write(b"rest")
    await response.write_eof()
    return response


async def cookies(request: web.Request) -> web.Response:
    await _record(request)
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
    await _record(request)
    # Set by hand: web.HTTPFound would normalise the URL, and we test that nothing does.
    return web.Response(
        status=302, headers={"Location": "https://elsewhere.example/landing?x=1&y=%2F#frag"}
    )


async def slow(request: web.Request) -> web.Response:
    await _record(request)
    await asyncio.sleep(float(request.query.get("seconds", "1")))
    return web.Response(text="slow")


async def gzipped(request: web.Request) -> web.Response:
    await _record(request)
    body = gzip.compress(b"hello compressed world" * 100, mtime=0)
    return web.Response(
        body=body, headers={"Content-Encoding": "gzip", "Content-Type": "text/plain"}
    )


async def no_content(request: web.Request) -> web.Response:
    await _record(request)
    return web.Response(status=204)


async def authorize(request: web.Request) -> web.Response:
    """A legacy authorization endpoint: issues a code straight back to redirect_uri.

    With ``prompt=login`` and no session it behaves like a Spring-style server: it saves
    the request, sends the browser to its login page, and the login page sends the
    browser back to the saved request afterwards.
    """
    await _record(request)
    query = request.query
    redirect_uri = query.get("redirect_uri")
    if not redirect_uri:
        return web.json_response({"error": "invalid_request"}, status=400)
    if query.get("prompt") == "login" and "sid" not in request.cookies:
        return web.Response(
            status=302, headers={"Location": "/login?" + urlencode({"return": request.raw_path})}
        )
    if query.get("scope") == "deny":
        params = {"error": "access_denied", "error_description": "the user said no"}
        if "state" in query:
            params["state"] = query["state"]
        separator = "&" if "?" in redirect_uri else "?"
        return web.Response(
            status=302, headers={"Location": redirect_uri + separator + urlencode(params)}
        )
    params = {"code": secrets.token_urlsafe(16)}
    if "state" in query:
        params["state"] = query["state"]
    separator = "&" if "?" in redirect_uri else "?"
    raise web.HTTPFound(redirect_uri + separator + urlencode(params))


async def login(request: web.Request) -> web.Response:
    """The login page: signs the user in and replays the saved authorization request."""
    await _record(request)
    response = web.Response(status=302, headers={"Location": request.query["return"]})
    response.set_cookie("sid", "session-1", httponly=True)
    return response


async def discovery(request: web.Request) -> web.Response:
    await _record(request)
    issuer = request.app[ISSUER]
    document: dict[str, Any] = {
        "issuer": issuer,
        "authorization_endpoint": f"{issuer}/authorize",
        "token_endpoint": f"{issuer}/token",
        "jwks_uri": f"{issuer}/jwks",
        "response_types_supported": ["code"],
        "response_modes_supported": ["query", "fragment", "form_post"],
    }
    return web.Response(text=json.dumps(document), content_type="application/json")


ISSUER = web.AppKey("issuer", str)


def legacy_app(
    recorder: Recorder | None = None, issuer: str = "http://127.0.0.1:8000"
) -> web.Application:
    """The upstream app; pass a :class:`Recorder` to inspect what it received."""
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[RECORDER] = recorder or Recorder()
    app[ISSUER] = issuer
    app.router.add_get("/big", big)
    app.router.add_get("/held", held)
    app.router.add_get("/cookies", cookies)
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/slow", slow)
    app.router.add_get("/gzip", gzipped)
    app.router.add_get("/empty", no_content)
    app.router.add_get("/authorize", authorize)
    app.router.add_get("/login", login)
    app.router.add_get("/.well-known/openid-configuration", discovery)
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
