"""Finding a flow's response in an upstream page, so that it never reaches a client raw.

Servers set up for ``form_post`` answer with an auto-posting form to the client's redirect
URI; others with a meta refresh or a script that sets the location. A page the upstream
writes to a browser that has flows in progress (or in the request that forwarded one) is
read, up to :data:`MAX_PAGE_BYTES`, and looked at: a form, a meta refresh or a script URL
that leaves the gateway's origin carrying a flow handle is an exit (:mod:`.exits`) the
gateway completes itself. Forms and links back to the gateway's origin (a consent page
posting to the authorization URL) are left alone. A larger page is streamed and cut off
if the handle prefix shows in it. The gateway asks the upstream only for content codings
it can read (gzip, deflate); a page in another one cannot be checked and is withheld.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from html.parser import HTMLParser

import aiohttp

from proxy.errors import UpstreamTimeout, UpstreamUnavailable, UpstreamUncheckable
from proxy.settings import Settings

from .exits import HANDLE_SPELLINGS, Exit, Place, refresh_url

MAX_PAGE_BYTES = 1024 * 1024
PAGE_TYPES = frozenset({"text/html", "application/xhtml+xml"})
#: Content codings the gateway can read to check a page; it asks for no others.
DECODABLE = frozenset({"identity", "gzip", "x-gzip", "deflate"})
_URL_IN_SCRIPT = re.compile(r"""https?://[^\s"'<>`]+""", re.IGNORECASE)
_HANDLE_BYTES = re.compile(HANDLE_SPELLINGS.pattern.encode(), re.IGNORECASE)
#: Longest spelling of the prefix, less one: what a chunk boundary may split.
OVERLAP = 11


@dataclass(frozen=True, slots=True)
class Page:
    """An upstream page read to be checked: its bytes as they came (relayed unchanged),
    and whether it was read to its end."""

    raw: bytes
    complete: bool
    coding: str


def is_page(content_type: str, status: int) -> bool:
    """True for an HTML answer with a body."""
    media = content_type.split(";", 1)[0].strip().lower()
    return media in PAGE_TYPES and status not in (204, 304)


async def read_page(content: aiohttp.StreamReader, coding: str) -> Page:
    """Read an upstream page, up to :data:`MAX_PAGE_BYTES` (one more byte says it goes on)."""
    coding = coding.strip().lower() or "identity"
    if coding not in DECODABLE:
        raise UpstreamUncheckable()
    chunks: list[bytes] = []
    size = 0
    try:
        while size <= MAX_PAGE_BYTES:
            chunk = await content.readany()
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except TimeoutError as exc:
        raise UpstreamTimeout() from exc
    except aiohttp.ClientError as exc:
        raise UpstreamUnavailable() from exc
    return Page(b"".join(chunks), size <= MAX_PAGE_BYTES, coding)


def text_of(page: Page) -> str:
    """The page as text, decoded from its content coding."""
    raw = page.raw
    if page.coding != "identity":
        decoder = zlib.decompressobj(15 if page.coding == "deflate" else 47)
        try:
            raw = decoder.decompress(raw, 8 * MAX_PAGE_BYTES)
        except zlib.error:
            raise UpstreamUncheckable() from None
    return raw.decode("utf-8", "replace")


def carries_handle(chunk: bytes) -> bool:
    """True when raw bytes hold the handle prefix in some spelling (uncompressed pages)."""
    return _HANDLE_BYTES.search(chunk) is not None


class _Finder(HTMLParser):
    """Forms (action and fields), meta refreshes and script URLs of a page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[tuple[str, list[tuple[str, str]]]] = []
        self.urls: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if tag == "form":
            # A relative action or URL (none at all: the page's own) stays on the origin.
            self.forms.append((values.get("action", ""), []))
        elif tag in ("input", "button", "textarea") and self.forms and "name" in values:
            self.forms[-1][1].append((values["name"], values.get("value", "")))
        elif tag == "meta" and values.get("http-equiv", "").lower() == "refresh":
            url = refresh_url(values.get("content", ""))
            if url:
                self.urls.append(url)
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            unescaped = data.replace("\\/", "/").replace("\\u0026", "&").replace("\\x26", "&")
            self.urls.extend(_URL_IN_SCRIPT.findall(unescaped))


def page_exit(page: Page, settings: Settings, redirect_uris: frozenset[Place]) -> Exit | None:
    """The exit a page names with a flow handle, if any (see the module docstring)."""
    text = text_of(page)
    if HANDLE_SPELLINGS.search(text) is None:
        return None
    finder = _Finder()
    finder.feed(text)
    finder.close()
    exits = [Exit.of_form(action, fields) for action, fields in finder.forms]
    exits.extend(Exit.of_url(url) for url in finder.urls)
    for exit_ in exits:
        if exit_.completing(settings, redirect_uris) is not None:
            return exit_
    return None
