"""Settings: each variable of the contract, typed, with its default; bad values named."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from proxy.settings import Settings, SettingsError, known_variables, load_settings
from tests.support import REPO, make_settings

REQUIRED = {
    "JARGATE_UPSTREAM_URL": "http://127.0.0.1:8080",
    "JARGATE_ISSUER": "https://idp.example",
}

#: The operator contract's settings table: variable -> default.
CONTRACT_DEFAULTS = {
    "JARGATE_HOST": "0.0.0.0",
    "JARGATE_PORT": 8000,
    "JARGATE_AUTHORIZATION_PATH": "/authorize",
    "JARGATE_PAR_PATH": "/par",
    "JARGATE_JWKS_PATH": "/.well-known/jargate/jwks.json",
    "JARGATE_UPSTREAM_JWKS_PATH": None,
    "JARGATE_CLIENTS_FILE": None,
    "JARGATE_CLIENTS": None,
    "JARGATE_KEYS_FILE": None,
    "JARGATE_REDIS_URL": None,
    "JARGATE_ENFORCEMENT": "enforce",
    "JARGATE_CLOCK_SKEW_SECONDS": 30,
    "JARGATE_MAX_REQUEST_OBJECT_LIFETIME_SECONDS": 3600,
    "JARGATE_JARM_LIFETIME_SECONDS": 600,
    "JARGATE_JARM_DEFAULT_ALG": "RS256",
    "JARGATE_REQUIRE_PAR": False,
    "JARGATE_STRICT_ASSERTION_AUDIENCE": False,
    "JARGATE_WORKERS": 1,
    "JARGATE_FLOW_TTL_SECONDS": 1800,
    "JARGATE_PAR_TTL_SECONDS": 90,
    "JARGATE_LOG_LEVEL": "info",
    "JARGATE_LOG_FORMAT": "json",
    "JARGATE_METRICS_PORT": 9090,
    "JARGATE_TRUSTED_PROXIES": (),
    "JARGATE_REQUEST_URI_ALLOW_HTTP": False,
    "JARGATE_REQUEST_URI_ALLOW_PRIVATE_NETWORKS": False,
}


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """A process environment with no JARGATE_* variable but the required two."""
    import os

    for name in list(os.environ):
        if name.upper().startswith("JARGATE_"):
            monkeypatch.delenv(name)
    for name, value in REQUIRED.items():
        monkeypatch.setenv(name, value)
    return monkeypatch


def test_every_contract_variable_exists_with_its_default(env: pytest.MonkeyPatch) -> None:
    """Each JARGATE_* of the operator contract is a setting, and its default the contract's."""
    settings = load_settings()
    assert set(CONTRACT_DEFAULTS) | set(REQUIRED) <= known_variables()
    for name, default in CONTRACT_DEFAULTS.items():
        assert default == getattr(settings, name.removeprefix("JARGATE_").lower()), name


def test_every_variable_is_in_the_contract_or_documented_as_beyond_it() -> None:
    """No setting exists that the reference does not name."""
    readme = (REPO / "docs" / "reference.md").read_text()
    for name in known_variables():
        assert f"`{name}`" in readme, f"{name} is not documented in docs/reference.md"


def test_values_are_typed(env: pytest.MonkeyPatch) -> None:
    """Numbers, booleans, CIDR lists and enums are parsed from their environment strings."""
    env.setenv("JARGATE_PORT", "8443")
    env.setenv("JARGATE_REQUIRE_PAR", "true")
    env.setenv("JARGATE_TRUSTED_PROXIES", "10.0.0.0/8, 2001:db8::/32")
    env.setenv("JARGATE_ENFORCEMENT", "REPORT")
    settings = load_settings()
    assert settings.port == 8443
    assert settings.require_par is True
    assert (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("2001:db8::/32"),
    ) == settings.trusted_proxies
    assert settings.enforcement == "report"


