"""Delivering an authorization response (or error) to the client, in the mode it asked for.

``query`` and ``fragment`` redirect; ``form_post`` answers an auto-posting HTML page
(OAuth 2.0 Form Post Response Mode) with a strict Content-Security-Policy whose one
script is allowed by its hash. The JWT modes (JARM §2.3) carry one ``response``
parameter and nothing else: ``query.jwt``, ``fragment.jwt``, ``form_post.jwt``, and
``jwt`` (``query.jwt`` for response types without tokens, ``fragment.jwt`` otherwise).
Every such answer carries ``Cache-Control: no-store`` and ``Referrer-Policy:
no-referrer``. The client's own ``state`` is restored (absent if it sent none); plain
modes get ``iss`` added (RFC 9207) unless already present, JWT modes carry it inside.
"""

from __future__ import annotations

import base64
import hashlib
import html
from collections.abc import Iterable
from urllib.parse import urlsplit

from aiohttp import web

from proxy import appkeys
from proxy.client_keys import ClientKeysUnavailable
from proxy.config import config_of
from proxy.errors import JarmKeyMissing, oauth_text
from proxy.flows import Destination
from proxy.query import Prequoted, encode_query
from proxy.response.jarm import build_jarm_response, encryption_key_for

#: Response types that return a token or ID token through the front channel.
TOKEN_RESPONSE_TYPES = ("token", "id_token")

_SUBMIT_SCRIPT = "document.forms[0].submit();"
_SUBMIT_SCRIPT_HASH = base64.b64encode(hashlib.sha256(_SUBMIT_SCRIPT.encode()).digest()).decode()

RESPONSE_HEADERS = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
#: Response parameters limited to RFC 6749's error characters (section 4.1.2.1).
_OAUTH_TEXT_PARAMS = frozenset({"error", "error_description"})


def returns_tokens(response_type: str) -> bool:
    """True when the response type returns a token or ID token in the front channel."""
    return any(part in TOKEN_RESPONSE_TYPES for part in response_type.split())


def effective_mode(destination: Destination) -> str:
    """The concrete mode: the default per response type when none was asked for
    (``query`` for ``code``/``none``, ``fragment`` otherwise; OAuth Multiple Response
    Types §2.1, §5), and the same rule for ``jwt`` (JARM §2.3.4)."""
    mode = destination.response_mode
    fragment = returns_tokens(destination.response_type)
    if mode is None:
        return "fragment" if fragment else "query"
    if mode == "jwt":
        return "fragment.jwt" if fragment else "query.jwt"
    return mode


def restore_state(
    params: Iterable[tuple[str, str]], destination: Destination
) -> list[tuple[str, str]]:
    """The parameters with the client's own state in place of the flow handle, and
    ``error`` / ``error_description`` (the gateway's or the upstream's) in the characters
    RFC 6749 allows. Every answer to a client passes here."""
    result = [
        (name, oauth_text(value) if name in _OAUTH_TEXT_PARAMS else value)
        for name, value in params
        if name != "state"
    ]
    if destination.state is not None:
        result.append(("state", destination.state))
    return result


def finish_params(
    params: Iterable[tuple[str, str]], destination: Destination, issuer: str
) -> list[tuple[str, str]]:
    """The parameters as the client must see them: its own state restored, and exactly one
    ``iss``, the issuer (RFC 9207): whatever the upstream sent as ``iss`` is dropped."""
    result = [(name, value) for name, value in restore_state(params, destination) if name != "iss"]
    result.append(("iss", issuer))
    return result


def redirect_to(
    destination: Destination,
    params: list[tuple[str, str]],
    mode: str,
    extra_headers: Iterable[tuple[str, str]] = (),
    quoted: Prequoted | None = None,
) -> web.Response:
    """A redirect (query or fragment) or a form_post page carrying ``params``."""
    if mode.startswith("form_post"):
        response = form_post_page(destination.redirect_uri, params)
    else:
        encoded = encode_query(params, quoted)
        uri = destination.redirect_uri
        if mode.startswith("fragment"):
            location = f"{uri}#{encoded}"
        else:
            separator = "" if uri.endswith(("?", "&")) else ("&" if "?" in uri else "?")
            location = f"{uri}{separator}{encoded}"
        response = web.Response(status=302)
        response.headers["Location"] = location
    for name, value in extra_headers:
        response.headers.add(name, value)
    response.headers.update(RESPONSE_HEADERS)
    return response


def form_post_page(action: str, params: list[tuple[str, str]]) -> web.Response:
    """An auto-posting form with one script (allowed by hash) and a visible button for
    browsers without JavaScript; no external resources."""
    fields = "".join(
        f'<input type="hidden" name="{html.escape(name)}" value="{html.escape(value)}">'
        for name, value in params
    )
    body = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        "<title>Submitting the authorization response</title></head><body>"
        f'<form method="post" action="{html.escape(action)}">{fields}'
        "<noscript><p>JavaScript is off: continue with the button.</p>"
        '<button type="submit">Continue</button></noscript></form>'
        f"<script>{_SUBMIT_SCRIPT}</script></body></html>"
    )
    target = urlsplit(action)
    origin = f"{target.scheme}://{target.netloc}" if target.netloc else action
    csp = (
        f"default-src 'none'; script-src 'sha256-{_SUBMIT_SCRIPT_HASH}'; "
        f"form-action {origin}; base-uri 'none'; frame-ancestors 'none'"
    )
    return web.Response(
        text=body,
        content_type="text/html",
        headers={"Content-Security-Policy": csp, "X-Content-Type-Options": "nosniff"},
    )


async def deliver(
    request: web.Request,
    destination: Destination,
    params: Iterable[tuple[str, str]],
    extra_headers: Iterable[tuple[str, str]] = (),
) -> web.Response:
    """Answer the client at ``destination`` with ``params`` (a response or an error),
    wrapped in a JARM response when it asked for a JWT mode."""
    app, config = request.app, config_of(request)
    settings = app[appkeys.SETTINGS]
    mode = effective_mode(destination)
    if not mode.endswith(".jwt"):
        finished = finish_params(params, destination, settings.issuer)
        return redirect_to(destination, finished, mode, extra_headers, config.prequoted)
    client = config.registry.get(destination.client_id)
    if client is None:
        raise JarmKeyMissing(f"client {destination.client_id!r} is no longer registered")
    encryption_key = None
    if client.meta.authorization_encrypted_response_alg is not None:
        try:
            keys = await app[appkeys.JWKS_CACHE].keys_for(client)
        except ClientKeysUnavailable as exc:
            raise JarmKeyMissing(f"the client's keys are unavailable: {exc}") from None
        encryption_key = encryption_key_for(client, keys)
    token = build_jarm_response(
        restore_state(params, destination),
        client,
        config.keyring,
        settings,
        encryption_key=encryption_key,
    )
    return redirect_to(destination, [("response", token)], mode, extra_headers, config.prequoted)
