"""The fixed list of rules the gateway refuses by: the ``reason`` of every refusal's log
line and of ``jargate_authorization_decisions_total``. Each id names one rule; the client
sees only the RFC's error code and a description, never the id. docs/reference.md lists
them; tests/test_rules.py checks that every rule the code raises is here, and here only.
"""

from __future__ import annotations

#: What each JWT kind is called in rule ids.
KINDS = ("request_object", "client_assertion")

_JWT_RULES = {
    "compact": "not a compact JWS (or JWE)",
    "compact.base64url": "a segment is not base64url in its canonical spelling",
    "compact.json": "the header or payload is not a strict JSON object",
    "crit": "a critical header extension, or an unencoded payload (b64)",
    "alg": "alg none, or not on the asymmetric allow-list",
    "alg.pinned": "not the client's registered signing alg",
    "kid": "no registered key of the client for this kid and alg",
    "keys_unavailable": "the client's jwks_uri cannot be fetched and nothing is cached",
    "signature": "the signature does not verify",
    "exp": "exp missing, not a NumericDate, or past",
    "nbf": "nbf not a NumericDate, or in the future",
    "iat": "iat not a NumericDate, or in the future",
    "aud": "aud missing, malformed or not the gateway",
    "made_before_store_reset": "made before the store's memory began (a Redis restarted empty)",
}