def test_settings_are_frozen(env: pytest.MonkeyPatch) -> None:
    """Settings cannot change after start."""
    settings = load_settings()
    with pytest.raises(ValueError, match="frozen"):
        settings.port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("JARGATE_PORT", "eighty", "JARGATE_PORT: Input should be a valid integer"),
        ("JARGATE_PORT", "70000", "JARGATE_PORT: Input should be less than or equal to 65535"),
        (
            "JARGATE_ENFORCEMENT",
            "maybe",
            "JARGATE_ENFORCEMENT: Input should be 'enforce' or 'report'",
        ),
        ("JARGATE_LOG_LEVEL", "loud", "JARGATE_LOG_LEVEL: Input should be"),
        ("JARGATE_LOG_FORMAT", "xml", "JARGATE_LOG_FORMAT: Input should be 'json' or 'text'"),
        ("JARGATE_JARM_DEFAULT_ALG", "HS256", "JARGATE_JARM_DEFAULT_ALG: Input should be"),
        ("JARGATE_JARM_DEFAULT_ALG", "none", "JARGATE_JARM_DEFAULT_ALG: Input should be"),
        ("JARGATE_CLOCK_SKEW_SECONDS", "-1", "JARGATE_CLOCK_SKEW_SECONDS: Input should be greater"),
        ("JARGATE_REQUIRE_PAR", "perhaps", "JARGATE_REQUIRE_PAR: Input should be a valid boolean"),
        (
            "JARGATE_TRUSTED_PROXIES",
            "10.0.0.0/33",
            "JARGATE_TRUSTED_PROXIES: expected comma-separated CIDRs",
        ),
        (
            "JARGATE_AUTHORIZATION_PATH",
            "authorize",
            "JARGATE_AUTHORIZATION_PATH must be an absolute path",
        ),
        ("JARGATE_PAR_PATH", "/par?x=1", "JARGATE_PAR_PATH must be a path without query"),
        (
            "JARGATE_UPSTREAM_URL",
            "ftp://idp",
            "JARGATE_UPSTREAM_URL: must be an absolute http(s) URL",
        ),
        ("JARGATE_UPSTREAM_URL", "http://idp/?a=1", "JARGATE_UPSTREAM_URL: must not have a query"),
        ("JARGATE_ISSUER", "http://idp.example", "JARGATE_ISSUER: must use https"),
        (
            "JARGATE_ISSUER",
            "https://idp.example/?tenant=1",
            "JARGATE_ISSUER: must not have a query or fragment",
        ),
        ("JARGATE_REDIS_URL", "memcached://x", "JARGATE_REDIS_URL: scheme must be one of"),
        ("JARGATE_METRICS_PORT", "8000", "JARGATE_METRICS_PORT must differ from JARGATE_PORT"),
        ("JARGATE_WORKERS", "0", "JARGATE_WORKERS: Input should be greater than or equal to 1"),
        ("JARGATE_WORKERS", "2", "JARGATE_WORKERS > 1 needs JARGATE_REDIS_URL"),
    ],
)
def test_bad_values_are_refused_with_the_variable_named(
    env: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    """A bad value stops loading with one message naming the variable and the problem."""
    env.setenv(name, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert message in str(caught.value)


def test_redis_password_is_never_echoed(env: pytest.MonkeyPatch) -> None:
    """A malformed Redis URL is refused without printing the password in it."""
    env.setenv("JARGATE_REDIS_URL", "bogus://:hunter2@redis:6379")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert "hunter2" not in str(caught.value)
    env.setenv("JARGATE_REDIS_URL", "redis://:hunter2@redis:6379/0")
    assert "hunter2" not in load_settings().redis_url_for_display()
    assert "hunter2" not in repr(load_settings())


def test_required_values_are_named(env: pytest.MonkeyPatch) -> None:
    """Missing required settings are each named."""
    env.delenv("JARGATE_UPSTREAM_URL")
    env.delenv("JARGATE_ISSUER")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert "JARGATE_UPSTREAM_URL: required but not set" in str(caught.value)
    assert "JARGATE_ISSUER: required but not set" in str(caught.value)


def test_unknown_variable_is_refused(env: pytest.MonkeyPatch) -> None:
    """A typo in a JARGATE_* name stops the process, naming the variable."""
    env.setenv("JARGATE_UPSTREAM_ULR", "http://x")
    with pytest.raises(SettingsError, match=r"unknown setting.*JARGATE_UPSTREAM_ULR"):
        load_settings()


def test_clients_file_and_inline_together_are_refused(env: pytest.MonkeyPatch) -> None:
    """The registry comes from one place only."""
    env.setenv("JARGATE_CLIENTS_FILE", "/x.yaml")
    env.setenv("JARGATE_CLIENTS", '{"clients": []}')
    with pytest.raises(SettingsError, match="JARGATE_CLIENTS_FILE and JARGATE_CLIENTS"):
        load_settings()


def test_env_file_is_read_and_the_environment_wins(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """--env-file supplies settings; a real environment variable overrides the file."""
    env_file = tmp_path / "jargate.env"
    env_file.write_text("JARGATE_PORT=9001\nJARGATE_CLOCK_SKEW_SECONDS=5\n")
    env.setenv("JARGATE_PORT", "9002")
    settings = load_settings(env_file)
    assert (settings.port, settings.clock_skew_seconds) == (9002, 5)


def test_env_file_unknown_variable_is_refused(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A typo inside the env file is caught too."""
    env_file = tmp_path / "jargate.env"
    env_file.write_text("JARGATE_PROT=9001\n")
    with pytest.raises(SettingsError, match="JARGATE_PROT"):
        load_settings(env_file)


def test_missing_env_file_is_named(env: pytest.MonkeyPatch) -> None:
    """A missing --env-file is an error, not silently nothing."""
    with pytest.raises(SettingsError, match="no such file"):
        load_settings("/nonexistent/jargate.env")


def test_example_env_file_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    """config/example.env is valid, so it never rots."""
    import os

    for name in list(os.environ):
        if name.upper().startswith("JARGATE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(REPO)
    settings = load_settings(REPO / "config" / "example.env")
    assert isinstance(settings, Settings)
    assert Path("config/clients.example.yaml") == settings.clients_file


def test_example_env_lists_every_setting() -> None:
    """config/example.env shows every variable (set, or commented out), and no other."""
    import re

    text = (REPO / "config" / "example.env").read_text()
    listed = set(re.findall(r"^#?\s*(JARGATE_[A-Z0-9_]+)=", text, flags=re.MULTILINE))
    assert known_variables() == listed


@pytest.mark.parametrize(
    "url",
    [
        "redis://redis:6379/0",
        "redis://localhost",
        "rediss://user:p%40ss@[::1]:6380/2",
        "redis://redis:6379?db=2",
        "unix:///run/redis/redis.sock?db=1",
        "redis+sentinel://:pw@s1:26379,s2,[::1]:26380/mymaster/3",
        "rediss+sentinel://s1:26379/mymaster",
        "redis+cluster://node:7000",
        "redis+cluster://node:7000/0",
    ],
)
def test_redis_urls_of_every_documented_form_are_accepted(url: str) -> None:
    """The URL forms docs/configuration.md documents pass the start-up check."""
    assert url == make_settings(redis_url=url).redis_url.get_secret_value()  # type: ignore[union-attr]
