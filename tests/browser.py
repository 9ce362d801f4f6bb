"""A browser for interop tests: a cookie jar, redirects followed by hand, and the forms
of the pages it lands on filled and submitted as a person would (to their ``action``, or
to the page's own URL, its query included, when there is none). It stops when it is sent
to the client's redirect URI, by a redirect or by a page posting a form there (form_post),
and never contacts the client."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit

import aiohttp
from yarl import URL

ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
MAX_HOPS = 20


@dataclass
class Form:
    """One ``<form>``: its method, its action (None when absent) and its controls."""

    method: str
    action: str | None
    inputs: list[dict[str, str]] = field(default_factory=list)


class _Forms(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[Form] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if tag == "form":
            self.forms.append(Form(values.get("method", "get").upper(), values.get("action")))
        elif tag in ("input", "button") and self.forms:
            values.setdefault("type", "submit" if tag == "button" else "text")
            self.forms[-1].inputs.append(values)


def forms_of(html: str) -> list[Form]:
    """The page's forms, as an HTML parser reads them (entities decoded)."""
    parser = _Forms()
    parser.feed(html)
    return parser.forms


@dataclass
class Arrival:
    """Where the browser stopped: sent to the redirect URI (``method`` GET with the query
    or fragment's ``params``, or POST with the posted form's; ``status`` 0, nothing was
    requested there), or on a page it could not go past (``status`` and ``body``)."""

    url: str
    method: str
    params: dict[str, str]
    status: int
    body: str
    trail: list[str]

    @property
    def at_redirect_uri(self) -> bool:
        return self.status == 0

    def gateway_error(self) -> str | None:
        """The error code of the gateway's own error page, if the browser stopped on it."""
        if "<title>Authorization error</title>" not in self.body:
            return None
        found = re.search(r"<code>([^<]*)</code>", self.body)
        return found.group(1) if found else None


class Browser:
    """One browser (one cookie jar) that stops at ``redirect_uri``."""

    def __init__(self, redirect_uri: str, credentials: dict[str, str]) -> None:
        self.redirect_uri = redirect_uri
        self.credentials = credentials
        self.session = aiohttp.ClientSession(
            cookie_jar=aiohttp.CookieJar(unsafe=True), headers={"Accept": ACCEPT}
        )

    async def close(self) -> None:
        await self.session.close()

    def _stops_at(self, url: str) -> bool:
        return url.split("?", 1)[0].split("#", 1)[0] == self.redirect_uri

    async def visit(self, url: str, method: str = "GET", data: str | None = None) -> Arrival:
        """Go to ``url`` and on, through redirects and forms, until the redirect URI or a
        page with nothing to submit."""
        trail: list[str] = []
        for _ in range(MAX_HOPS):
            if self._stops_at(url):
                query = urlsplit(url).query or urlsplit(url).fragment
                return Arrival(url, "GET", dict(parse_qsl(query)), 0, "", trail)
            headers: dict[str, str] = {}
            if data is not None:
                headers["Content-Type"] = "application/x-www-form-urlencoded"
                parts = urlsplit(url)
                headers["Origin"] = f"{parts.scheme}://{parts.netloc}"
            async with self.session.request(
                method,
                URL(url, encoded=True),
                data=data,
                headers=headers,
                allow_redirects=False,
            ) as response:
                trail.append(f"{method} {urlsplit(url).path} -> {response.status}")
                body = await response.text(errors="replace")
                if 300 <= response.status < 400 and "Location" in response.headers:
                    url, method, data = urljoin(url, response.headers["Location"]), "GET", None
                    continue
                if response.status != 200 or "html" not in response.content_type:
                    return Arrival(url, method, {}, response.status, body, trail)
            submitted = self.submit(url, body)
            if submitted is None:
                return Arrival(url, method, {}, 200, body, trail)
            url, method, fields = submitted
            if self._stops_at(url):
                return Arrival(url, "POST", dict(fields), 0, body, trail)
            data = urlencode(fields)
            if method == "GET":
                url, data = url.split("?", 1)[0] + "?" + data, None
        raise AssertionError(f"more than {MAX_HOPS} hops: {trail}")

    def submit(self, page_url: str, html: str) -> tuple[str, str, list[tuple[str, str]]] | None:
        """The request a person would make on this page: the first form, its login fields
        filled, checked boxes kept, submitted with its consent button (named or valued
        allow, authorize or grant) or else its first named one."""
        forms = forms_of(html)
        if not forms:
            return None
        form = forms[0]
        fields: list[tuple[str, str]] = []
        for control in form.inputs:
            name, kind = control.get("name"), control["type"].lower()
            if not name or kind in ("submit", "button", "reset", "image"):
                continue
            if kind in ("checkbox", "radio") and "checked" not in control:
                continue
            default = "on" if kind in ("checkbox", "radio") else ""
            fields.append((name, self.credentials.get(name, control.get("value", default))))
        clicked = _button(form)
        if clicked is not None:
            fields.append((clicked["name"], clicked.get("value", "")))
        action = urljoin(page_url, form.action) if form.action else page_url
        return action, form.method, fields


CONSENT = frozenset({"allow", "authorize", "grant"})


def _button(form: Form) -> dict[str, str] | None:
    buttons = [c for c in form.inputs if c["type"].lower() == "submit" and c.get("name")]
    for button in buttons:
        if {button["name"].lower(), button.get("value", "").lower()} & CONSENT:
            return button
    return next(iter(buttons), None)


def query_of(url: str) -> dict[str, Any]:
    """A URL's query parameters (one value each)."""
    return dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))
