"""The fast query encoder is urlencode, character for character."""

from __future__ import annotations

from urllib.parse import urlencode

from hypothesis import given
from hypothesis import strategies as st

from proxy.query import encode_query

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
