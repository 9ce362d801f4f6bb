"""The fast query encoder is urlencode, character for character."""

from __future__ import annotations

from urllib.parse import quote_plus, urlencode

from hypothesis import given
from hypothesis import strategies as st

from proxy import appkeys
from proxy.app import create_app
from proxy.query import encode_query, prequote
from proxy.store import MemoryStore
from tests.jar import client_registry
from tests.support import make_settings

text = st.text(st.characters(blacklist_categories=["Cs"]), max_size=20)


@given(st.lists(st.tuples(text, text), max_size=6))
def test_encode_query_is_urlencode(pairs: list[tuple[str, str]]) -> None:
    """Any names and values, reserved characters, spaces, non-ASCII and empty ones too."""
    assert urlencode(pairs) == encode_query(pairs)


def test_encode_query_examples() -> None:
    pairs = [
        ("state", "jgf_Ab-9_~."),
        ("redirect_uri", "https://rp.example/cb?x=1&y"),
        ("scope", "openid profile"),
        ("", ""),
        ("é", "ü/+"),
    ]
    assert urlencode(pairs) == encode_query(pairs)
    assert "state=jgf_Ab-9_~.&redirect_uri=https%3A%2F%2Frp.example%2Fcb%3Fx%3D1%26y" in (
        encode_query(pairs)
    )


def test_prequoted_values_encode_as_urlencode() -> None:
    """Values quoted once encode exactly as urlencode would quote them each time."""
    quoted = prequote(["https://gw.example/tenant a?x=1"])
    pairs = [("iss", "https://gw.example/tenant a?x=1"), ("login_hint", "a@b.example")]
    assert encode_query(pairs, quoted) == urlencode(pairs)


def test_the_gateway_prequotes_its_configuration_and_nothing_a_request_carries() -> None:
    """The issuer and every registered redirect URI are quoted once, at start; values from
    requests and responses (hints, codes, tokens) are quoted each time and never kept."""
    settings = make_settings(issuer="https://gw.example/prequoted")
    registry = client_registry()
    app = create_app(settings, registry=registry, store=MemoryStore())
    quoted = app[appkeys.CONFIG].current.prequoted
    for value in [settings.issuer, *(u for c in registry for u in c.meta.redirect_uris)]:
        assert quoted[value] == quote_plus(value)
    hint = [("login_hint", "someone@example.com")]
    assert encode_query(hint, quoted).endswith("someone%40example.com")
    assert "someone@example.com" not in quoted
    other = create_app(make_settings(issuer="https://other.example"), store=MemoryStore())
    assert settings.issuer not in other[appkeys.CONFIG].current.prequoted, (
        "no state shared between apps"
    )
