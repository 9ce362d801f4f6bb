"""The baseline: a naive aiohttp pass-through proxy, written for the benchmark, nothing more."""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import web

HOP = {"connection", "keep-alive", "transfer-encoding", "upgrade", "te", "trailer"}


async def relay(
    session: aiohttp.ClientSession, upstream: str, request: web.Request, target: str | None = None
) -> tuple[web.Response, str | None]:
    """Send ``request`` (or a GET of ``target``) upstream; the answer, and its Location."""
    headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP}
    body = await request.read() if target is None else b""
    async with session.request(
        request.method if target is None else "GET",
        upstream + (request.raw_path if target is None else target),
        headers=headers,
        data=body or None,
        allow_redirects=False,
    ) as answer:
        content = await answer.read()
        out = {k: v for k, v in answer.headers.items() if k.lower() not in HOP | {"content-length"}}
        return web.Response(status=answer.status, body=content, headers=out), answer.headers.get(
            "Location"
        )


def serve(
    port: int,
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    session_holder: dict[str, aiohttp.ClientSession],
) -> None:
    """Serve ``handler`` for every path on loopback, with one pooled client session."""

    async def session_ctx(app: web.Application):  # type: ignore[no-untyped-def]
        session_holder["session"] = aiohttp.ClientSession(auto_decompress=False)
        yield
        await session_holder["session"].close()

    app = web.Application()
    app.cleanup_ctx.append(session_ctx)
    app.router.add_route("*", "/{tail:.*}", handler)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    args = parser.parse_args()
    holder: dict[str, aiohttp.ClientSession] = {}

    async def proxy(request: web.Request) -> web.Response:
        response, _ = await relay(holder["session"], args.upstream, request)
        return response

    serve(args.port, proxy, holder)


if __name__ == "__main__":
    main()
