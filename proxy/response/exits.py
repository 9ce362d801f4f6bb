"""The ways out of the upstream's origin an answer names, and the flow handle they carry.

The upstream can send a flow's response to the client by a redirect (``Location``), a
``Refresh`` header, or a page that moves the browser on (:mod:`.scan`). Each is an
:class:`Exit`: where it leads and the parameters it carries. An exit that leads out of
the gateway's origin (or to a registered redirect URI, since a client may live on the
issuer's host) and carries a flow handle as ``state`` completes that flow.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import SplitResult, parse_qsl, unquote, urlsplit

from proxy.flows import looks_like_handle
from proxy.settings import Settings

#: The handle prefix in every spelling a URL, an HTML attribute or a script string may give.
HANDLE_SPELLINGS = re.compile(r"jgf(?:_|%5f|&#95;|&#x5f;|&lowbar;|\\u005f|\\x5f)", re.IGNORECASE)
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})

#: (scheme, lower-cased host, path) of a URL, as redirect URIs are compared.
Place = tuple[str, str, str]


def place_of(url: str) -> Place:
    """Where ``url`` leads, as :data:`Place`."""
    parts = urlsplit(url)
    return parts.scheme, parts.netloc.lower(), parts.path


def may_carry_handle(text: str) -> bool:
    """True when ``text`` holds the handle prefix in some spelling (percent-encoded
    letters included: a query is decoded once before it is read)."""
    if HANDLE_SPELLINGS.search(text) is not None:
        return True
    return "%" in text and HANDLE_SPELLINGS.search(unquote(text)) is not None


def refresh_url(value: str) -> str | None:
    """The URL of a ``Refresh`` header or meta refresh (``0; url=https://...``)."""
    _, separator, rest = value.partition(";")
    name, equals, url = rest.strip().partition("=")
    if not separator or not equals or name.strip().lower() != "url":
        return None
    return url.strip().strip("'\"") or None


@dataclass(frozen=True, slots=True)
class Exit:
    """Where an answer sends the browser and the parameters it carries there: the URL's
    query, plus its fragment or a posted form's fields (``extra``)."""

    target: SplitResult
    query: list[tuple[str, str]]
    extra: list[tuple[str, str]]

    @classmethod
    def of_url(cls, url: str) -> Exit:
        target = urlsplit(url)
        query = parse_qsl(target.query, keep_blank_values=True)
        return cls(target, query, parse_qsl(target.fragment, keep_blank_values=True))

    @classmethod
    def of_form(cls, action: str, fields: list[tuple[str, str]]) -> Exit:
        target = urlsplit(action)
        return cls(target, parse_qsl(target.query, keep_blank_values=True), fields)

    @property
    def handle(self) -> str | None:
        """The flow handle carried as ``state``, if any."""
        for name, value in (*self.query, *self.extra):
            if name == "state" and looks_like_handle(value):
                return value
        return None

    def leaves(self, settings: Settings, redirect_uris: frozenset[Place]) -> bool:
        """True when the exit leads out of the issuer's and the upstream's origins (from the
        settings, never the request's Host), or to a registered redirect URI."""
        target = self.target
        if (target.scheme, target.netloc.lower(), target.path) in redirect_uris:
            return True
        own = {place_of(settings.issuer)[1], place_of(settings.upstream_url)[1]}
        return bool(target.netloc) and target.netloc.lower() not in own

    def completing(self, settings: Settings, redirect_uris: frozenset[Place]) -> str | None:
        """The handle of the flow this exit completes, or None."""
        handle = self.handle
        return handle if handle is not None and self.leaves(settings, redirect_uris) else None


def header_exit(status: int, headers: Mapping[str, str]) -> Exit | None:
    """The exit a redirect's ``Location`` or a ``Refresh`` header names, when it may carry a
    handle (percent-encoded ones too)."""
    location = headers.get("Location")
    if status in REDIRECT_STATUSES and location and may_carry_handle(location):
        return Exit.of_url(location)
    refresh = headers.get("Refresh")
    url = refresh_url(refresh) if refresh else None
    return Exit.of_url(url) if url is not None and may_carry_handle(url) else None
