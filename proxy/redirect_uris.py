"""Which redirect URIs a client may register.

An absolute RFC 3986 URI without a fragment (RFC 6749 section 3.1.2) whose scheme is
``https``, ``http`` to a loopback host (RFC 8252 section 7.3), or a private-use scheme
named by a reverse domain name, such as ``com.example.app:/cb`` (RFC 8252 section 7.1).
Everything else (``javascript:``, ``data:``, ``file:``, a scheme without a dot, http to
another host, whitespace or control characters hidden in the text) is refused at start.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from .settings import is_loopback_host

#: RFC 3986 section 2: the characters of a URI; anything else (whitespace, controls,
#: non-ASCII) is a trick on whoever parses it next, not part of a redirect URI.
_URI_CHARACTERS = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+")
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")
_REDIRECT_SCHEME_RULE = (
    "redirect URIs must be https, http to a loopback host, or a private-use scheme "
    "with a dot such as com.example.app (RFC 8252 section 7)"
)


def check_redirect_uri(value: str) -> str:
    """``value`` when it is a redirect URI RFC 8252 section 7 allows, else ValueError
    saying which rule it breaks."""
    if not _URI_CHARACTERS.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a URI: only RFC 3986 characters are allowed, no whitespace, "
            "control or non-ASCII characters (percent-encode them)"
        )
    if _BAD_PERCENT.search(value):
        raise ValueError(f"{value!r} is not a URI: a % must start a percent-encoded octet")
    match = _SCHEME.match(value)
    if match is None:
        raise ValueError(f"{value!r} is not an absolute URI")
    scheme = match.group(1)
    if scheme.lower() not in ("https", "http") and "." not in scheme:
        raise ValueError(f"{value!r}: the scheme {scheme!r} is refused; {_REDIRECT_SCHEME_RULE}")
    if scheme != scheme.lower():
        raise ValueError(f"{value!r}: the scheme must be lowercase (RFC 3986 section 3.1)")
    parts = urlsplit(value)
    if "@" in parts.netloc:
        raise ValueError(f"{value!r} must not contain user information")
    if scheme in ("http", "https"):
        try:
            parts.port  # noqa: B018 - raises for a port out of range
        except ValueError as exc:
            raise ValueError(f"{value!r}: {exc}") from None
        if not parts.hostname:
            raise ValueError(f"{value!r} is not an absolute URI (no host)")
        if scheme == "http" and not is_loopback_host(parts.hostname):
            raise ValueError(
                f"{value!r}: http is allowed only to a loopback host (127.0.0.0/8, ::1, "
                "localhost; RFC 8252 section 7.3); use https"
            )
    if parts.fragment or value.endswith("#"):
        raise ValueError(f"{value!r} must not contain a fragment (RFC 6749 §3.1.2)")
    return value
