"""Reading a whole HTTP body within a limit.

A stream's ``read(n)`` returns what happens to be buffered, not the body: a body split
across TCP segments comes back truncated, and one that declares ten gigabytes and stalls
after a valid prefix comes back as that prefix. Everything the gateway reads as "the
body" (request_uri objects, client JWKS, the upstream's documents, PAR forms) goes
through :func:`read_body`: it reads to the end, refuses a declared ``Content-Length``
over the limit before reading anything, refuses as soon as more than the limit arrived,
and lets a body cut short fail as aiohttp reports it (``ClientPayloadError``; a stalled
one ends in the caller's timeout).
"""

from __future__ import annotations

from typing import Protocol

from aiohttp import StreamReader, web

from .errors import PayloadTooLarge


class BodyTooLarge(ValueError):
    """A body, declared or received, larger than its limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the body is larger than {limit} bytes")
        self.limit = limit


class HasBody(Protocol):
    """An answer or a request: its body stream and declared length (an
    :class:`aiohttp.ClientResponse`, a kept-connection answer, a :class:`web.Request`)."""

    @property
    def content(self) -> StreamReader: ...
    @property
    def content_length(self) -> int | None: ...


async def read_body(message: HasBody, limit: int) -> bytes:
    """The whole body of ``message``, to its end, at most ``limit`` bytes."""
    declared = message.content_length
    if declared is not None and declared > limit:
        raise BodyTooLarge(limit)
    body = bytearray()
    while chunk := await message.content.readany():
        body += chunk
        if len(body) > limit:
            raise BodyTooLarge(limit)
    return bytes(body)


async def read_request_body(request: web.BaseRequest) -> bytes:
    """A request's whole body, at most its ``client_max_size`` (413 past it), kept by aiohttp
    so that the same bytes can go upstream."""
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLarge(f"the body is larger than {request.client_max_size} bytes") from None
