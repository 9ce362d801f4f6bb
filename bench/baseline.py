"""The floor: a naive aiohttp pass-through proxy, written for the benchmark, nothing more."""

from __future__ import annotations

import argparse

import aiohttp
from aiohttp import web

HOP = {"connection", "keep-alive", "transfer-encoding", "upgrade", "te", "trailer"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    args = parser.parse_args()

    async def session_ctx(app: web.Application):  # type: ignore[no-untyped-def]
        app["session"] = aiohttp.ClientSession(auto_decompress=False)
        yield
        await app["session"].close()

    async def proxy(request: web.Request) -> web.Response:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP}
        body = await request.read()
        async with request.app["session"].request(
            request.method,
            args.upstream + request.raw_path,
            headers=headers,
            data=body or None,
            allow_redirects=False,
        ) as upstream:
            content = await upstream.read()
            out = {
                k: v
                for k, v in upstream.headers.items()
                if k.lower() not in HOP | {"content-length"}
            }
            return web.Response(status=upstream.status, body=content, headers=out)

    app = web.Application()
    app.cleanup_ctx.append(session_ctx)
    app.router.add_route("*", "/{tail:.*}", proxy)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
