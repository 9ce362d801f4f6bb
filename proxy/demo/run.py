"""``jargate demo``: the whole thing on one screen.

Starts the bundled legacy server and the gateway in front of it (memory store,
throw-away keys, one registered client) on loopback, then plays the client: a signed
request object in, what the legacy server received, the JARM response out, verified
with the keys found through discovery, and the code exchanged at the token endpoint.
"""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import socket
import textwrap
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import aiohttp
from aiohttp import web
from joserfc import jwt
from joserfc.jwk import KeySet

from proxy.app import create_app
from proxy.clients import load_registry
from proxy.demo.legacy import Recorder, legacy_app
from proxy.keyring import Keyring, generate_private_jwks, prepare_key, public_jwks_of
from proxy.request.make import BuiltRequest, make_request_object, par_form
from proxy.serving import GatewayRunner, gateway_runner
from proxy.settings import Settings
from proxy.store import MemoryStore

CLIENT_ID = "demo-client"
REDIRECT_URI = "https://client.example/cb"

Print = Callable[[str], None]


def _bind() -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def _decode_segment(segment: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


def _encode_segment(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


def _short(value: str, keep: int = 40) -> str:
    return value if len(value) <= keep else f"{value[:keep]}…({len(value)} chars)"


class Demo:
    """The demo's servers and the client it plays."""

    def __init__(self, say: Print) -> None:
        self.say = say
        self.recorder = Recorder()
        self.legacy_sock, self.gateway_sock = _bind(), _bind()
        self.legacy_url = f"http://127.0.0.1:{self.legacy_sock.getsockname()[1]}"
        self.issuer = f"http://127.0.0.1:{self.gateway_sock.getsockname()[1]}"
        #: The authorization URL of the first flow, used again to show a replay refused.
        self.replay = ""
        private = generate_private_jwks(["ES256"], kid="demo-client-key")
        self.client_key = prepare_key(private["keys"][0], "demo client key")
        clients = {
            "clients": [
                {
                    "client_id": CLIENT_ID,
                    "jwks": public_jwks_of(private),
                    "redirect_uris": [REDIRECT_URI],
                    "require_signed_request_object": True,
                    "authorization_signed_response_alg": "ES256",
                    "token_endpoint_auth_method": "private_key_jwt",
                }
            ]
        }
        self.settings = Settings.model_validate(
            {
                "upstream_url": self.legacy_url,
                "issuer": self.issuer,
                "host": "127.0.0.1",
                "port": self.gateway_sock.getsockname()[1],
                "metrics_port": 0,
                "upstream_jwks_path": "/jwks",
                "clients": json.dumps(clients),
                "log_level": "warning",
            }
        )
        self.runners: list[GatewayRunner] = []

    async def start(self) -> None:
        """Both servers, on their pre-bound loopback sockets."""
        registry = load_registry(self.settings)
        gateway = create_app(
            self.settings, registry=registry, keyring=Keyring.throwaway(), store=MemoryStore()
        )
        for app, sock in (
            (legacy_app(self.issuer, self.recorder), self.legacy_sock),
            (gateway, self.gateway_sock),
        ):
            runner = gateway_runner(app, self.settings)
            await runner.setup()
            await web.SockSite(runner, sock).start()
            self.runners.append(runner)

    async def stop(self) -> None:
        """Stop both servers."""
        for runner in reversed(self.runners):
            await runner.cleanup()

    def section(self, title: str) -> None:
        self.say(f"\n── {title} " + "─" * max(4, 70 - len(title)))

    def show(self, value: Any) -> None:
        text = value if isinstance(value, str) else json.dumps(value, indent=2, ensure_ascii=False)
        self.say(textwrap.indent(text, "   "))

    async def flow(self) -> dict[str, Any]:
        """One JAR + JARM flow, the token exchange, a PAR flow and two refusals, each step
        printed; returns the verified response claims."""
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(cookie_jar=jar) as browser:
            built, verified, discovery, keys = await self.signed_flow(browser)
            await self.token_exchange(browser, discovery, verified, built.code_verifier)
            await self.pushed_flow(browser, discovery, keys)
            await self.refusals(browser)
        return dict(verified.claims)

    async def signed_flow(
        self, browser: aiohttp.ClientSession
    ) -> tuple[BuiltRequest, jwt.Token, dict[str, Any], KeySet]:
        """Steps 1 to 4: a signed request in, a signed response out, verified."""
        self.section("1. The client signs its authorization request (JAR, RFC 9101)")
        built = make_request_object(
            self.client_key,
            CLIENT_ID,
            self.issuer,
            {"redirect_uri": REDIRECT_URI, "scope": "openid profile", "response_mode": "jwt"},
        )
        header, claims = (_decode_segment(part) for part in built.jwt.split(".")[:2])
        self.show({"header": header, "claims": claims})
        url = f"{self.issuer}/authorize?" + urlencode(
            {"client_id": CLIENT_ID, "request": built.jwt}
        )
        self.say(f"   browser → GET {_short(url, 90)}")
        async with browser.get(url, allow_redirects=False) as response:
            location = response.headers["Location"]

        self.section("2. What the legacy server received: a plain request, verified")
        received = next(r for r in self.recorder.requests if r.raw_path.startswith("/authorize"))
        upstream = {k: v[0] for k, v in parse_qs(urlsplit(received.raw_path).query).items()}
        self.show(upstream)
        self.say("   (state is the gateway's flow handle; the client's state waits in the store)")

        self.section("3. The gateway's answer to the browser: one signed response (JARM)")
        self.say(f"   302 Location: {_short(location, 90)}")
        token = parse_qs(urlsplit(location).query)["response"][0]
        self.show({"header": _decode_segment(token.split(".")[0])})

        self.section("4. The client verifies it with the keys found through discovery")
        async with browser.get(f"{self.issuer}/.well-known/openid-configuration") as response:
            discovery = await response.json()
        async with browser.get(discovery["jwks_uri"]) as response:
            keys = KeySet.import_key_set(await response.json())
        self.say(f"   jwks_uri: {discovery['jwks_uri']} ({len(keys.keys)} keys)")
        self.replay = url
        return built, self.verify(token, keys, claims["state"]), discovery, keys

    async def token_exchange(
        self,
        browser: aiohttp.ClientSession,
        discovery: dict[str, Any],
        verified: jwt.Token,
        code_verifier: str,
    ) -> None:
        """Step 5: the code exchanged at the upstream's token endpoint, through the gateway."""
        self.section("5. The client exchanges the code at the token endpoint (through jargate)")
        form = {
            "grant_type": "authorization_code",
            "code": verified.claims["code"],
            "redirect_uri": REDIRECT_URI,
            "client_id": CLIENT_ID,
            "code_verifier": code_verifier,
        }
        async with browser.post(discovery["token_endpoint"], data=form) as response:
            tokens = await response.json()
        self.show({k: (_short(v, 24) if isinstance(v, str) else v) for k, v in tokens.items()})
        if "access_token" not in tokens:
            raise RuntimeError(f"the token exchange failed: {tokens}")

    async def pushed_flow(
        self, browser: aiohttp.ClientSession, discovery: dict[str, Any], keys: KeySet
    ) -> None:
        """Step 6: the same with PAR, pushed over the back channel first."""
        self.section("6. The same with PAR (RFC 9126): pushed over the back channel first")
        built = make_request_object(
            self.client_key,
            CLIENT_ID,
            self.issuer,
            {"redirect_uri": REDIRECT_URI, "response_mode": "jwt"},
        )
        form = par_form(built, self.client_key, CLIENT_ID, self.issuer)
        par_url = discovery["pushed_authorization_request_endpoint"]
        async with browser.post(par_url, data=form) as response:
            pushed = await response.json()
        self.say(f"   client → POST {par_url} (private_key_jwt) → {response.status}")
        self.show(pushed)
        query = urlencode({"client_id": CLIENT_ID, "request_uri": pushed["request_uri"]})
        self.say(f"   browser → GET {self.issuer}/authorize?{_short(query, 70)}")
        async with browser.get(f"{self.issuer}/authorize?{query}", allow_redirects=False) as r:
            location = r.headers["Location"]
        self.say(f"   302 Location: {_short(location, 90)}")
        self.verify(parse_qs(urlsplit(location).query)["response"][0], keys, built.claims["state"])

    async def refusals(self, browser: aiohttp.ClientSession) -> None:
        """Step 7: what a security team asks to see first: a tampered object and a replayed
        one, refused before the legacy server sees anything."""
        self.section("7. Refused: a tampered request object, and one used twice")
        built = make_request_object(
            self.client_key, CLIENT_ID, self.issuer, {"redirect_uri": REDIRECT_URI}
        )
        head, payload, signature = built.jwt.split(".")
        claims = _decode_segment(payload)
        claims["scope"] = "openid admin"
        forged = ".".join((head, _encode_segment(claims), signature))
        seen = len(self.recorder.requests)
        for label, url in (
            ("tampered (scope changed after signing)", self._authorize_url(forged)),
            ("replayed (the object of step 1 again)", self.replay),
        ):
            async with browser.get(url, allow_redirects=False) as response:
                query = parse_qs(urlsplit(response.headers.get("Location", "")).query)
                if "response" in query:  # to the client, in a signed JARM response
                    answer = _decode_segment(query["response"][0].split(".")[1])
                    where = "JARM error response to the client"
                else:
                    answer, where = await response.json(), "the gateway's page"
            self.say(f"   {label}: {response.status}, {where}:")
            self.say(f"     {answer['error']}: {answer['error_description']}")
        unseen = len(self.recorder.requests) == seen
        self.say(f"   the legacy server received {'nothing' if unseen else 'a request!'}")
        if not unseen:
            raise RuntimeError("a refused request reached the legacy server")

    def _authorize_url(self, token: str) -> str:
        return f"{self.issuer}/authorize?" + urlencode({"client_id": CLIENT_ID, "request": token})

    def verify(self, token: str, keys: KeySet, state: str) -> jwt.Token:
        """Verify a JARM response as a client does (JARM §2.4) and show its claims."""
        verified = jwt.decode(token, keys, algorithms=["ES256"])
        jwt.JWTClaimsRegistry(
            iss={"essential": True, "value": self.issuer},
            aud={"essential": True, "value": CLIENT_ID},
            exp={"essential": True},
        ).validate(verified.claims)
        self.show(verified.claims)
        if verified.claims.get("state") != state:
            raise RuntimeError("the response's state is not the client's")
        return verified


async def run_demo(serve: bool = False, say: Print = print) -> int:
    """Run the demo; with ``serve`` keep both servers up until interrupted."""
    demo = Demo(say)
    await demo.start()
    try:
        say("jargate demo: a legacy authorization server that knows nothing of JAR or JARM,")
        say("and jargate in front of it, both on loopback with throw-away keys.")
        say(f"   legacy server: {demo.legacy_url}")
        say(f"   jargate:       {demo.issuer}  (the issuer clients see)")
        try:
            await demo.flow()
        except (aiohttp.ClientError, KeyError, ValueError, RuntimeError) as exc:
            say(f"\njargate demo failed: {type(exc).__name__}: {exc}")
            return 1
        demo.section("Done")
        say("   Signed request in, signed response out; the legacy server saw plain OAuth.")
        if serve:
            say(f"\nServing until interrupted. Try: {demo.issuer}/.well-known/openid-configuration")
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, stop.set)
            await stop.wait()
    finally:
        await demo.stop()
    return 0
