"""What the authorization endpoint accepts, and where its answer (or refusal) may go.

A request object is obtained, decrypted, verified and validated, and its ``jti`` claim
prepared (:func:`verified_request`); a plain request from a registered client is checked
against the client's policy (:func:`plain_request`). Either names the destination the
response will go to: a redirect URI is trusted when it is registered for the client and
named by a verified object or a plain request (:func:`trusted_destination`).
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from proxy import appkeys
from proxy.clients import RegisteredClient
from proxy.errors import (
    GatewayError,
    InvalidRequest,
    InvalidRequestObject,
    PolicyRefusal,
    TemporarilyUnavailable,
)
from proxy.observability import DECISION
from proxy.response.deliver import Destination, returns_tokens

from .obtain import check_request_object_size, describe_source, fetch_request_object
from .params import RESPONSE_MODES, parameters_from_claims
from .verify import (
    JtiClaim,
    decrypt_request_object,
    jti_claim,
    validate_claims,
    verify_request_object,
)


@dataclass(frozen=True, slots=True)
class Accepted:
    """An authorization request the gateway will forward."""

    params: dict[str, str]
    destination: Destination
    source: str
    #: The request object's replay claim, made when the flow is stored (JAR only).
    claim: JtiClaim | None = None


class VerifiedRefusal(Exception):
    """A refusal after the request object verified: its redirect URI is trusted."""

    def __init__(self, err: GatewayError, destination: Destination) -> None:
        super().__init__(err)
        self.err = err
        self.destination = destination


def trusted_destination(
    params: dict[str, str], client: RegisteredClient, error: type[GatewayError]
) -> Destination:
    """The redirect URI and mode the parameters name, if they may receive a response.

    ``redirect_uri`` may be omitted only when the client registered exactly one; it
    must be one of the registered ones (exact match). An unknown ``response_mode`` is
    refused, never ignored. Failures raise ``error`` and are shown on the gateway's page.
    """
    registered = client.meta.redirect_uris
    redirect_uri = params.get("redirect_uri")
    if redirect_uri is None:
        if len(registered) != 1:
            raise error("redirect_uri is required")
        redirect_uri = registered[0]
    elif redirect_uri not in registered:
        raise error("redirect_uri is not registered for this client")
    mode = params.get("response_mode")
    if mode is not None and mode not in RESPONSE_MODES:
        raise error(f"response_mode {mode!r} is not supported")
    return Destination(
        client_id=client.client_id,
        redirect_uri=redirect_uri,
        response_type=params.get("response_type", ""),
        response_mode=mode,
        state=params.get("state"),
    )


def check_response_mode(destination: Destination, client: RegisteredClient) -> None:
    """Tokens never travel in a query: not with ``query`` (OAuth Multiple Response Types
    §3.0) and not with ``query.jwt`` unless the response is encrypted (JARM §2.3.1)."""
    if not returns_tokens(destination.response_type):
        return
    if destination.response_mode == "query":
        raise InvalidRequest("response_mode query cannot carry tokens")
    if (
        destination.response_mode == "query.jwt"
        and client.meta.authorization_encrypted_response_alg is None
    ):
        raise InvalidRequest(
            "response_mode query.jwt cannot carry tokens unless the response is encrypted"
        )


def outer_destination(params: dict[str, str], client: RegisteredClient) -> Destination | None:
    """Where errors go before a request object verified: the outer parameters' redirect
    URI, only when it is explicitly named and registered."""
    if "redirect_uri" not in params:
        return None
    try:
        return trusted_destination(params, client, InvalidRequest)
    except GatewayError:
        return None


async def verified_request(
    request: web.Request, params: dict[str, str], client: RegisteredClient
) -> Accepted:
    """Obtain, decrypt, verify and validate the request object; claim its jti."""
    app = request.app
    settings = app[appkeys.SETTINGS]
    source = describe_source(params)
    if "request" in params and "request_uri" in params:
        raise InvalidRequest("request and request_uri must not be used together")
    if source == "value":
        token = check_request_object_size(params["request"], settings.max_request_object_bytes)
    else:
        token = await fetch_request_object(
            params["request_uri"], client, settings, app[appkeys.FETCH], app[appkeys.STORE]
        )
    depth = settings.max_json_depth
    signed, encrypted = decrypt_request_object(token, app[appkeys.KEYRING], client, depth)
    verified = await verify_request_object(
        signed, client, app[appkeys.JWKS_CACHE], encrypted, depth
    )
    validate_claims(verified, client, params, settings)
    inner = parameters_from_claims(verified.claims)
    inner.setdefault("client_id", client.client_id)
    destination = trusted_destination(inner, client, InvalidRequestObject)
    inner["redirect_uri"] = destination.redirect_uri
    try:
        if "response_type" not in inner:
            raise InvalidRequestObject("response_type is required in the request object")
        check_response_mode(destination, client)
    except TemporarilyUnavailable:
        raise
    except GatewayError as err:
        raise VerifiedRefusal(err, destination) from None
    claim = jti_claim(client, verified, settings)
    return Accepted(params=inner, destination=destination, source=source, claim=claim)


def plain_request(params: dict[str, str], client: RegisteredClient) -> Accepted:
    """A plain authorization request from a registered client."""
    if client.meta.require_signed_request_object:
        raise PolicyRefusal("this client must send a signed request object")
    if client.meta.request_object_encryption_alg is not None:
        raise PolicyRefusal("this client must send an encrypted request object")
    destination = trusted_destination(params, client, InvalidRequest)
    if "response_type" not in params:
        raise InvalidRequest("response_type is required")
    check_response_mode(destination, client)
    return Accepted(
        params={**params, "redirect_uri": destination.redirect_uri},
        destination=destination,
        source="plain",
    )


def decide(
    request: web.Request, client_id: str | None, outcome: str, error: str, source: str
) -> None:
    """Count one authorization decision; it is logged on the request's access line (one
    line per request), never with the request object itself."""
    request.app[appkeys.METRICS].count_decision(outcome, error, source)
    request[DECISION] = {
        "client_id": client_id,
        "outcome": outcome,
        "error": error,
        "source": source,
    }
