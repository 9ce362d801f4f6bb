"""The gateway's own keys: loading, inference of kid/use/alg, refusals, generation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from joserfc.jwk import ECKey, OctKey, RSAKey

from proxy.algorithms import SIGNING_ALGS
from proxy.keyring import Keyring, KeyringError, generate_private_jwks, public_jwks_of


def write(tmp_path: Path, keys: list[dict[str, Any]]) -> Path:
    path = tmp_path / "keys.json"
    path.write_text(json.dumps({"keys": keys}))
    return path


def test_missing_kid_use_and_alg_are_filled_in(tmp_path: Path) -> None:
    """A bare EC key gets its RFC 7638 thumbprint as kid, use sig and alg ES256."""
    key = ECKey.generate_key("P-256")
    ring = Keyring.load(write(tmp_path, [key.as_dict(private=True)]))
    (loaded,) = ring.keys
    assert (key.thumbprint(), "sig", "ES256") == (loaded.kid, loaded.use, loaded.alg)


def test_rsa_enc_key_gets_rsa_oaep_256(tmp_path: Path) -> None:
    """An RSA key marked use=enc decrypts RSA-OAEP-256 unless it says otherwise."""
    key = RSAKey.generate_key(2048)
    ring = Keyring.load(write(tmp_path, [{**key.as_dict(private=True), "use": "enc"}]))
    assert ring.decryption_algs == ("RSA-OAEP-256",)


def test_first_key_of_an_alg_signs_and_all_are_published(tmp_path: Path) -> None:
    """Rotation: the first ES256 key signs; the old one stays published."""
    new, old = ECKey.generate_key("P-256"), ECKey.generate_key("P-256")
    ring = Keyring.load(
        write(
            tmp_path,
            [
                {**new.as_dict(private=True), "kid": "new"},
                {**old.as_dict(private=True), "kid": "old"},
            ],
        )
    )
    signer = ring.signing_key("ES256")
    assert signer is not None
    assert signer.kid == "new"
    assert [k["kid"] for k in ring.public_jwks()["keys"]] == ["new", "old"]


def test_published_keys_have_no_private_parts(tmp_path: Path) -> None:
    """The JWKS the gateway publishes carries public halves only."""
    ring = Keyring.throwaway()
    for jwk in ring.public_jwks()["keys"]:
        assert not {"d", "p", "q", "dp", "dq", "qi"} & set(jwk)
        assert {"kid", "use", "alg"} <= set(jwk)


def test_throwaway_keys_cover_the_defaults_and_extras() -> None:
    """Throw-away keys: ES256 and RS256 signing, RSA-OAEP-256 decryption, plus what is asked."""
    ring = Keyring.throwaway(["PS256", "EdDSA"])
    assert ring.ephemeral
    assert {"ES256", "RS256", "PS256", "EdDSA"} == set(ring.signing_algs)
    assert ring.decryption_algs == ("RSA-OAEP-256",)


@pytest.mark.parametrize(
    ("jwk", "message"),
    [
        (OctKey.generate_key(256).as_dict(private=True), "symmetric"),
        (ECKey.generate_key("P-256").as_dict(private=False), "no private part"),
        ({**ECKey.generate_key("P-256").as_dict(private=True), "alg": "RS256"}, "does not fit"),
        ({**ECKey.generate_key("P-256").as_dict(private=True), "alg": "HS256"}, "not allowed"),
        ({**RSAKey.generate_key(2048).as_dict(private=True), "alg": "RSA1_5"}, "not allowed"),
        ({**ECKey.generate_key("P-256").as_dict(private=True), "use": "wrap"}, "'use' must be"),
        ({"kty": "EC", "crv": "P-256", "x": "bad"}, "not a valid JWK"),
    ],
)
def test_unusable_keys_are_refused(tmp_path: Path, jwk: dict[str, Any], message: str) -> None:
    """Symmetric, public-only, mismatched or forbidden-alg keys stop the gateway at start."""
    with pytest.raises(KeyringError, match=message):
        Keyring.load(write(tmp_path, [jwk]))


def test_duplicate_kids_are_refused(tmp_path: Path) -> None:
    """Two keys with one kid would make selection ambiguous."""
    keys = [
        {**ECKey.generate_key("P-256").as_dict(private=True), "kid": "same"},
        {**ECKey.generate_key("P-256").as_dict(private=True), "kid": "same"},
    ]
    with pytest.raises(KeyringError, match="duplicate kid"):
        Keyring.load(write(tmp_path, keys))


@pytest.mark.parametrize("content", ["not json", '{"keys": []}', "[1]"])
def test_bad_key_files_are_named(tmp_path: Path, content: str) -> None:
    """A key file that is not a usable JWKS names the file."""
    path = tmp_path / "keys.json"
    path.write_text(content)
    with pytest.raises(KeyringError, match="JARGATE_KEYS_FILE"):
        Keyring.load(path)


@pytest.mark.parametrize("alg", [*SIGNING_ALGS, "RSA-OAEP-256", "ECDH-ES"])
def test_generated_keys_load(tmp_path: Path, alg: str) -> None:
    """Every alg `keys generate` offers produces a key the keyring accepts for that alg."""
    path = tmp_path / "keys.json"
    path.write_text(json.dumps(generate_private_jwks([alg])))
    (key,) = Keyring.load(path).keys
    assert alg == key.alg


def test_generate_refuses_contradictions() -> None:
    """An alg and a use that contradict each other are refused."""
    with pytest.raises(KeyringError, match="is for use 'sig'"):
        generate_private_jwks(["ES256"], use="enc")
    with pytest.raises(KeyringError, match="unsupported alg"):
        generate_private_jwks(["HS256"])


def test_public_half() -> None:
    """`keys public` drops the private parts and keeps kid, use and alg."""
    private = generate_private_jwks(["PS256"], kid="k1")
    (jwk,) = public_jwks_of(private)["keys"]
    assert (jwk["kid"], jwk["use"], jwk["alg"]) == ("k1", "sig", "PS256")
    assert "d" not in jwk
