"""Authorization request parameters: reading them as every server behind the gateway would,
and turning request-object claims into them.

The gateway decides from the parameters it reads; the upstream acts on the ones it reads.
So the reading refuses whatever two server stacks could read differently: a body that is
not a UTF-8 form (Rails, Laravel and Express merge JSON bodies into parameters), an
encoded body, a raw ``;`` (a separator to some servers), bytes that are not UTF-8, and a
name that only folds to an OAuth parameter's name (``Client_ID``, ``client.id``,
``client_id[]``: ASP.NET, PHP and Rails read those as the parameter itself).
"""

from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from proxy.bodies import read_request_body
from proxy.errors import InvalidRequest, InvalidRequestObject

#: Response modes a client may ask for (OAuth Multiple Response Types, Form Post, JARM section 2.3).
PLAIN_MODES = frozenset({"query", "fragment", "form_post"})
JWT_MODES = frozenset({"query.jwt", "fragment.jwt", "form_post.jwt", "jwt"})
RESPONSE_MODES = PLAIN_MODES | JWT_MODES

#: JWT claims of a request object that are not authorization parameters (RFC 7519 section 4.1).
JWT_CLAIMS = frozenset({"iss", "aud", "exp", "nbf", "iat", "jti", "sub"})
#: Parameters whose value is JSON (OIDC Core section 5.5, RFC 9396); objects and arrays stay JSON.
JSON_PARAMETERS = frozenset({"claims", "authorization_details"})
#: The authorization request's parameters: IANA's OAuth Parameters registry (usage location
#: "authorization request"), OpenID Connect Core and Registration, JAR, JARM, RFC 9207.
AUTHORIZATION_PARAMETERS = frozenset(
    {
        "response_type",
        "client_id",
        "redirect_uri",
        "scope",
        "state",
        "code_challenge",
        "code_challenge_method",
        "resource",
        "nonce",
        "display",
        "prompt",
        "max_age",
        "ui_locales",
        "claims_locales",
        "id_token_hint",
        "login_hint",
        "acr_values",
        "claims",
        "registration",
        "request",
        "request_uri",
        "response_mode",
        "authorization_details",
        "dpop_jkt",
        "trust_chain",
        "issuer_state",
    }
)
FORM = "application/x-www-form-urlencoded"


@dataclass(frozen=True, slots=True)
class RawParameters:
    """The parameters as they came: the query's and the form body's, in order."""

    query: list[tuple[str, str]]
    form: list[tuple[str, str]]

    def values(self, name: str) -> list[str]:
        """Every value ``name`` has, in the query and the body."""
        return [value for key, value in (*self.query, *self.form) if key == name]

    def single(self) -> dict[str, str]:
        """The parameters of an authorization request: one value each (RFC 6749
        section 3.1), a repeated parameter is ``invalid_request``."""
        params: dict[str, str] = {}
        for name, value in (*self.query, *self.form):
            if name in params:
                raise InvalidRequest(f"parameter {name!r} is repeated", rule="parameters.repeated")
            params[name] = value
        return params

    def merged(self) -> list[tuple[str, str]]:
        """The parameters of a request the upstream sends back (a login or consent form
        posted to the authorization URL): a parameter in both the query and the body with
        the same value is one parameter; with different values it is refused. An OAuth
        parameter is never repeated; the server's own fields may be."""
        seen: dict[str, str] = {}
        merged: list[tuple[str, str]] = []
        for part in (self.query, self.form):
            names = set()
            for name, value in part:
                if name in names and name in AUTHORIZATION_PARAMETERS:
                    raise InvalidRequest(
                        f"parameter {name!r} is repeated", rule="parameters.repeated"
                    )
                names.add(name)
                if part is self.form and name in seen and name in AUTHORIZATION_PARAMETERS:
                    if seen[name] != value:
                        raise InvalidRequest(
                            f"parameter {name!r} differs in query and body",
                            rule="parameters.differs",
                        )
                    continue
                seen.setdefault(name, value)
                merged.append((name, value))
        return merged


