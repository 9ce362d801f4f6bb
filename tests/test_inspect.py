"""`jargate inspect`: a request object, a client assertion or a JARM response held offline
to every rule it would meet, each broken one on its own line with its rule id."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from joserfc.jwk import ECKey, Key

from proxy.cli import main
from proxy.clients import load_registry
from proxy.keyring import Keyring, generate_private_jwks
from proxy.response.jarm import build_jarm_response
from proxy.rules import RULES
from proxy.settings import load_settings
from tests.jar import DROP, ISSUER, REDIRECT, Claims, encrypt, private_key, public_jwks, sign
from tests.support import REPO, clean_env

GATEWAY_ALGS = ["ES256", "RS256", "RSA-OAEP-256"]


def _enc_public(key: Key) -> dict[str, Any]:
    return {**key.as_dict(private=False), "use": "enc", "alg": "RSA-OAEP-256"}


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Settings, a registry and the gateway's keys in files, as an operator has them."""
    keys_file = tmp_path / "keys.json"
    keys_file.write_text(json.dumps(generate_private_jwks(GATEWAY_ALGS)))
    jarm_key = private_key("rsa", "jarm-enc")
    clients = [
        {"client_id": "app", "jwks": public_jwks(private_key("p256")), "redirect_uris": [REDIRECT]},
        {
            "client_id": "remote",
            "jwks_uri": "https://rp.example/jwks",
            "redirect_uris": [REDIRECT],
        },
        {
            "client_id": "sealed",
            "jwks": {"keys": [_enc_public(jarm_key), *public_jwks(private_key("p256"))["keys"]]},
            "redirect_uris": [REDIRECT],
            "authorization_encrypted_response_alg": "RSA-OAEP-256",
        },
    ]
    clients_file = tmp_path / "clients.json"
    clients_file.write_text(json.dumps({"clients": clients}))
    client_key = tmp_path / "client-key.json"
    client_key.write_text(json.dumps({"keys": [{**jarm_key.as_dict(private=True), "use": "enc"}]}))
    env = {
        "JARGATE_UPSTREAM_URL": "http://127.0.0.1:9",
        "JARGATE_ISSUER": ISSUER,
        "JARGATE_KEYS_FILE": str(keys_file),
        "JARGATE_CLIENTS_FILE": str(clients_file),
    }
    for name in [name for name in os.environ if name.upper().startswith("JARGATE_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return {**env, "client_key": str(client_key)}


def inspect(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str]]:
    """Run `jargate inspect` (its main()); the exit code and the lines it printed."""
    code = main(["inspect", *args])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, (out + err).splitlines()


def broken(lines: list[str]) -> list[str]:
    """The rule ids of the lines that report a broken rule."""
    return [line.removeprefix("broken: ").split(":", 1)[0] for line in lines if "broken: " in line]


def test_a_valid_request_object_is_accepted(
    setup: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """A request object the gateway would accept: exit 0, its claims shown, replay unchecked."""
    code, lines = inspect(capsys, sign(Claims().build(), "ES256"))
    assert 0 == code, lines
    assert "request object of client 'app'" == lines[0]
    assert [] == broken(lines)
    assert any(line.startswith("not checked: request_object.replay:") for line in lines)
    assert lines[-1].startswith("accepted:")


def test_every_broken_rule_of_a_request_object_is_listed(
    setup: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """A forged object (another key under the client's kid) that is also expired, for another
    audience, from another iss and to an unregistered redirect URI: one line per rule, each
    with its listed id and what was expected; exit 1."""
    forger = ECKey.generate_key("P-256", parameters={"kid": "p256"})
    claims = Claims().build(
        aud="https://other.example",
        iss="someone",
        exp=int(time.time()) - 600,
        nbf=DROP,
        iat=DROP,
        redirect_uri="https://evil.example/cb",
    )
    code, lines = inspect(capsys, sign(claims, "ES256", key=forger))
    assert 1 == code
    assert [
        "request_object.signature",
        "request_object.iss",
        "request_object.aud",
        "request_object.exp",
        "redirect_uri.unregistered",
    ] == broken(lines)
    assert set(broken(lines)) <= set(RULES)
    assert (
        f"broken: request_object.aud: aud must be, or contain, the issuer (expected '{ISSUER}')"
        in lines
    )
    assert "refused: 5 rule(s) broken" == lines[-1]


def test_an_encrypted_request_object_is_decrypted_with_the_gateway_keys(
    setup: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """An object encrypted to the gateway's enc key is decrypted (client from its claims)."""
    (enc,) = [
        key for key in Keyring.load(Path(setup["JARGATE_KEYS_FILE"])).keys if key.use == "enc"
    ]
    public = enc.key.as_dict(private=False, kid=enc.kid)
    from joserfc.jwk import import_key

    token = encrypt(sign(Claims().build(), "ES256"), import_key(public))
    code, lines = inspect(capsys, token)
    assert (0, "request object of client 'app' (encrypted)") == (code, lines[0]), lines


def test_an_unregistered_client_and_a_jwks_uri_client(
    setup: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """An unknown client is the gateway's refusal of JAR from it; a jwks_uri client's
    signature is said to be not checked offline, its claims still are."""
    code, lines = inspect(capsys, sign(Claims("stranger").build(), "ES256"))
    assert (1, ["client.unregistered_jar"]) == (code, broken(lines))
    code, lines = inspect(capsys, sign(Claims("remote").build(), "ES256"))
    assert 0 == code, lines
    assert any(
        "not checked: request_object.signature: the client's jwks_uri" in line for line in lines
    )
    code, lines = inspect(capsys, sign(Claims("remote").build(aud="x"), "ES256"))
    assert (1, ["request_object.aud"]) == (code, broken(lines))


def _assertion(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "iss": "app",
        "sub": "app",
        "aud": ISSUER,
        "exp": now + 60,
        "iat": now,
        "jti": secrets.token_hex(8),
    }
    claims.update(overrides)
    return {name: value for name, value in claims.items() if value is not DROP}


def test_client_assertions(setup: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    """A valid assertion is accepted; one too long-lived, without jti and for another audience
    breaks those three rules; a typ of a request object is no assertion."""
    code, lines = inspect(capsys, sign(_assertion(), "ES256", typ="JWT"))
    assert (0, "client assertion of client 'app'") == (code, lines[0]), lines
    assert any(line.startswith("not checked: client_assertion.replay") for line in lines)
    bad = _assertion(exp=int(time.time()) + 3600, jti=DROP, aud="https://elsewhere.example")
    code, lines = inspect(capsys, sign(bad, "ES256", typ="JWT"))
    assert 1 == code
    assert ["client_assertion.aud", "client_assertion.lifetime", "client_assertion.jti"] == (
        broken(lines)
    )
    code, lines = inspect(
        capsys, "--kind", "client-assertion", sign(_assertion(), "ES256")
    )  # typ oauth-authz-req+jwt
    assert (1, ["client_assertion.typ"]) == (code, broken(lines))


def _jarm(setup: dict[str, str], client_id: str, **claims: str) -> str:
    settings = load_settings()
    registry = load_registry(settings)
    client = registry.get(client_id)
    assert client is not None
    keyring = Keyring.load(Path(setup["JARGATE_KEYS_FILE"]))
    key = None
    if client.meta.authorization_encrypted_response_alg and client.keys is not None:
        key = next(k for k in client.keys if k.get("use") == "enc")
    params = [("code", "c-1"), ("state", "s-1"), *claims.items()]
    return build_jarm_response(params, client, keyring, settings, encryption_key=key)


def test_jarm_responses(setup: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    """A JARM response the gateway signed verifies against its keys file; an encrypted one
    decrypts with the client's key (--key), and without it is an error (exit 2); a
    tampered payload does not verify; another client's key does not decrypt."""
    token = _jarm(setup, "app")
    code, lines = inspect(capsys, token)
    assert (0, "JARM response of client 'app'") == (code, lines[0]), lines
    head, payload, signature = token.split(".")
    forged_claims = json.dumps({**_claims_of(payload), "code": "stolen"}).encode()
    from tests.jar import b64

    code, lines = inspect(capsys, f"{head}.{b64(forged_claims)}.{signature}")
    assert (1, ["jarm_response.signature"]) == (code, broken(lines))
    code, lines = inspect(capsys, "--client-id", "sealed", token)
    assert (1, ["jarm_response.aud", "jarm_response.encryption"]) == (code, broken(lines))

    sealed = _jarm(setup, "sealed")
    code, lines = inspect(capsys, "--key", setup["client_key"], sealed)
    assert (0, "JARM response of client 'sealed' (encrypted)") == (code, lines[0]), lines
    code, lines = inspect(capsys, "--kind", "jarm", sealed)
    assert 2 == code
    assert [
        "jargate: the JARM response is encrypted: give the client's private key with --key FILE"
    ] == lines
    other = Path(setup["client_key"]).with_name("other.json")
    other.write_text(json.dumps(generate_private_jwks(["RSA-OAEP-256"])))
    code, lines = inspect(capsys, "--key", str(other), sealed)
    assert (1, ["jarm_response.decrypt"]) == (code, broken(lines))


def _claims_of(segment: str) -> dict[str, Any]:
    import base64

    return dict(json.loads(base64.urlsafe_b64decode(segment + "==")))


def test_an_expired_jarm_response_from_another_issuer(
    setup: dict[str, str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A response made under another issuer, read after its exp, breaks iss and exp."""
    monkeypatch.setenv("JARGATE_ISSUER", "https://127.0.0.1:9443")
    monkeypatch.setenv("JARGATE_JARM_LIFETIME_SECONDS", "1")
    token = _jarm(setup, "app")
    monkeypatch.setenv("JARGATE_ISSUER", ISSUER)
    monkeypatch.setenv("JARGATE_CLOCK_SKEW_SECONDS", "0")
    time.sleep(1.1)
    code, lines = inspect(capsys, "--kind", "jarm", token)
    assert (1, ["jarm_response.iss", "jarm_response.exp"]) == (code, broken(lines))


def test_standard_input_and_configuration_errors(setup: dict[str, str], tmp_path: Path) -> None:
    """`-` reads the JWT from standard input (the real command, in a subprocess); a bad
    setting, an unreadable --key or no JWT is exit 2 with one line, never a traceback."""
    env = {k: v for k, v in setup.items() if k.startswith("JARGATE_")}
    command = [sys.executable, "-m", "proxy", "inspect"]

    def run(*args: str, stdin: str = "", **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*command, *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=clean_env(**env, **extra),
            cwd=REPO,
            timeout=60,
            check=False,
        )

    result = run("-", stdin=sign(Claims().build(), "ES256") + "\n")
    assert 0 == result.returncode, result.stdout + result.stderr
    for args, stdin, extra, message in (
        (["-"], "", {}, "jargate: no JWT to inspect"),
        (["x.y.z"], "", {"JARGATE_CLOCK_SKEW_SECONDS": "many"}, "JARGATE_CLOCK_SKEW_SECONDS"),
        (["--key", str(tmp_path / "missing.json"), "a.b.c.d.e"], "", {}, "--key"),
    ):
        result = run(*args, stdin=stdin, **extra)
        assert 2 == result.returncode
        (line,) = result.stderr.splitlines()
        assert message in line
    result = run("not-a-jwt")
    assert (1, "broken: request_object.compact:") == (
        result.returncode,
        result.stdout.splitlines()[1][:31],
    )


@pytest.mark.parametrize("exp", [10**400, "tomorrow", True, DROP])
def test_a_malformed_exp_is_its_own_rule_once(
    exp: object, setup: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """An exp too large for a float, a string, a boolean or none: the exp rule, once; the
    rules that use exp (lifetime) do not fail on it nor report it again."""
    code, lines = inspect(capsys, sign(Claims().build(exp=exp), "ES256"))
    assert (1, ["request_object.exp"]) == (code, broken(lines))
