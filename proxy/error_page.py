"""The gateway's own error page for browsers: a :class:`string.Template` the operator may
replace (``JARGATE_ERROR_PAGE_FILE``). It knows three placeholders, each substituted
HTML-escaped: ``$error`` (the RFC code), ``$description`` and ``$request_id`` (the
``X-Request-Id`` of the answer, for support); ``$$`` is a dollar sign. A template with any
other placeholder, or a ``$`` that is none, is refused at start.
"""

from __future__ import annotations

import html
from pathlib import Path
from string import Template

#: What a template may name.
PLACEHOLDERS = ("error", "description", "request_id")

#: The page when no file is set: the gateway's plain style, nothing loaded from anywhere.
DEFAULT = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Authorization error</title>
<meta name="robots" content="noindex"></head>
<body><h1>Authorization error</h1><p><code>$error</code></p><p>$description</p>
<p>Request ID: <code>$request_id</code></p></body></html>
"""


def check(text: str) -> None:
    """Raise :class:`ValueError` (one line, naming the problem) unless ``text`` is a
    template with only the known placeholders."""
    known = ", ".join(f"${name}" for name in PLACEHOLDERS)
    for match in Template.pattern.finditer(text):
        if match.group("invalid") is not None:
            line = text.count("\n", 0, match.start("invalid")) + 1
            raise ValueError(
                f"a '$' on line {line} starts no placeholder (the page knows {known}; "
                "write $$ for a dollar sign)"
            )
        name = match.group("named") or match.group("braced")
        if name is not None and name not in PLACEHOLDERS:
            raise ValueError(f"unknown placeholder ${name} (the page knows {known})")


def read(path: Path) -> str:
    """The template in ``path`` (UTF-8), checked; :class:`ValueError` names what is wrong."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not UTF-8 text") from None
    except OSError as exc:
        raise ValueError(f"{path} cannot be read: {exc.strerror or exc}") from None
    check(text)
    return text


def render(template: str, error: str, description: str, request_id: str | None) -> str:
    """The page: ``template`` (checked) with each placeholder's value HTML-escaped."""
    return Template(template).substitute(
        error=html.escape(error),
        description=html.escape(description),
        request_id=html.escape(request_id or ""),
    )