def check_form_body(request: web.BaseRequest) -> None:
    """A body the gateway reads itself must mean to it what it means to the upstream: a
    UTF-8 form, not encoded."""
    # Every Content-Encoding field: a server may read another one than the first.
    codings = ",".join(request.headers.getall("Content-Encoding", ("identity",)))
    if {coding.strip().lower() for coding in codings.split(",")} != {"identity"}:
        raise InvalidRequest(
            "the body must not be content-encoded", rule="parameters.body_encoding"
        )
    if request.content_type != FORM:
        raise InvalidRequest(f"the body must be {FORM}", rule="parameters.body_type")
    charset = request.charset
    if charset is not None and charset.lower().replace("_", "-") not in ("utf-8", "utf8"):
        raise InvalidRequest("the body must be UTF-8", rule="parameters.utf8")


def parse_form(
    text: str,
    max_parameters: int,
    where: str,
    names: frozenset[str] = AUTHORIZATION_PARAMETERS,
) -> list[tuple[str, str]]:
    """``application/x-www-form-urlencoded`` pairs, read the one way every server reads
    them, refusing what servers read differently (module docstring); ``names``: the
    parameters whose near-spellings are refused."""
    if ";" in text:
        raise InvalidRequest(
            f"a ';' in the {where} must be percent-encoded", rule="parameters.semicolon"
        )
    try:
        pairs = parse_qsl(
            text, keep_blank_values=True, errors="strict", max_num_fields=max_parameters
        )
    except UnicodeDecodeError:
        raise InvalidRequest(f"the {where} is not UTF-8", rule="parameters.utf8") from None
    except ValueError:
        raise InvalidRequest(
            f"more than {max_parameters} parameters", rule="parameters.count"
        ) from None
    for name, _ in pairs:
        folded = fold_parameter_name(name)
        if folded != name and folded in names:
            raise InvalidRequest(
                f"parameter {name!r} is not spelled as OAuth spells {folded!r}",
                rule="parameters.spelling",
            )
    return pairs


async def read_form(
    request: web.BaseRequest,
    max_parameters: int,
    names: frozenset[str] = AUTHORIZATION_PARAMETERS,
) -> list[tuple[str, str]]:
    """The request's whole body as form pairs (:func:`check_form_body`, :func:`parse_form`)."""
    check_form_body(request)
    try:
        text = (await read_request_body(request)).decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequest("the body is not UTF-8", rule="parameters.utf8") from None
    return parse_form(text, max_parameters, "body", names)


async def read_params(request: web.Request, max_parameters: int) -> RawParameters:
    """The authorization request's parameters: the query, plus the form body of a POST."""
    target = request.raw_path
    query_text = target.split("?", 1)[1] if "?" in target else ""
    query = parse_form(query_text, max_parameters, "query")
    form: list[tuple[str, str]] = []
    if request.method == "POST" and request.body_exists:
        form = await read_form(request, max_parameters)
    if len(query) + len(form) > max_parameters:
        raise InvalidRequest(f"more than {max_parameters} parameters", rule="parameters.count")
    return RawParameters(query, form)


@lru_cache(maxsize=1024)
def fold_parameter_name(name: str) -> str:
    """The OAuth parameter a lenient framework would read ``name`` as: case and Unicode
    compatibility folded, surrounding spaces dropped, ``.``, ``-`` and spaces as ``_``
    (PHP), a trailing ``[]`` or ``[key]`` dropped (PHP, Rails)."""
    folded = unicodedata.normalize("NFKC", name).casefold().strip()
    if folded.endswith("]") and "[" in folded:
        folded = folded[: folded.index("[")]
    return folded.replace(".", "_").replace("-", "_").replace(" ", "_")


def parameters_from_claims(claims: dict[str, Any]) -> dict[str, str]:
    """The authorization parameters a verified request object carries (RFC 9101 section 4).

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
                f"claim {name!r} must be a string, not a JSON array or object",
                rule="request_object.claim_type",
            )
    return params
