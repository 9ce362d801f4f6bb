"""The benchmark's upstream: as small and fast as an authorization server can be."""

from __future__ import annotations

import argparse
import itertools
import json
import secrets
from urllib.parse import urlencode

from aiohttp import web

PAGE = b"<html><body>" + b"x" * 512 + b"</body></html>"
#: Every authorization gets its own code (the gateway redeems each once): this process's
#: random prefix and a counter.
PREFIX = secrets.token_urlsafe(6)
ISSUED = itertools.count()


async def page(request: web.Request) -> web.Response:
    return web.Response(body=PAGE, content_type="text/html")


async def authorize(request: web.Request) -> web.Response:
    query = request.query
    params = {"code": f"{PREFIX}{next(ISSUED)}", "state": query.get("state", "")}
    return web.Response(
        status=302,
        headers={
            "Location": query.get("redirect_uri", "https://rp.example/cb") + "?" + urlencode(params)
        },
    )


async def par(request: web.Request) -> web.Response:
    await request.read()
    body = {"request_uri": "urn:ietf:params:oauth:request_uri:baseline", "expires_in": 90}
    return web.Response(status=201, text=json.dumps(body), content_type="application/json")


async def token(request: web.Request) -> web.Response:
    """A token response for any form: no code or client is checked here."""
    await request.read()
    body = f'{{"access_token":"at{next(ISSUED)}","token_type":"Bearer","expires_in":3600}}'
    return web.Response(
        text=body, content_type="application/json", headers={"Cache-Control": "no-store"}
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = web.Application()
    app.router.add_get("/page", page)
    app.router.add_get("/authorize", authorize)
    app.router.add_post("/par", par)
    app.router.add_post("/token", token)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
