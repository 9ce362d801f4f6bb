"""The interop suite's two ends around jargate: the clients as jargate's registry and the
providers know them, the running peers, and each client's side of a flow (request URLs,
the response checked, the code redeemed)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from joserfc.jwk import ECKey, Key, RSAKey

from tests.browser import Arrival
from tests.idp.client import (
    REDIRECT_URI,
    SECRET,
    Request,
    client_assertion,
    push,
    redeem,
    relying_party,
    verify_jarm,
)
from tests.idp.process import IdentityProvider

PS256_KEY = RSAKey.generate_key(2048, parameters={"kid": "rp-ps256"})
ES256_KEY = ECKey.generate_key("P-256", parameters={"kid": "rp-es256"})
#: Which key and alg each JAR client signs with (and gets its JARM responses in).
SIGNERS: dict[str, tuple[Key, str]] = {
    "jar-ps256": (PS256_KEY, "PS256"),
    "jar-es256": (ES256_KEY, "ES256"),
}
UPSTREAM_CLIENTS = ["jar-ps256", "jar-es256", "par-basic", "plain-rp", "unregistered-rp"]


def gateway_registry() -> list[dict[str, Any]]:
    """jargate's registry: two must-sign JAR clients (JARM in their alg), a client pushing
    plain parameters with client_secret_basic, and a registered plain client.
    ``unregistered-rp`` exists only at the provider."""
    registry: list[dict[str, Any]] = [
        {
            "client_id": client_id,
            "jwks": {"keys": [key.as_dict(private=False)]},
            "redirect_uris": [REDIRECT_URI],
            "require_signed_request_object": True,
            "authorization_signed_response_alg": alg,
        }
        for client_id, (key, alg) in SIGNERS.items()
    ]
    registry.append(
        {
            "client_id": "par-basic",
            "redirect_uris": [REDIRECT_URI],
            "token_endpoint_auth_method": "client_secret_basic",
            "client_secret": SECRET,
        }
    )
    registry.append({"client_id": "plain-rp", "redirect_uris": [REDIRECT_URI]})
    return registry


@dataclass
class Peers:
    """The provider, the gateway in front of it, and the gateway's URLs for it."""

    idp: IdentityProvider
    #: How many requests the provider had received before this test.
    start: int

    def received(self) -> list[str]:
        """The requests the provider received during this test (``METHOD target``)."""
        return self.idp.received()[self.start :]

    @property
    def issuer(self) -> str:
        return self.idp.issuer

    def url(self, path: str) -> str:
        return self.idp.gateway_origin + path

    @property
    def authorization_url(self) -> str:
        return self.url(self.idp.paths.authorization)

    @property
    def jwks_url(self) -> str:
        return self.url(self.idp.paths.jwks)

    def rp(self, client_id: str) -> Any:
        return relying_party(client_id, self.issuer, self.url(self.idp.paths.token), self.jwks_url)


def signed(peers: Peers, request: Request, **claims: Any) -> str:
    key, alg = SIGNERS[request.client_id]
    return request.request_object(key, alg, peers.issuer, **claims)


async def completed(peers: Peers, request: Request, arrival: Arrival) -> dict[str, Any]:
    """The client's side of a successful flow: the response checked (JARM verified with
    the keys the provider's JWKS publishes through the gateway, or RFC 9207's ``iss``),
    the code exchanged through the gateway, the ID token validated by Authlib. Returns the
    ID token's claims."""
    assert arrival.at_redirect_uri, (arrival.status, arrival.trail, arrival.body[:500])
    params = arrival.params
    if request.response_mode is not None and request.response_mode.endswith("jwt"):
        assert ["response"] == list(params)
        alg = SIGNERS[request.client_id][1]
        params = await verify_jarm(
            params["response"], peers.jwks_url, peers.issuer, request.client_id, alg
        )
    else:
        assert peers.issuer == params.get("iss")
    assert request.state == params["state"]
    token, claims = await redeem(peers.rp(request.client_id), request, params["code"])
    assert "Bearer" == token["token_type"].capitalize()
    assert (peers.issuer, request.client_id, request.nonce) == (
        claims["iss"],
        claims["aud"] if isinstance(claims["aud"], str) else claims["aud"][0],
        claims["nonce"],
    )
    return claims


def consented(peers: Peers) -> bool:
    """The provider received its login form and its consent form (posted)."""
    received = peers.received()
    login = any(line.startswith("POST /accounts/login/") for line in received)
    consent = any(
        line.startswith("POST " + peers.idp.paths.authorization.rstrip("/")) for line in received
    )
    return login and consent


async def authorization_url(peers: Peers, request: Request, how: str, **claims: Any) -> str:
    """The gateway's authorization URL for ``request``: ``plain``, ``value`` (a signed
    request object), ``par-signed`` (pushed as a signed object, private_key_jwt) or
    ``par-plain`` (pushed as plain parameters, client_secret_basic)."""
    if how == "plain":
        return f"{peers.authorization_url}?{urlencode(request.parameters())}"
    if how == "value":
        query = {"client_id": request.client_id, "request": signed(peers, request, **claims)}
        return f"{peers.authorization_url}?{urlencode(query)}"
    if how == "par-signed":
        key, alg = SIGNERS[request.client_id]
        form = {
            "client_id": request.client_id,
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": client_assertion(key, alg, request.client_id, peers.issuer),
            "request": signed(peers, request, **claims),
        }
        pushed = await push(peers.url("/par"), form)
    else:
        pushed = await push(
            peers.url("/par"), request.parameters(), basic=(request.client_id, SECRET)
        )
    query = {"client_id": request.client_id, "request_uri": pushed["request_uri"]}
    return f"{peers.authorization_url}?{urlencode(query)}"
