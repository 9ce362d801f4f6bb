"""The floor: the baseline (bench/baseline.py) plus only the work that RFC 9101, RFC 9126
and JARM make unavoidable, done the cheapest way the project's fixed libraries allow, on
uvloop like jargate. Its throughput over the baseline's is the ceiling for any gateway
built on aiohttp, joserfc and redis-py on this machine:

- a ``request`` object: its signature checked with the client's key (joserfc's algorithm
  object, as jargate does); the claims RFC 9101 and RFC 7519 make binding checked (``exp``
  not passed, ``iss`` the client, ``aud`` the issuer, an inner ``client_id`` the outer one,
  no ``request`` or ``request_uri`` inside: §4, §5, §6.3, §10.8); its ``jti`` claimed once
  in Redis (``SET NX``); its parameters, and only those, sent upstream as a plain query
  (§6.3: the object's parameters replace the outer ones);
- ``POST /par``: the client's secret compared, the form kept in Redis under a fresh URN
  (``SET``), 201;
- a ``request_uri`` URN: taken from Redis (``GETDEL``) and sent upstream as a query;
- when the request asked for ``response_mode=jwt``: the upstream's redirect back signed
  as one JARM response (ES256);
- ``POST /token``: the code redeemed once (``SET NX`` of its digest), the form relayed to
  the upstream's token endpoint and its answer back.

Redis commands go out on redis-py's connections directly (the floor keeps the ones it
used), as jargate's store does: through the client's ``execute_command`` a command costs
about three times the CPU. Its GETs to the upstream go out on jargate's own kept-alive
connections (``proxy/keepalive.py``), not through aiohttp's session (about 60 µs of CPU
less a request), and their queries are written with jargate's ``encode_query`` (the text
``urlencode`` writes, for less).

Nothing else: no checks beyond those (no ``nbf``, ``iat``, lifetime, ``typ`` or claim
types), no flows, no policies, no header hygiene, no logs, no metrics, no timeouts
(redis-py's default 5 s socket timeout costs a task and a timer a command), no error
handling worth the name.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import time
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import aiohttp
import redis.asyncio as aioredis
import uvloop
from aiohttp import web
from baseline import HOP, relay, serve
from joserfc.jwk import ECKey, KeySet
from joserfc.jws import JWSRegistry
from multidict import CIMultiDict
from yarl import URL

from proxy.keepalive import KeptConnections
from proxy.query import encode_query

URN = "urn:ietf:params:oauth:request_uri:"
#: The request object's own claims, which are not authorization parameters.
JWT_CLAIMS = frozenset({"iss", "aud", "exp", "nbf", "iat", "jti", "sub"})


def _decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--jwks", required=True, help="the clients' public keys (JWKS file)")
    parser.add_argument("--redis", required=True)
    parser.add_argument("--issuer", required=True)
    parser.add_argument("--par-client", required=True, help="client_id:secret")
    args = parser.parse_args()
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    with open(args.jwks) as source:
        keys = {key.kid: key for key in KeySet.import_key_set(json.load(source))}
    signer = ECKey.generate_key("P-256", parameters={"kid": "floor"})
    es256 = JWSRegistry.algorithms["ES256"]
    expected = "Basic " + base64.b64encode(args.par_client.encode()).decode()
    pool = aioredis.Redis.from_url(args.redis, socket_timeout=None).connection_pool
    idle: list[Any] = []
    holder: dict[str, aiohttp.ClientSession] = {}
    kept = KeptConnections(URL(args.upstream), None, None)

    async def relay_get(
        request: web.Request, target: str | None
    ) -> tuple[web.Response, str | None]:
        """``relay`` for a GET without a body, on a kept connection."""
        headers = CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() not in HOP)
        answer = await kept.request("GET", target or request.raw_path, headers)
        try:
            content = await answer.content.read()
        finally:
            answer.release()
        out = {k: v for k, v in answer.headers.items() if k.lower() not in HOP | {"content-length"}}
        return web.Response(status=answer.status, body=content, headers=out), answer.headers.get(
            "Location"
        )

    async def command(*words: str | int) -> Any:
        connection = idle.pop() if idle else await pool.get_connection()  # type: ignore[no-untyped-call]
        await connection.send_command(*words)
        reply = await connection.read_response()
        idle.append(connection)
        return reply

    def jarm(location: str, client_id: str) -> str:
        target = urlsplit(location)
        now = int(time.time())
        claims: dict[str, Any] = dict(parse_qsl(target.query))
        claims.update({"iss": args.issuer, "aud": client_id, "iat": now, "exp": now + 60})
        header = _encode(b'{"alg":"ES256","kid":"floor"}')
        signing_input = f"{header}.{_encode(json.dumps(claims).encode())}"
        token = f"{signing_input}.{_encode(es256.sign(signing_input.encode(), signer))}"
        # A compact JWS is base64url and dots: nothing to escape.
        return f"{target.scheme}://{target.netloc}{target.path}?response={token}"

    async def push(request: web.Request) -> web.Response:
        if not hmac.compare_digest(request.headers.get("Authorization", ""), expected):
            return web.Response(status=401)
        form = dict((await request.post()).items())
        urn = URN + secrets.token_urlsafe(32)
        await command("SET", "floor:par:" + urn, json.dumps(form), "EX", 90)
        return web.json_response({"request_uri": urn, "expires_in": 90}, status=201)

    async def redeem(request: web.Request) -> web.Response:
        code = (await request.post()).get("code")
        if not isinstance(code, str):
            return web.Response(status=400)
        digest = hashlib.sha256(code.encode()).hexdigest()
        if not await command("SET", "floor:code:" + digest, "1", "NX", "EX", 600):
            return web.Response(status=400)
        response, _ = await relay(holder["session"], args.upstream, request)
        return response

    async def handle(request: web.Request) -> web.Response:
        if request.method == "POST" and request.path == "/par":
            return await push(request)
        if request.method == "POST" and request.path == "/token":
            return await redeem(request)
        query = request.query
        wants_jarm, target = False, None
        if "request" in query:
            header_segment, payload_segment, signature = query["request"].split(".")
            header = json.loads(_decode(header_segment))
            signing_input = f"{header_segment}.{payload_segment}".encode()
            algorithm = JWSRegistry.algorithms[header["alg"]]
            if not algorithm.verify(signing_input, _decode(signature), keys[header["kid"]]):
                return web.Response(status=400)
            claims = json.loads(_decode(payload_segment))
            client_id = query["client_id"]
            if (
                claims["exp"] <= time.time()
                or claims["iss"] != client_id
                or claims["aud"] != args.issuer
                or claims.get("client_id", client_id) != client_id
                or "request" in claims
                or "request_uri" in claims
            ):
                return web.Response(status=400)
            if not await command("SET", "floor:jti:" + claims["jti"], "1", "NX", "EX", 600):
                return web.Response(status=400)
            params = {k: v for k, v in claims.items() if k not in JWT_CLAIMS}
            wants_jarm = params.pop("response_mode", None) == "jwt"
            target = "/authorize?" + encode_query({"client_id": client_id, **params}.items())
        elif query.get("request_uri", "").startswith(URN):
            pushed = await command("GETDEL", "floor:par:" + query["request_uri"])
            if pushed is None:
                return web.Response(status=400)
            params = {**json.loads(pushed), "client_id": query["client_id"]}
            wants_jarm = params.pop("response_mode", None) == "jwt"
            target = "/authorize?" + encode_query(params.items())
        if request.method == "GET" and not request.body_exists:
            response, location = await relay_get(request, target)
        else:
            response, location = await relay(holder["session"], args.upstream, request, target)
        if wants_jarm and location:
            return web.Response(
                status=302, headers={"Location": jarm(location, query["client_id"])}
            )
        return response

    serve(args.port, handle, holder)


if __name__ == "__main__":
    main()
