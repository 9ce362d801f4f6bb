"""Authorization request parameters: reading them, and turning request-object claims into them."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from multidict import MultiDict, MultiDictProxy

from proxy.errors import InvalidRequest, InvalidRequestObject, PayloadTooLarge

#: Response modes a client may ask for (OAuth Multiple Response Types, Form Post, JARM §2.3).
PLAIN_MODES = frozenset({"query", "fragment", "form_post"})
JWT_MODES = frozenset({"query.jwt", "fragment.jwt", "form_post.jwt", "jwt"})
RESPONSE_MODES = PLAIN_MODES | JWT_MODES

#: JWT claims of a request object that are not authorization parameters (RFC 7519 §4.1).
JWT_CLAIMS = frozenset({"iss", "aud", "exp", "nbf", "iat", "jti", "sub"})
#: Parameters whose value is JSON (OIDC Core §5.5, RFC 9396); objects and arrays stay JSON.
JSON_PARAMETERS = frozenset({"claims", "authorization_details"})


async def read_params(request: web.Request, max_parameters: int) -> dict[str, str]:
    """The authorization request's parameters: the query, plus the form body of a POST.

    A parameter sent twice (RFC 6749 §3.1), or more than ``max_parameters`` of them, is
    ``invalid_request``.
    """
    combined: MultiDict[str] = MultiDict(request.query)
    if request.method == "POST":
        try:
            form: MultiDictProxy[str | Any] = await request.post()
        except web.HTTPRequestEntityTooLarge:
            raise PayloadTooLarge(
                f"the body is larger than {request.client_max_size} bytes"
            ) from None
        for name, value in form.items():
            if not isinstance(value, str):
                raise InvalidRequest(f"parameter {name!r} must not be a file upload")
            combined.add(name, value)
    if len(combined) > max_parameters:
        raise InvalidRequest(f"more than {max_parameters} parameters")
    params: dict[str, str] = {}
    for name, value in combined.items():
        if name in params:
            raise InvalidRequest(f"parameter {name!r} is repeated")
        params[name] = value
    return params


def parameters_from_claims(claims: dict[str, Any]) -> dict[str, str]:
    """The authorization parameters a verified request object carries (RFC 9101 §4).

    Strings stay strings; numbers and booleans become their JSON text; ``claims`` and
    ``authorization_details`` are re-serialised as JSON; ``null`` means absent; any
    other array or object is refused (a parameter has one value).
    """
    params: dict[str, str] = {}
    for name, value in claims.items():
        if name in JWT_CLAIMS or value is None:
            continue
        if isinstance(value, str):
            params[name] = value
        elif isinstance(value, bool):
            params[name] = "true" if value else "false"
        elif isinstance(value, int | float):
            params[name] = json.dumps(value)
        elif name in JSON_PARAMETERS and isinstance(value, dict | list):
            params[name] = json.dumps(value, separators=(",", ":"))
        else:
            raise InvalidRequestObject(
                f"claim {name!r} must be a string, not a JSON array or object"
            )
    return params
