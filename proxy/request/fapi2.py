"""The FAPI 2.0 rules for an authorization request (``JARGATE_PROFILE=fapi2`` or
``fapi2-message-signing``, or a client's ``profile``), beyond PKCE (:mod:`proxy.pkce`),
PAR (:mod:`.authorize`) and the signing algorithms (:mod:`.verify`).

Security Profile §5.3.2.2: ``response_type=code`` only, and the ``redirect_uri`` sent.
Message Signing §5.4: the response is a JARM response; a request that names no mode gets
``jwt``, one that names a plain mode is refused.
"""

from __future__ import annotations

from dataclasses import replace

from proxy.errors import InvalidRequest, UnsupportedResponseType
from proxy.flows import Destination
from proxy.profiles import Policy

from .params import JWT_MODES


def check_fapi2_request(
    params: dict[str, str], destination: Destination, policy: Policy
) -> tuple[dict[str, str], Destination]:
    """The request as the client's profile wants it, and where its response goes (in JARM
    under Message Signing: the parameters then name the mode, so a pushed request keeps it)."""
    if not policy.fapi2:
        return params, destination
    if params.get("response_type") != "code":
        raise UnsupportedResponseType(
            "only response_type code is allowed (FAPI 2.0)", rule="fapi2.response_type"
        )
    if "redirect_uri" not in params:
        raise InvalidRequest("redirect_uri is required (FAPI 2.0)", rule="fapi2.redirect_uri")
    if not policy.message_signing:
        return params, destination
    if destination.response_mode is None:
        return {**params, "response_mode": "jwt"}, replace(destination, response_mode="jwt")
    if destination.response_mode not in JWT_MODES:
        raise InvalidRequest(
            "the response must be a JWT (JARM) under FAPI 2.0 Message Signing",
            rule="fapi2.response_mode",
        )
    return params, destination
