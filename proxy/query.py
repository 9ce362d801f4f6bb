"""Query strings the gateway writes, encoded as ``urllib.parse.urlencode`` does, only
faster: most names and values it sends (handles, codes, client ids) need no escaping, and
for those the per-character quoting is skipped; the configured values that need it and
recur in every exchange (the issuer as ``iss``, registered redirect URIs) are quoted once
per app (:func:`prequote`). Both sides use it: the plain query forwarded upstream and the
redirect back to the client."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from urllib.parse import quote_plus

#: Exactly the characters ``quote_plus`` leaves as they are (RFC 3986 unreserved).
_UNRESERVED = re.compile(r"[A-Za-z0-9_.~-]*")
#: Configured values and their quoted forms; never request data, so nothing a client or
#: the upstream sent (codes, tokens, hints) is kept.
Prequoted = Mapping[str, str]


def prequote(values: Iterable[str]) -> Prequoted:
    """Configured ``values`` quoted once, for every later query that carries them."""
    return {value: quote_plus(value) for value in values}


def encode_query(pairs: Iterable[tuple[str, str]], quoted: Prequoted | None = None) -> str:
    """``urlencode(pairs)``, character for character; ``quoted``: values already quoted."""
    plain = _UNRESERVED.fullmatch
    known = (quoted or {}).get
    return "&".join(
        (name if plain(name) else quote_plus(name))
        + "="
        + (value if plain(value) else known(value) or quote_plus(value))
        for name, value in pairs
    )
