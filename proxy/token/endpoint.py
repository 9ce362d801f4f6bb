"""The token endpoint (RFC 6749 section 3.2), served at the upstream's own path.

Unregistered clients pass through untouched. For a registered client, before the upstream
sees anything:

- ``grant_type=authorization_code``: the code must be one the gateway delivered to this
  client (:mod:`proxy.codes`: sealed, or recorded), within its lifetime, redeemed once
  across replicas, and the upstream gets the code it made; the
  ``redirect_uri`` as in the authorization request; the ``code_verifier`` must match the
  recorded PKCE challenge (RFC 7636 section 4.6), and one without a challenge is refused
  (RFC 9700 section 2.1.1: no PKCE downgrade).
- With ``upstream_token_endpoint_auth_method``, the client authenticates to the gateway as
  registered (:mod:`proxy.request.client_auth`, every grant) and the gateway authenticates
  it to the upstream with the upstream secret; otherwise the client's own credentials go
  upstream unchanged.

Parameters come in the body only (a query is refused: servers that merge it into the form
would read what the gateway did not), read as every server reads them. Errors are RFC 6749
section 5.2 JSON with ``no-store`` (:mod:`proxy.boundary`); the upstream's answer comes back
unchanged, and is never logged.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import quote_plus, urlencode, urlsplit

from aiohttp import web

from proxy import appkeys
from proxy.bodies import read_request_body
from proxy.clients import RegisteredClient
from proxy.codes import delivered_code, redeem_once
from proxy.config import config_of
from proxy.errors import InvalidClient, InvalidGrant, InvalidRequest, UnauthorizedClient
from proxy.metadata import upstream_discovery
from proxy.observability import REQUEST_ID, decide, note
from proxy.pkce import verifier_matches, well_formed_verifier
from proxy.profiles import Policy, policy_of
from proxy.request.client_auth import (
    AUTHENTICATION_PARAMETERS,
    authenticate_client,
    presented_client_ids,
)
from proxy.request.params import AUTHORIZATION_PARAMETERS, RawParameters, read_form
from proxy.routing import Route
from proxy.settings import SettingsError

log = logging.getLogger("jargate")

#: The token request's parameters (RFC 6749, 7523, 7636, 8693, 8707, 8628): their
#: near-spellings are refused like an authorization request's.
TOKEN_PARAMETERS = AUTHORIZATION_PARAMETERS | {
    "grant_type",
    "code",
    "code_verifier",
    "refresh_token",
    "client_secret",
    "client_assertion",
    "client_assertion_type",
    "username",
    "password",
    "device_code",
    "audience",
    "subject_token",
    "subject_token_type",
    "actor_token",
    "actor_token_type",
    "requested_token_type",
    "assertion",
}
#: Where the token path comes from when ``JARGATE_TOKEN_PATH`` is unset and the upstream's
#: discovery names none (RFC 8414 has no default; ``/token`` is the common one).
DEFAULT_TOKEN_PATH = "/token"  # noqa: S105 - a path


@dataclass(slots=True)
class TokenPath:
    """The token endpoint's path: the setting's, or found in the upstream's discovery at
    start (:func:`token_route_ctx`)."""

    path: str = DEFAULT_TOKEN_PATH


async def token(request: web.Request) -> web.StreamResponse:
    """``POST`` at the token endpoint."""
    app = request.app
    settings = app[appkeys.SETTINGS]
    if request.query_string:
        raise InvalidRequest(
            "the token endpoint takes its parameters in the body, not the query",
            rule="token.query",
        )
    pairs = await read_form(request, settings.max_parameters, TOKEN_PARAMETERS)
    form = RawParameters([], pairs).single()
    client = _registered_client(request, form)
    if client is None:
        await _refuse_registered_code(request, form)
        return await _send(request, await read_request_body(request))
    note(request, client.client_id, "token")
    policy = policy_of(settings, client)
    translated = client.meta.upstream_token_endpoint_auth_method is not None
    if translated or policy.fapi2:
        # FAPI 2.0's assertion rules hold here too, whoever checks the assertion after us.
        await authenticate_client(request, form, "token")
    grant = form.get("grant_type")
    if not grant:
        raise InvalidRequest("grant_type is required", rule="token.grant_type")
    if policy.fapi2 and grant == "password":
        raise UnauthorizedClient(
            "the password grant is not allowed (FAPI 2.0)", rule="fapi2.grant_type"
        )
    added: list[tuple[str, str]] = []
    unsealed = False
    # A code is checked whatever grant_type says: a server may read it under any.
    if grant == "authorization_code" or "code" in form:
        added, upstream_code = await _redeem_code(request, form, client, policy)
        # A sealed code goes upstream as the code the upstream made; a recorded one as sent.
        unsealed = upstream_code != form["code"]
        pairs = [(n, upstream_code if n == "code" else v) for n, v in pairs]
    decide(request, client.client_id, "accepted", "none", "token")
    if not translated:
        if unsealed:
            body = urlencode(pairs + added).encode("ascii")
        else:
            body = await read_request_body(request)
            if added:
                body += b"&" + urlencode(added).encode("ascii")
        return await _send(request, body)
    kept = [(name, value) for name, value in pairs if name not in AUTHENTICATION_PARAMETERS]
    body, authorization = _upstream_authentication(kept + added, client)
    return await _send(request, body, authorization, own_credentials=False)


def _registered_client(request: web.Request, form: dict[str, str]) -> RegisteredClient | None:
    """The registered client the request names, or None when it names none (it passes
    through). Another spelling of a registered client, or two different clients, is refused."""
    app = request.app
    registry = config_of(request).registry
    ids = presented_client_ids(request, form)
    found = {client.client_id for client in map(registry.get, ids) if client is not None}
    if any(registry.get(i) is None and registry.equivalent(i) is not None for i in ids):
        raise InvalidClient(
            "client_id is not the exact identifier of a registered client",
            rule="client_id.equivalent",
        )
    if len(ids) > 1 and found:
        raise InvalidRequest(
            "the request names more than one client", rule="client_authentication.client_id"
        )
    if not found:
        if app[appkeys.SETTINGS].require_registered_clients:
            raise UnauthorizedClient("this client is not registered", rule="client.unregistered")
        return None
    return registry.get(found.pop())


async def _refuse_registered_code(request: web.Request, form: dict[str, str]) -> None:
    """A code the gateway delivered to a registered client is redeemed only by that client,
    through the guard: not by a request naming no client, or an unregistered one."""
    code = form.get("code")
    if not code:
        return
    config = config_of(request)
    found = await delivered_code(request.app[appkeys.STORE], config.keyring.code_keys, code)
    if found is not None and config.registry.get(found[1].client_id) is not None:
        raise InvalidGrant(
            "the code is unknown, expired or not this client's", rule="token.code_client"
        )


async def _redeem_code(
    request: web.Request, form: dict[str, str], client: RegisteredClient, policy: Policy
) -> tuple[list[tuple[str, str]], str]:
    """Check the code against what the gateway delivered and claim its one redemption;
    the parameters to add upstream (the redirect URI the client did not name) and the code
    the upstream made (inside a sealed one)."""
    app = request.app
    store = app[appkeys.STORE]
    code = form.get("code")
    if not code:
        raise InvalidRequest("code is required", rule="token.code_missing")
    found = await delivered_code(store, config_of(request).keyring.code_keys, code)
    if found is None or found[1].client_id != client.client_id:
        rule = "token.code_unknown" if found is None else "token.code_client"
        raise InvalidGrant("the code is unknown, expired or not this client's", rule=rule)
    upstream_code, record = found
    # Never longer than the lifetime it was delivered with, nor than this client's now.
    delivered_for = record.lifetime or policy.code_lifetime
    age = time.time() - record.delivered_at
    if age > min(policy.code_lifetime, delivered_for):
        raise InvalidGrant("the code has expired", rule="token.code_expired")
    added: list[tuple[str, str]] = []
    redirect_uri = form.get("redirect_uri")
    if redirect_uri is None and record.redirect_uri_named:
        raise InvalidRequest(
            "redirect_uri is required: the authorization request named one",
            rule="token.redirect_uri",
        )
    if redirect_uri is None:
        added.append(("redirect_uri", record.redirect_uri))
    elif redirect_uri != record.redirect_uri:
        raise InvalidGrant(
            "redirect_uri is not the authorization request's", rule="token.redirect_uri"
        )
    _check_verifier(form.get("code_verifier"), record.code_challenge, record.code_challenge_method)
    # The claim outlasts the code at any replica, whichever lifetime it holds.
    longest = max(policy.code_lifetime, delivered_for)
    if not await redeem_once(store, upstream_code, longest - age + 1):
        app[appkeys.METRICS].code_replays.inc()
        log.warning(
            "an authorization code was presented a second time: likely stolen",
            extra={"client_id": client.client_id},
        )
        raise InvalidGrant("the code was already used", rule="token.code_replay")
    # Read after the claim (its round trip is where a reset is learnt): a sealed code
    # delivered before the store's memory began may have been redeemed, unremembered.
    if record.sealed and record.delivered_at < store.memory_since:
        log.warning(
            "a code delivered before the store's memory began was refused",
            extra={"client_id": client.client_id, "memory_since": store.memory_since},
        )
        raise InvalidGrant(
            "the code was delivered before the gateway's store lost its memory",
            rule="token.code_forgotten",
        )
    return added, upstream_code


def _check_verifier(verifier: str | None, challenge: str | None, method: str | None) -> None:
    """RFC 7636 section 4.6, and RFC 9700 section 2.1.1: a verifier only with a challenge."""
    if challenge is None:
        if verifier is not None:
            raise InvalidGrant(
                "code_verifier sent, but the authorization request had no code_challenge",
                rule="token.pkce_downgrade",
            )
        return
    if verifier is None:
        raise InvalidGrant("code_verifier is required", rule="token.pkce_missing")
    if not well_formed_verifier(verifier) or not verifier_matches(
        verifier, challenge, method or "plain"
    ):
        raise InvalidGrant("code_verifier does not match the code_challenge", rule="token.pkce")


def _upstream_authentication(
    pairs: list[tuple[str, str]], client: RegisteredClient
) -> tuple[bytes, str | None]:
    """The body and Authorization with which the gateway authenticates ``client`` to the
    upstream (RFC 6749 section 2.3.1: Basic's id and secret form-encoded first)."""
    method = client.meta.upstream_token_endpoint_auth_method
    secret = client.upstream_secret.get_secret_value() if client.upstream_secret else ""
    authorization = None
    if method == "client_secret_basic":
        joined = f"{quote_plus(client.client_id)}:{quote_plus(secret)}"
        authorization = "Basic " + base64.b64encode(joined.encode()).decode("ascii")
    elif method == "client_secret_post":
        pairs = [*pairs, ("client_id", client.client_id), ("client_secret", secret)]
    else:
        pairs = [*pairs, ("client_id", client.client_id)]
    return urlencode(pairs).encode("ascii"), authorization


async def _send(
    request: web.Request,
    body: bytes,
    authorization: str | None = None,
    *,
    own_credentials: bool = True,
) -> web.StreamResponse:
    """The token request to the upstream's token path (never another path the client's
    spelling reaches there), and its answer back unchanged. ``own_credentials=False``:
    the client's Authorization and cookies stay here (the gateway authenticates it)."""
    upstream_pool = request.app[appkeys.UPSTREAM]
    upstream = await upstream_pool.open(
        request,
        raw_target=request.app[appkeys.TOKEN_PATH].path,
        read_body=body,
        request_id=REQUEST_ID.get(),
        credentials=own_credentials,
        authorization=authorization,
    )
    try:
        return await upstream_pool.relay(request, upstream)
    finally:
        upstream.release()


async def token_route_ctx(app: web.Application) -> AsyncIterator[None]:
    """At start: the token path (the setting, else the upstream discovery's
    ``token_endpoint``, else ``/token``), owned by the router from then on."""
    settings = app[appkeys.SETTINGS]
    held = app[appkeys.TOKEN_PATH]
    if settings.token_path is not None:
        held.path = settings.token_path
    else:
        held.path = await _discovered_token_path(app)
    try:
        app[appkeys.ROUTER].own(
            held.path, Route(held.path, frozenset({"POST"}), token, back_channel=True)
        )
    except ValueError:
        source = (
            "JARGATE_TOKEN_PATH"
            if settings.token_path is not None
            else "the upstream's discovery (its token_endpoint)"
        )
        raise SettingsError(
            f"the token path {held.path!r}, from {source}, is another spelling of a path the "
            "gateway serves itself (authorization, PAR, discovery, JWKS): set "
            "JARGATE_TOKEN_PATH to the upstream's token endpoint"
        ) from None
    yield


async def _discovered_token_path(app: web.Application) -> str:
    settings = app[appkeys.SETTINGS]
    document = await upstream_discovery(app[appkeys.UPSTREAM].session, settings)
    endpoint = document.get("token_endpoint") if document is not None else None
    if isinstance(endpoint, str) and urlsplit(endpoint).path.startswith("/"):
        return urlsplit(endpoint).path
    log.warning(
        "the upstream's token endpoint is not known: the gateway guards %s, and the codes "
        "it delivers are redeemable only there; set JARGATE_TOKEN_PATH if the upstream's "
        "is elsewhere",
        DEFAULT_TOKEN_PATH,
    )
    return DEFAULT_TOKEN_PATH