RULES: dict[str, str] = {
    # the gateway's routes
    "route.method": "a method the gateway does not answer on its own path (405)",
    "route.target": "a request target that is not a path (absolute form)",
    # reading the parameters
    "parameters.body_encoding": "a body the gateway reads is content-encoded",
    "parameters.body_type": "a body the gateway reads is not a form",
    "parameters.utf8": "parameters that are not UTF-8",
    "parameters.semicolon": "a raw ';' in a query or form",
    "parameters.spelling": "a parameter name that only folds to an OAuth parameter's",
    "parameters.repeated": "a parameter sent twice",
    "parameters.differs": "a parameter with different values in query and body",
    "parameters.count": "more parameters than JARGATE_MAX_PARAMETERS",
    "request": "an invalid authorization request",
    "request.body_size": "a body larger than JARGATE_MAX_BODY_BYTES (413)",
    "request.both": "request and request_uri together",
    "request.response_type": "a plain request without response_type",
    "request.not_supported": "the request parameter is not supported",
    # clients
    "client_id.missing": "JAR or JARM without a client_id",
    "client_id.differs": "two client_ids (query and body)",
    "client_id.equivalent": "an unknown client_id that folds to a registered one",
    "client.unregistered": "an unregistered client (JARGATE_REQUIRE_REGISTERED_CLIENTS)",
    "client.unregistered_jar": "an unregistered client using JAR or JARM",
    "client.unauthorized": "the client may not use this method",
    # the client's policy
    "policy": "the client's registered policy",
    "policy.signed_request_object": "a plain request from a client that must sign",
    "policy.encrypted_request_object": "a plain request from a client that must encrypt",
    "policy.pushed_authorization_requests": "not pushed, from a client that must use PAR",
    # destinations
    "redirect_uri.missing": "no redirect_uri, and not exactly one registered",
    "redirect_uri.unregistered": "a redirect_uri not registered for the client",
    "response_mode.unknown": "an unknown response_mode",
    "response_mode.tokens_in_query": "tokens asked for in a query (unencrypted)",
    # request objects
    "request_object": "an invalid request object",
    "request_object.size": "larger than JARGATE_MAX_REQUEST_OBJECT_BYTES",
    "request_object.encryption.required": "not encrypted, from a client that must encrypt",
    "request_object.encryption.alg": "a JWE alg not supported",
    "request_object.encryption.enc": "a JWE enc not supported",
    "request_object.encryption.zip": "a compressed JWE",
    "request_object.encryption.pinned": "not the client's registered JWE alg and enc",
    "request_object.encryption.decrypt": "the JWE does not decrypt",
    "request_object.encryption.nested": "the JWE does not hold a signed JWT",
    "request_object.typ": "a typ of another kind of JWT",
    "request_object.claim_type": "a claim of the wrong JSON type",
    "request_object.iss": "iss is not the client_id",
    "request_object.lifetime": "exp too far after nbf, iat or now",
    "request_object.jti": "a jti longer than 64 bytes",
    "request_object.nested": "a request or request_uri claim inside",
    "request_object.client_id": "client_id missing inside, or differing from the query's",
    "request_object.response_type": "response_type missing inside, or differing",
    "request_object.replay": "already used (its jti, or its payload, is claimed)",
    # request_uri
    "request_uri": "an unusable request_uri",
    "request_uri.not_supported": "request_uri is not supported",
    "request_uri.not_registered": "by reference, from a client that registered no request_uris",
    "request_uri.length": "a request_uri longer than 2048 characters",
    "request_uri.scheme": "a request_uri that is not https",
    "request_uri.host": "a request_uri without a host, or with credentials",
    "request_uri.dot_segments": "a request_uri with dot segments",
    "request_uri.prefix": "a request_uri under none of the client's registered prefixes",
    "request_uri.address": "a request_uri to a non-public address",
    "request_uri.fetches": "too many of the client's fetches in progress",
    "request_uri.status": "the request_uri answered other than 200",
    "request_uri.content_type": "the request_uri answered another media type",
    "request_uri.size": "the request_uri's body is too large",
    "request_uri.content": "the request_uri's body is not a JWT",
    "request_uri.fetch": "the request_uri could not be fetched",
    "request_uri.pushed_unknown": "a pushed request_uri unknown, expired or used",
    "request_uri.other_browser": "a pushed request_uri in use in another browser",
    # PAR and client authentication
    "par.request_uri": "request_uri at the PAR endpoint",
    "par.pkce": "a public client pushing without PKCE S256",
    "client_authentication": "client authentication failed",
    "client_authentication.basic": "malformed Basic credentials",
    "client_authentication.methods": "more than one client authentication method",
    "client_authentication.client_id": "client_id differs from the authenticated client",
    "client_authentication.unknown_client": "a client the registry does not know",
    "client_authentication.method": "not the client's registered method",
    "client_authentication.secret": "the secret does not match",
    "client_assertion.type": "client_assertion_type is not the JWT bearer type",
    "client_assertion.typ": "a request object presented as an assertion",
    "client_assertion.iss": "iss and sub are not the client_id",
    "client_assertion.lifetime": "exp more than 5 minutes ahead",
    "client_assertion.jti": "no jti",
    "client_assertion.replay": "an assertion already used",
    # PKCE at the authorization and PAR endpoints
    "pkce.required": "no code_challenge, where PKCE is required",
    "pkce.plain": "code_challenge_method plain, where PKCE is required",
    "pkce.method": "an unknown code_challenge_method",
    "pkce.challenge": "a malformed code_challenge, or a method without one",
    # FAPI 2.0 (JARGATE_PROFILE, a client's profile)
    "fapi2.response_type": "a response_type other than code (unsupported_response_type)",
    "fapi2.redirect_uri": "no redirect_uri in the request",
    "fapi2.response_mode": "a plain response_mode under Message Signing (JARM only)",
    "fapi2.grant_type": "the password grant at the token endpoint (unauthorized_client)",
    # the token endpoint
    "token.query": "token request parameters in the query",
    "token.grant_type": "a registered client's token request without grant_type",
    "token.grant": "an invalid grant",
    "token.code_missing": "grant_type authorization_code without code",
    "token.code_unknown": "a code the gateway did not deliver, or expired",
    "token.code_client": "a code delivered to another client (or presented naming none)",
    "token.code_expired": "a code older than its lifetime",
    "token.code_replay": "a code redeemed before (a likely theft; counted)",
    "token.redirect_uri": "redirect_uri missing or not the authorization request's",
    "token.pkce_missing": "no code_verifier for a code with a code_challenge",
    "token.pkce": "a code_verifier that does not match the code_challenge",
    "token.pkce_downgrade": "a code_verifier for a code without a code_challenge",
    # flows
    "flow.unknown": "a handle for an unknown or expired flow at the authorization endpoint",
    "flow.unknown_response": "an upstream response for an unknown, expired or completed flow",
    "flow.other_browser": "a flow resumed or completed from another browser",
    "reentry.changed": "a re-entry that changes a parameter the gateway forwarded",
    "reentry.added": "a re-entry that adds an OAuth parameter",
    # the response side
    "server": "the gateway could not process the request",
    "jarm.key_missing": "a key a JARM response needs is missing (logged)",
    "response.redirect_mismatch": "the upstream sent a flow's response to another URI",
    "response.uncheckable": "an upstream page the gateway must check and cannot",
    # outages
    "outage": "a dependency is down",
    "outage.store": "the store cannot be reached",
    "outage.upstream": "the upstream cannot be reached",
    "outage.upstream_timeout": "the upstream did not answer in time",
    "store.pending_flows_per_address": "too many plain flows waiting from one address",
    "gateway": "any other refusal",
    # what a client checks of a JARM response: jargate inspect only, never a refusal
    "jarm_response.compact": "not a compact JWS (or JWE)",
    "jarm_response.compact.base64url": "a segment is not base64url in its canonical spelling",
    "jarm_response.compact.json": "the header or payload is not a strict JSON object",
    "jarm_response.crit": "a critical header extension, or an unencoded payload (b64)",
    "jarm_response.decrypt": "an encrypted response that does not decrypt with the client's key",
    "jarm_response.encryption": "encrypted, or not, otherwise than the client registered",
    "jarm_response.alg": "not the client's authorization_signed_response_alg",
    "jarm_response.kid": "no signing key of the gateway (JARGATE_KEYS_FILE) for this kid",
    "jarm_response.signature": "the signature does not verify with the gateway's key",
    "jarm_response.iss": "iss is not JARGATE_ISSUER",
    "jarm_response.aud": "aud is not the client_id, or no registered client",
    "jarm_response.exp": "exp missing, not a NumericDate, or past",
}
for _kind in KINDS:
    for _rule, _meaning in _JWT_RULES.items():
        RULES.setdefault(f"{_kind}.{_rule}", _meaning)
