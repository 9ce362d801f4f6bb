"""The floor: a naive aiohttp pass-through proxy, written for the benchmark, nothing more.

With ``--jwks`` and ``--redis`` it is the *JAR floor*: before relaying a request that
carries a ``request`` object, it does the least any JAR gateway on this stack must do (the
two costs RFC 9101 makes unavoidable), and nothing else: verify the object's signature
with the client's key (joserfc's algorithm object, as jargate does) and claim its ``jti``
in Redis once (redis-py, ``SET NX``), on uvloop like jargate. No claim checks, no
flow, no JARM. Its throughput
over the plain baseline's is the ceiling for any gateway that verifies and tracks replay
with these libraries on this machine.
"""

from __future__ import annotations

import argparse
import base64
import json
from typing import Any

import aiohttp
from aiohttp import web

HOP = {"connection", "keep-alive", "transfer-encoding", "upgrade", "te", "trailer"}


def _segment(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--jwks", help="JAR floor: the clients' public keys (a JWKS file)")
    parser.add_argument("--redis", help="JAR floor: the Redis URL for jti claims")
    args = parser.parse_args()
    check = None
    if args.jwks and args.redis:
        import asyncio

        import uvloop

        # The floor gets every help jargate gets, so that it is a true ceiling.
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        check = jar_floor(args.jwks, args.redis)

    async def session_ctx(app: web.Application):  # type: ignore[no-untyped-def]
        app["session"] = aiohttp.ClientSession(auto_decompress=False)
        yield
        await app["session"].close()

    async def proxy(request: web.Request) -> web.Response:
        token = request.query.get("request") if check is not None else None
        if check is not None and token is not None and not await check(token):
            return web.Response(status=400, text="refused")
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


def jar_floor(jwks_file: str, redis_url: str) -> Any:
    """The unavoidable work for one request object: signature, then a once-only jti claim."""
    import redis.asyncio as aioredis
    from joserfc.jwk import KeySet
    from joserfc.jws import JWSRegistry

    with open(jwks_file) as source:
        keys = {key.kid: key for key in KeySet.import_key_set(json.load(source))}
    store = aioredis.Redis.from_url(redis_url)

    async def check(token: str) -> bool:
        header_segment, payload_segment, signature = token.split(".")
        header = json.loads(_segment(header_segment))
        algorithm = JWSRegistry.algorithms[header["alg"]]
        signing_input = f"{header_segment}.{payload_segment}".encode()
        if not algorithm.verify(signing_input, _segment(signature), keys[header["kid"]]):
            return False
        claims = json.loads(_segment(payload_segment))
        return bool(await store.set("floor:jti:" + claims["jti"], "1", nx=True, ex=600))

    return check


if __name__ == "__main__":
    main()
