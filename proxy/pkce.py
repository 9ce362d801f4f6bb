"""PKCE (RFC 7636): the challenge at the authorization and PAR endpoints, the verifier at the
token endpoint, for upstreams that store PKCE but never check it.

A ``code_challenge_method`` without a challenge, an unknown method, or a challenge outside
RFC 7636's 43-128 unreserved characters is refused. ``plain`` is refused where PKCE is
required (``JARGATE_REQUIRE_PKCE``, a client's ``require_pkce``, the fapi2 profiles).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

from .errors import InvalidRequest
from .profiles import Policy

#: RFC 7636 section 4.1 and 4.2: 43-128 characters of [A-Z] / [a-z] / [0-9] / "-._~".
_PKCE_VALUE = re.compile(r"[A-Za-z0-9\-._~]{43,128}")
METHODS = ("S256", "plain")


def check_challenge(params: dict[str, str], policy: Policy) -> None:
    """The authorization request's ``code_challenge`` (and method), as the policy wants it."""
    challenge = params.get("code_challenge")
    method = params.get("code_challenge_method")
    if challenge is None:
        if method is not None:
            raise InvalidRequest(
                "code_challenge_method needs a code_challenge", rule="pkce.challenge"
            )
        if policy.require_pkce:
            raise InvalidRequest(
                "this client must use PKCE with S256 (code_challenge)", rule="pkce.required"
            )
        return
    method = "plain" if method is None else method
    if method not in METHODS:
        raise InvalidRequest(
            f"code_challenge_method {method!r} is not supported", rule="pkce.method"
        )
    if method == "plain" and policy.require_pkce:
        raise InvalidRequest("code_challenge_method must be S256, not plain", rule="pkce.plain")
    if not _PKCE_VALUE.fullmatch(challenge):
        raise InvalidRequest(
            "code_challenge must be 43 to 128 unreserved characters", rule="pkce.challenge"
        )


def well_formed_verifier(verifier: str) -> bool:
    """RFC 7636 section 4.1's shape of a ``code_verifier``."""
    return _PKCE_VALUE.fullmatch(verifier) is not None


def verifier_matches(verifier: str, challenge: str, method: str) -> bool:
    """RFC 7636 section 4.6: the verifier, transformed by the method, is the challenge."""
    if method == "S256":
        digest = hashlib.sha256(verifier.encode("ascii")).digest()
        verifier = base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")
    return hmac.compare_digest(verifier.encode("ascii"), challenge.encode("ascii"))
