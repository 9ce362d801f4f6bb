"""error and error_description only ever carry RFC 6749's characters (%x20-21 / %x23-5B /
%x5D-7E, section 4.1.2.1), whatever a message embeds, on the gateway's page and in redirects."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy import error_page
from proxy.errors import GatewayError, InvalidRequest, oauth_text
from proxy.settings import SettingsError, load_settings
from tests.conftest import Jar, Legacy
from tests.jar import REDIRECT, Claims, sign
from tests.support import make_settings
from tests.test_cli import BASE, run
from tests.test_jar import assert_refused, authorize

RFC_6749_TEXT = re.compile(r"[\x20\x21\x23-\x5b\x5d-\x7e]*")
#: A response_mode value with a quote, a backslash and characters outside ASCII.
HOSTILE_MODE = 'x"é§\\'
#: What the gateway says about it: its repr, then "->'", "\->/", the rest -> "?".
HOSTILE_MODE_DESCRIPTION = "response_mode 'x'??//' is not supported"


def error_classes(cls: type[GatewayError] = GatewayError) -> list[type[GatewayError]]:
    """``cls`` and every class below it."""
    below: list[type[GatewayError]] = []
    for sub in cls.__subclasses__():
        below.extend(error_classes(sub))
    return [cls, *below]


@given(st.text())
def test_any_text_comes_out_in_rfc_6749_characters(text: str) -> None:
    """Any text, lone surrogates included, comes out with only allowed characters, one for one."""
    cleaned = oauth_text(text)
    assert RFC_6749_TEXT.fullmatch(cleaned)
    assert len(text) == len(cleaned)


@given(st.from_regex(RFC_6749_TEXT, fullmatch=True))
def test_allowed_text_is_unchanged(text: str) -> None:
    """Text already within RFC 6749's characters is kept exactly."""
    assert text == oauth_text(text)


def test_replacements() -> None:
    """A quote becomes an apostrophe, a backslash a slash, anything else outside the set "?"."""
    assert "'a'/b?c?d?e?" == oauth_text('"a"\\b\u00a7c\u00e9d\ne\ud800')


def test_never_raises_on_what_it_is_given() -> None:
    """Something that cannot even become text is "?", not an exception."""

    class Unprintable:
        def __str__(self) -> str:
            raise RuntimeError("no")

    assert ("?", "12") == (oauth_text(Unprintable()), oauth_text(12))


@given(st.text())
def test_a_gateway_error_holds_only_rfc_6749_characters(text: str) -> None:
    """Built, or assigned afterwards, with any text: error and description stay within the set;
    the exception's own message (for logs) keeps what was written."""
    err = InvalidRequest(f"parameter {text!r} is repeated (RFC 6749 \u00a73.1)")
    assert RFC_6749_TEXT.fullmatch(err.description)
    assert f"{text!r} is repeated (RFC 6749 \u00a73.1)" in str(err)
    err.description = text
    err.error = text
    assert RFC_6749_TEXT.fullmatch(err.description)
    assert RFC_6749_TEXT.fullmatch(err.error)


def test_class_level_defaults_are_cleaned() -> None:
    """A subclass whose default description or code has a section sign is cleaned when defined,
    and every error class of the gateway already holds only allowed characters."""

    class Careless(GatewayError):
        error = "bad\u00a7code"
        description = 'see RFC 9126 \u00a72 "now"'

    assert ("bad?code", "see RFC 9126 ?2 'now'") == (Careless.error, Careless().description)
    for cls in error_classes():
        assert RFC_6749_TEXT.fullmatch(cls.error), cls
        assert RFC_6749_TEXT.fullmatch(cls.description), cls


async def test_unknown_response_mode_on_the_page_is_rfc_6749_text(jar: Jar, legacy: Legacy) -> None:
    """A plain request whose response_mode has a quote, a backslash, é and § gets the JSON page
    and the HTML page with the value in allowed characters only; the upstream saw nothing."""
    client = await jar()
    params: dict[str, Any] = {
        "client_id": "plain",
        "response_type": "code",
        "redirect_uri": REDIRECT,
        "response_mode": HOSTILE_MODE,
    }
    refused = await assert_refused(await authorize(client, **params), legacy, "invalid_request")
    assert [HOSTILE_MODE_DESCRIPTION] == refused["error_description"]
    page = await client.get("/authorize", params=params, headers={"Accept": "text/html"})
    assert 400 == page.status
    assert "response_mode &#x27;x&#x27;??//&#x27; is not supported" in await page.text()
    assert [] == legacy.recorder.requests


async def test_repeated_parameter_named_with_a_section_sign(jar: Jar, legacy: Legacy) -> None:
    """A parameter name with § sent twice is refused on the JSON page, its name as "?"."""
    client = await jar()
    response = await client.get("/authorize?client_id=plain&a%C2%A7=1&a%C2%A7=2")
    refused = await assert_refused(response, legacy, "invalid_request")
    (description,) = refused["error_description"]
    assert description.startswith("parameter 'a?' is repeated")
    assert RFC_6749_TEXT.fullmatch(description)


