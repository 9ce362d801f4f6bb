"""Discovery documents: where the upstream keeps its own, where clients look for the
gateway's, and what the gateway writes into them.

Servers keep their document in different places: at the root, under the issuer's path
(Keycloak's ``/realms/NAME/``, OpenID Connect Discovery section 4), with RFC 8414's path
insertion, or under the authorization endpoint's parent (django-oauth-toolkit's ``/o/``).
:func:`candidate_paths` lists where to look (``JARGATE_UPSTREAM_DISCOVERY_PATH`` first when
set); :func:`served_paths` where clients look, each of which serves the same document: the
upstream's (OpenID Connect's or RFC 8414's, whichever it has), with the gateway's fields
(:func:`augment`), or one built from the settings when it has none.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from proxy.algorithms import ENCRYPTION_ALGS, ENCRYPTION_ENCS, FAPI2_SIGNING_ALGS, SIGNING_ALGS
from proxy.keyring import Keyring
from proxy.request.params import JWT_MODES, PLAIN_MODES
from proxy.settings import Settings

OPENID = "/.well-known/openid-configuration"
OAUTH = "/.well-known/oauth-authorization-server"
#: The root documents (kept for callers that name them).
DISCOVERY_PATHS = (OPENID, OAUTH)


def _unique(paths: list[str]) -> list[str]:
    return list(dict.fromkeys(paths))


def _issuer_path(settings: Settings) -> str:
    return urlsplit(settings.issuer).path.rstrip("/")


def candidate_paths(settings: Settings) -> list[str]:
    """Where the upstream's document may be, in the order they are tried."""
    issuer_path = _issuer_path(settings)
    parent = settings.authorization_path.rstrip("/").rpartition("/")[0]
    paths = [settings.upstream_discovery_path] if settings.upstream_discovery_path else []
    paths += [OPENID, OAUTH]
    if issuer_path:
        paths += [issuer_path + OPENID, OAUTH + issuer_path]
    if parent:
        paths += [parent + OPENID, parent + OAUTH]
    return _unique(paths)


def served_paths(settings: Settings) -> list[str]:
    """Every path at which the gateway serves its document: the roots, the issuer's own
    (OpenID Connect's appended, RFC 8414's inserted) and wherever the upstream's may be."""
    return candidate_paths(settings)


def origin_of(url: str) -> str:
    """``scheme://host[:port]`` of a URL."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def gateway_fields(settings: Settings, keyring: Keyring) -> dict[str, Any]:
    """The metadata the gateway is responsible for (RFC 9101 §9, RFC 9126 §5, JARM §4,
    RFC 9207 §3). ``request_uri_parameter_supported`` is explicit: its default is true."""
    origin = origin_of(settings.issuer)
    fapi2 = settings.profile != "oauth2"
    algs = FAPI2_SIGNING_ALGS if fapi2 else SIGNING_ALGS
    fields: dict[str, Any] = {
        "request_parameter_supported": True,
        "request_uri_parameter_supported": True,
        "require_request_uri_registration": True,
        "request_object_signing_alg_values_supported": list(algs),
        "authorization_signing_alg_values_supported": [
            alg for alg in keyring.signing_algs if alg in algs
        ],
        "authorization_encryption_alg_values_supported": list(ENCRYPTION_ALGS),
        "authorization_encryption_enc_values_supported": list(ENCRYPTION_ENCS),
        "authorization_response_iss_parameter_supported": settings.require_registered_clients,
        "pushed_authorization_request_endpoint": origin + settings.par_path,
        "require_pushed_authorization_requests": settings.require_par or fapi2,
        "token_endpoint_auth_signing_alg_values_supported": list(algs),
    }
    if fapi2:
        # FAPI 2.0 Security Profile §5.3.2.2: the code flow only.
        fields["response_types_supported"] = ["code"]
    if settings.profile == "fapi2-message-signing":
        fields["require_signed_request_object"] = True
        fields["response_modes_supported"] = sorted(JWT_MODES)
    if keyring.decryption_algs:
        fields["request_object_encryption_alg_values_supported"] = list(keyring.decryption_algs)
        fields["request_object_encryption_enc_values_supported"] = list(ENCRYPTION_ENCS)
    return fields


def augment(
    document: dict[str, Any], settings: Settings, keyring: Keyring, token_path: str
) -> dict[str, Any]:
    """The upstream's document with the gateway's fields set and the JWT response modes
    added to the modes it supports (Discovery's default is query and fragment); its token
    endpoint is the one the gateway guards, at ``token_path``."""
    result = dict(document)
    upstream_modes = document.get("response_modes_supported")
    modes = list(upstream_modes) if isinstance(upstream_modes, list) else ["query", "fragment"]
    for mode in sorted(PLAIN_MODES) + sorted(JWT_MODES):
        if mode not in modes:
            modes.append(mode)
    result["response_modes_supported"] = modes
    claimed_iss = document.get("authorization_response_iss_parameter_supported") is True
    result.update(gateway_fields(settings, keyring))
    result["token_endpoint"] = origin_of(settings.issuer) + token_path
    result["code_challenge_methods_supported"] = code_challenge_methods(settings)
    result["token_endpoint_auth_methods_supported"] = auth_methods(document, settings)
    # RFC 9207 section 2.4: claimed only when every response through the gateway has iss:
    # registered clients get the gateway's; unregistered ones only what the upstream adds.
    if claimed_iss:
        result["authorization_response_iss_parameter_supported"] = True
    # An upstream jwks_uri stays (ID tokens are verified with it); the gateway's keys are
    # merged into it at JARGATE_UPSTREAM_JWKS_PATH. Without one, the gateway's own serves.
    result.setdefault("jwks_uri", published_jwks_uri(settings))
    return result


def published_jwks_uri(settings: Settings) -> str:
    """Where clients find the gateway's keys: merged into the upstream's JWKS when
    ``JARGATE_UPSTREAM_JWKS_PATH`` is set, else the gateway's own."""
    path = settings.upstream_jwks_path or settings.jwks_path
    return origin_of(settings.issuer) + path


def built_document(settings: Settings, keyring: Keyring, token_path: str) -> dict[str, Any]:
    """A document for an upstream that has none, from the settings alone, with what RFC
    8414 section 2 requires."""
    document = {
        "issuer": settings.issuer,
        "authorization_endpoint": origin_of(settings.issuer) + settings.authorization_path,
        "jwks_uri": published_jwks_uri(settings),
        "response_types_supported": ["code"],
    }
    return augment(document, settings, keyring, token_path)


def auth_methods(document: dict[str, Any], settings: Settings) -> list[str]:
    """The client authentication methods of the token and PAR endpoints: the upstream's
    (RFC 8414's default: client_secret_basic) and ``private_key_jwt``, which the gateway
    checks itself; under the fapi2 profiles ``private_key_jwt`` alone."""
    if settings.profile != "oauth2":
        return ["private_key_jwt"]
    listed = document.get("token_endpoint_auth_methods_supported")
    methods = [m for m in listed if isinstance(m, str)] if isinstance(listed, list) else []
    methods = methods or ["client_secret_basic"]
    return methods if "private_key_jwt" in methods else [*methods, "private_key_jwt"]


def code_challenge_methods(settings: Settings) -> list[str]:
    """What the gateway checks at the token endpoint (RFC 8414 section 2): S256, and plain
    where PKCE is not required of every client."""
    required = settings.profile != "oauth2" or settings.require_pkce
    return ["S256"] if required else ["S256", "plain"]
