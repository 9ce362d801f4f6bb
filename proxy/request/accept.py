"""What the authorization endpoint accepts, and where its answer (or refusal) may go.

A request object is obtained, decrypted, verified and validated, and its ``jti`` claim
prepared (:func:`verified_request`); a plain request from a registered client is checked
against the client's policy (:func:`plain_request`). Either names the destination the
response will go to: a redirect URI is trusted when it is registered for the client and
named by a verified object or a plain request (:func:`trusted_destination`); a refusal
made after the object verified goes there (:meth:`~proxy.errors.Refusal.to`).
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from proxy import appkeys
from proxy.clients import RegisteredClient
from proxy.config import config_of
from proxy.errors import InvalidRequest, InvalidRequestObject, PolicyRefusal, Refusal
from proxy.flows import Destination
from proxy.pkce import check_challenge
from proxy.profiles import policy_of
from proxy.response.deliver import returns_tokens
from proxy.settings import Settings

from .fapi2 import check_fapi2_request
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
    """An authorization request the gateway will forward: its parameters as the client sent
    them (``redirect_uri`` only if it named one) and where its response goes."""

    params: dict[str, str]
    destination: Destination
    source: str
    #: The request object's replay claim, made when the flow is stored (JAR only).
    claim: JtiClaim | None = None


def trusted_destination(
    params: dict[str, str], client: RegisteredClient, error: type[Refusal]
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
            raise error("redirect_uri is required", rule="redirect_uri.missing")
        redirect_uri = registered[0]
    elif redirect_uri not in registered:
        raise error(
            "redirect_uri is not registered for this client", rule="redirect_uri.unregistered"
        )
    mode = params.get("response_mode")
    if mode is not None and mode not in RESPONSE_MODES:
        raise error(f"response_mode {mode!r} is not supported", rule="response_mode.unknown")
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
        raise InvalidRequest(
            "response_mode query cannot carry tokens", rule="response_mode.tokens_in_query"
        )
    if (
        destination.response_mode == "query.jwt"
        and client.meta.authorization_encrypted_response_alg is None
    ):
        raise InvalidRequest(
            "response_mode query.jwt cannot carry tokens unless the response is encrypted",
            rule="response_mode.tokens_in_query",
        )


def require_response_type(inner: dict[str, str]) -> None:
    """A request object carries ``response_type`` itself (RFC 9101 section 4)."""
    if "response_type" not in inner:
        raise InvalidRequestObject(
            "response_type is required in the request object",
            rule="request_object.response_type",
        )


def outer_destination(params: dict[str, str], client: RegisteredClient) -> Destination | None:
    """Where errors go before a request object verified: the outer parameters' redirect
    URI, only when it is explicitly named and registered."""
    if "redirect_uri" not in params:
        return None
    try:
        return trusted_destination(params, client, InvalidRequest)
    except Refusal:
        return None


async def verified_request(
    request: web.Request, params: dict[str, str], client: RegisteredClient
) -> Accepted:
    """Obtain, decrypt, verify and validate the request object; claim its jti."""
    app = request.app
    settings = app[appkeys.SETTINGS]
    source = describe_source(params)
    if "request" in params and "request_uri" in params:
        raise InvalidRequest(
            "request and request_uri must not be used together", rule="request.both"
        )
    if source == "value":
        token = check_request_object_size(params["request"], settings.max_request_object_bytes)
    else:
        token = await fetch_request_object(
            params["request_uri"], client, settings, app[appkeys.FETCH], app[appkeys.STORE]
        )
    depth = settings.max_json_depth
    policy = policy_of(settings, client)
    signed, encrypted = decrypt_request_object(token, config_of(request).keyring, client, depth)
    verified = await verify_request_object(
        signed, client, app[appkeys.JWKS_CACHE], encrypted, depth, allowed=policy.signing_algs
    )
    validate_claims(verified, client, params, settings)
    inner = parameters_from_claims(verified.claims)
    inner.setdefault("client_id", client.client_id)
    destination = trusted_destination(inner, client, InvalidRequestObject)
    # Verified: from here on the object's own redirect URI receives the refusals.
    try:
        require_response_type(inner)
        check_response_mode(destination, client)
        check_challenge(inner, policy)
        inner, destination = check_fapi2_request(inner, destination, policy)
    except Refusal as refusal:
        raise refusal.to(destination) from None
    claim = jti_claim(client, verified, settings)
    return Accepted(params=inner, destination=destination, source=source, claim=claim)


def plain_request(params: dict[str, str], client: RegisteredClient, settings: Settings) -> Accepted:
    """A plain authorization request from a registered client."""
    policy = policy_of(settings, client)
    if client.meta.require_signed_request_object or policy.message_signing:
        raise PolicyRefusal(
            "this client must send a signed request object", rule="policy.signed_request_object"
        )
    if client.meta.request_object_encryption_alg is not None:
        raise PolicyRefusal(
            "this client must send an encrypted request object",
            rule="policy.encrypted_request_object",
        )
    destination = trusted_destination(params, client, InvalidRequest)
    if "response_type" not in params:
        raise InvalidRequest("response_type is required", rule="request.response_type")
    check_response_mode(destination, client)
    check_challenge(params, policy)
    params, destination = check_fapi2_request(params, destination, policy)
    return Accepted(params=params, destination=destination, source="plain")


def reported_or_raise(settings: Settings, refusal: PolicyRefusal) -> PolicyRefusal:
    """A policy refusal is raised, unless ``JARGATE_ENFORCEMENT=report`` lets it pass: then
    it is what the decision reports (logged and counted as ``reported``)."""
    if settings.enforcement != "report":
        raise refusal
    return refusal