async def test_unknown_response_mode_in_a_redirect_is_rfc_6749_text(
    jar: Jar, legacy: Legacy
) -> None:
    """A signed object whose response_mode has a quote, a backslash, é and § is refused by
    redirect to the outer registered redirect URI, the value in allowed characters only."""
    client = await jar()
    token = sign(Claims().build(response_mode=HOSTILE_MODE), "ES256")
    response = await authorize(client, client_id="app", redirect_uri=REDIRECT, request=token)
    params = await assert_refused(response, legacy, "invalid_request_object", where=REDIRECT)
    assert [HOSTILE_MODE_DESCRIPTION] == params["error_description"]


# ---------------------------------------------------------------- the error page

#: A response_mode whose description carries HTML's special characters.
MARKUP_MODE = "<b>&"
MARKUP_PARAMS = {
    "client_id": "plain",
    "response_type": "code",
    "redirect_uri": REDIRECT,
    "response_mode": MARKUP_MODE,
}
BROWSER = {"Accept": "text/html,application/xhtml+xml"}
PAGE_POLICY = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


async def test_the_default_page_shows_the_request_id(jar: Jar, legacy: Legacy) -> None:
    """A browser gets the plain built-in page: the code, the description HTML-escaped, and
    the request id the answer's X-Request-Id carries; the upstream saw nothing."""
    client = await jar()
    page = await client.get("/authorize", params=MARKUP_PARAMS, headers=BROWSER)
    assert (400, "text/html") == (page.status, page.content_type)
    body = await page.text()
    request_id = page.headers["X-Request-Id"]
    assert f"<p>Request ID: <code>{request_id}</code></p>" in body
    assert "<code>invalid_request</code>" in body
    assert "response_mode &#x27;&lt;b&gt;&amp;&#x27; is not supported" in body
    assert "<b>" not in body
    assert PAGE_POLICY == page.headers["Content-Security-Policy"]
    assert [] == legacy.recorder.requests


async def test_an_operators_page_replaces_it(jar: Jar, legacy: Legacy, tmp_path: Path) -> None:
    """JARGATE_ERROR_PAGE_FILE: each placeholder (braced or not) substituted HTML-escaped,
    $$ a dollar sign, the rest as written; JSON clients still get JSON."""
    template = tmp_path / "error.html"
    template.write_text(
        "<html><style>p{color:red}</style><p>${error}|$description|$request_id|$$5 é</p></html>",
        encoding="utf-8",
    )
    client = await jar(error_page_file=template)
    page = await client.get("/authorize", params=MARKUP_PARAMS, headers=BROWSER)
    assert 400 == page.status
    description = "response_mode &#x27;&lt;b&gt;&amp;&#x27; is not supported"
    assert (
        "<html><style>p{color:red}</style>"
        f"<p>invalid_request|{description}|{page.headers['X-Request-Id']}|$5 é</p></html>"
    ) == await page.text()
    answer = await client.get("/authorize", params=MARKUP_PARAMS)
    assert "invalid_request" == (await answer.json())["error"]
    assert [] == legacy.recorder.requests


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"<p>$error $reason</p>", "unknown placeholder $reason (the page knows $error, "),
        (b"<p>${request-id}</p>", "a '$' on line 1 starts no placeholder"),
        (b"<p>$error</p>\n<p>costs $5</p>", "a '$' on line 2 starts no placeholder"),
        (b"<p>\xff</p>", "is not UTF-8 text"),
        (None, "cannot be read: No such file or directory"),
    ],
)
def test_a_bad_page_is_refused_at_start(
    content: bytes | None, problem: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A page with an unknown placeholder, a stray $, bytes that are not UTF-8, or no file:
    the settings do not load, with one line naming JARGATE_ERROR_PAGE_FILE and the problem."""
    for name in [name for name in os.environ if name.upper().startswith("JARGATE_")]:
        monkeypatch.delenv(name)
    page = tmp_path / "error.html"
    if content is not None:
        page.write_bytes(content)
    env = tmp_path / "jargate.env"
    env.write_text(
        "JARGATE_UPSTREAM_URL=http://127.0.0.1:9\nJARGATE_ISSUER=https://idp.example\n"
        f"JARGATE_ERROR_PAGE_FILE={page}\n"
    )
    with pytest.raises(SettingsError) as refused:
        load_settings(env)
    (line,) = str(refused.value).splitlines()
    assert line.startswith("invalid settings: JARGATE_ERROR_PAGE_FILE: "), line
    assert problem in line


def test_check_refuses_a_bad_page(tmp_path: Path) -> None:
    """`jargate check --offline`: exit 2 and one line on a page with an unknown placeholder."""
    page = tmp_path / "error.html"
    page.write_text("<p>$eror</p>")
    result = run("check", "--offline", **BASE, JARGATE_ERROR_PAGE_FILE=str(page))
    assert 2 == result.returncode
    (line,) = result.stderr.splitlines()
    assert "JARGATE_ERROR_PAGE_FILE: unknown placeholder $eror" in line
    assert "Traceback" not in result.stderr


def test_the_page_is_read_once_at_start(tmp_path: Path) -> None:
    """The settings keep the page as it was at start: a later change to the file (or its
    removal) does not reach the answers of the running gateway."""
    page = tmp_path / "error.html"
    page.write_text("<p>$error</p>")
    settings = make_settings(error_page_file=page)
    page.unlink()
    assert "<p>$error</p>" == settings.error_page
    assert error_page.DEFAULT == make_settings().error_page
