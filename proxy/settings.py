"""The gateway's settings: every ``JARGATE_*`` variable, typed and frozen.

Settings are read once, before the event loop starts (:func:`load_settings`). A bad
value, a missing required value or an unknown ``JARGATE_*`` variable stops the process
with one message that names the variable and says what is wrong.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import parse_qs, urlsplit

from dotenv import dotenv_values
from pydantic import (
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from . import error_page
from .algorithms import SigningAlg

#: The rule sets of JARGATE_PROFILE and the registry's ``profile`` (proxy/profiles.py).
Profile = Literal["oauth2", "fapi2", "fapi2-message-signing"]

ENV_PREFIX = "JARGATE_"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class SettingsError(Exception):
    """A setting is missing, malformed or unknown; the message names the variable."""


def _absolute_path(value: str, name: str) -> str:
    if not value.startswith("/"):
        raise ValueError(f"{name} must be an absolute path starting with '/', got {value!r}")
    if "?" in value or "#" in value:
        raise ValueError(f"{name} must be a path without query or fragment")
    return value


class Settings(BaseSettings):
    """The environment (docs/reference.md). Built once at start; immutable afterwards."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        case_sensitive=False,
        frozen=True,
        extra="forbid",
        validate_default=True,
    )

    upstream_url: str = Field(description="base URL of the legacy authorization server")
    issuer: str = Field(description="the public issuer URL clients see")
    host: str = "0.0.0.0"  # noqa: S104 - a sidecar listens on the pod's interfaces
    port: int = Field(default=8000, ge=1, le=65535)
    authorization_path: str = "/authorize"
    par_path: str = "/par"
    #: The upstream's token endpoint path, served by the gateway (None: from discovery).
    token_path: str | None = None
    profile: Profile = "oauth2"
    #: None: the profile's default (proxy/profiles.py), as for the code lifetime.
    require_pkce: bool | None = None
    code_lifetime_seconds: int | None = Field(default=None, ge=1, le=3600)
    jwks_path: str = "/.well-known/jargate/jwks.json"
    upstream_jwks_path: str | None = None
    # Beyond the contract: where the upstream keeps its discovery document, when none of
    # the well-known places (proxy/discovery.py) is it.
    upstream_discovery_path: str | None = None
    clients_file: Path | None = None
    clients: str | None = None
    keys_file: Path | None = None
    #: How often the registry, keys and secret files are checked for changes (0: only
    #: on SIGHUP; proxy/config.py).
    reload_interval_seconds: float = Field(default=5.0, ge=0, le=3600)
    redis_url: SecretStr | None = None
    enforcement: Literal["enforce", "report"] = "enforce"
    clock_skew_seconds: int = Field(default=30, ge=0, le=300)
    max_request_object_lifetime_seconds: int = Field(default=3600, ge=1, le=86400)
    jarm_lifetime_seconds: int = Field(default=600, ge=1, le=86400)
    jarm_default_alg: SigningAlg = "RS256"
    require_par: bool = False
    # Beyond the contract: refuse clients the registry does not know (instead of passing
    # them through untouched).
    require_registered_clients: bool = False
    strict_assertion_audience: bool = False
    workers: int = Field(default=1, ge=1, le=64)
    flow_ttl_seconds: int = Field(default=1800, ge=10, le=86400)
    par_ttl_seconds: int = Field(default=90, ge=1, le=600)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "text"] = "json"
    # Beyond the contract: the page browsers get for the gateway's own errors
    # (proxy/error_page.py), read and checked at start; None: the built-in page.
    error_page_file: Path | None = None
    metrics_port: int = Field(default=9090, ge=0, le=65535)
    trusted_proxies: Annotated[tuple[Network, ...], NoDecode] = ()
    request_uri_allow_http: bool = False
    request_uri_allow_private_networks: bool = False
    # Beyond the contract: the SameSite attribute of the cookie that binds a flow to its
    # browser (proxy/binding.py); "none" for upstreams that federate by cross-site POST.
    flow_cookie_samesite: Literal["lax", "none"] = "lax"
    # Beyond the contract: bounds an operator may need to tune.
    upstream_connect_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    upstream_read_timeout_seconds: float = Field(default=30.0, gt=0, le=600)
    shutdown_timeout_seconds: float = Field(default=20.0, ge=0, le=25)
    #: Plain authorization requests (anyone can make them) waiting at a login page that
    #: one address (an IPv6 /64) may have the store keep.
    max_pending_plain_flows_per_address: int = Field(default=256, ge=1, le=100_000)
    # Client connections (proxy/serving.py): a request head must be complete this long after
    # the connection opened or its first byte arrived; the keep-alive default lies above the
    # idle timeout of common load balancers, so they never reuse a connection just closed.
    request_head_timeout_seconds: float = Field(default=10.0, ge=1, le=120)
    keepalive_timeout_seconds: float = Field(default=75.0, ge=1, le=3600)
    # Input limits (proxy/limits.py): each breach is a clean 4xx.
    max_header_bytes: int = Field(default=32768, ge=4096, le=65536)
    max_headers: int = Field(default=100, ge=16, le=256)
    max_parameters: int = Field(default=100, ge=10, le=1000)
    max_body_bytes: int = Field(default=131072, ge=8192, le=4 * 1024 * 1024)
    max_request_object_bytes: int = Field(default=65536, ge=4096, le=1024 * 1024)
    max_json_depth: int = Field(default=16, ge=4, le=64)
    #: The error page's template: the file's text, read once at start.
    _error_page: str = PrivateAttr(default=error_page.DEFAULT)

    @field_validator(
        "log_level", "enforcement", "log_format", "flow_cookie_samesite", "profile", mode="before"
    )
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @field_validator("upstream_url")
    @classmethod
    def _upstream_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"must be an absolute http(s) URL, got {value!r}")
        if parts.query or parts.fragment:
            raise ValueError("must not have a query or fragment")
        return value.rstrip("/")

    @field_validator("issuer")
    @classmethod
    def _issuer(cls, value: str) -> str:
        # RFC 8414 §2: an https URL with no query or fragment. http is tolerated for
        # loopback so that the demo and the tests run without certificates.
        parts = urlsplit(value)
        if not parts.hostname or parts.scheme not in ("http", "https"):
            raise ValueError(f"must be an absolute https URL, got {value!r}")
        if parts.scheme == "http" and not is_loopback_host(parts.hostname):
            raise ValueError("must use https (http is allowed only for loopback hosts)")
        if parts.query or parts.fragment:
            raise ValueError("must not have a query or fragment (RFC 8414 §2)")
        return value

    @field_validator(
        "authorization_path",
        "par_path",
        "token_path",
        "jwks_path",
        "upstream_jwks_path",
        "upstream_discovery_path",
    )
    @classmethod
    def _path(cls, value: str | None, info: Any) -> str | None:
        if value is None:
            return None
        return _absolute_path(value, f"{ENV_PREFIX}{info.field_name.upper()}")

    @field_validator("error_page_file")
    @classmethod
    def _error_page_file(cls, value: Path | None) -> Path | None:
        # Checked here, so that a refusal names the setting; kept by model_post_init.
        if value is not None:
            error_page.read(value)
        return value

    def model_post_init(self, context: Any) -> None:
        if self.error_page_file is not None:
            self._error_page = error_page.read(self.error_page_file)

    @property
    def error_page(self) -> str:
        """The template of the gateway's error page (:mod:`proxy.error_page`)."""
        return self._error_page

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _networks(cls, value: Any) -> Any:
        if isinstance(value, str):
            items = [item.strip() for item in value.split(",") if item.strip()]
            try:
                return tuple(ipaddress.ip_network(item, strict=False) for item in items)
            except ValueError as exc:
                raise ValueError(f"expected comma-separated CIDRs: {exc}") from None
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        scheme = urlsplit(value.get_secret_value()).scheme
        allowed = {
            "redis",
            "rediss",
            "unix",
            "redis+sentinel",
            "rediss+sentinel",
            "redis+cluster",
            "rediss+cluster",
        }
        if scheme not in allowed:
            raise ValueError(f"scheme must be one of {', '.join(sorted(allowed))}")
        problem = redis_url_problem(value.get_secret_value())
        if problem is not None:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.clients_file is not None and self.clients is not None:
            raise ValueError(
                "JARGATE_CLIENTS_FILE and JARGATE_CLIENTS are both set; use one of them"
            )
        paths = {
            "JARGATE_AUTHORIZATION_PATH": self.authorization_path,
            "JARGATE_PAR_PATH": self.par_path,
            "JARGATE_JWKS_PATH": self.jwks_path,
        }
        if self.token_path is not None:
            paths["JARGATE_TOKEN_PATH"] = self.token_path
        if len(set(paths.values())) != len(paths):
            raise ValueError(f"these paths must differ: {paths}")
        if self.metrics_port == self.port:
            raise ValueError("JARGATE_METRICS_PORT must differ from JARGATE_PORT")
        if self.flow_cookie_samesite == "none" and not self.issuer.startswith("https:"):
            raise ValueError(
                "JARGATE_FLOW_COOKIE_SAMESITE=none needs an https issuer (SameSite=None cookies "
                "must be Secure)"
            )
        if self.workers > 1 and self.redis_url is None:
            # Each worker's memory store would keep its own replay records and flows.
            raise ValueError("JARGATE_WORKERS > 1 needs JARGATE_REDIS_URL (a shared store)")
        return self

    def redis_url_for_display(self) -> str:
        """The Redis URL with any password masked, for summaries and logs."""
        if self.redis_url is None:
            return "memory (in-process; one replica only)"
        parts = urlsplit(self.redis_url.get_secret_value())
        netloc = parts.netloc
        if "@" in netloc:
            netloc = "***@" + netloc.rsplit("@", 1)[1]
        return parts._replace(netloc=netloc).geturl()


def redis_url_problem(url: str) -> str | None:
    """What is wrong with a Redis URL of an allowed scheme, and how to write it (never
    naming its password); None when nothing is."""
    parts = urlsplit(url)
    scheme = parts.scheme
    segments = [segment for segment in parts.path.split("/") if segment]
    query_db = parse_qs(parts.query).get("db", [None])[0]
    if scheme == "unix":
        if not parts.path:
            return "a unix:// URL needs the socket's path, e.g. unix:///run/redis/redis.sock"
        return _database_problem(query_db, "unix:///run/redis/redis.sock?db=0")
    hosts = parts.netloc.rsplit("@", 1)[-1]
    if scheme.endswith("+sentinel"):
        example = f"{scheme}://sentinel-1:26379,sentinel-2:26379/mymaster/0"
        for item in hosts.split(","):
            problem = _host_problem(item, example)
            if problem is not None:
                return problem
        if not segments:
            return f"a Sentinel URL needs the service name as its path, e.g. {example}"
        if len(segments) > 2:
            return f"a Sentinel URL's path is /<service name>[/<database>], e.g. {example}"
        return _database_problem(segments[1] if len(segments) > 1 else None, example)
    example = f"{scheme}://redis:6379" + ("" if scheme.endswith("+cluster") else "/0")
    if "," in hosts:
        return f"several hosts are for Sentinel (redis+sentinel://); this URL names one: {example}"
    problem = _host_problem(hosts, example)
    if problem is not None:
        return problem
    database = segments[0] if segments else query_db
    if len(segments) > 1:
        return f"the path is only the database number, e.g. {example}"
    if scheme.endswith("+cluster") and database not in (None, "0"):
        return f"a Redis Cluster has only database 0: drop the path, e.g. {example}"
    return _database_problem(database, example)


def _host_problem(item: str, example: str) -> str | None:
    if item.startswith("["):
        host, _, rest = item[1:].partition("]")
        if rest and not rest.startswith(":"):
            return f"{item!r} is not host:port, e.g. {example}"
        port = rest[1:]
    else:
        host, _, port = item.rpartition(":") if ":" in item else (item, "", "")
    if not host:
        return f"no host in {item!r}, e.g. {example}"
    if ":" in item and not (port.isdigit() and 1 <= int(port) <= 65535):
        return f"port {port!r} is not a number from 1 to 65535, e.g. {example}"
    return None


def _database_problem(database: str | None, example: str) -> str | None:
    if database is not None and not database.isdigit():
        return f"database {database!r} is not a number (0, 1, ...), e.g. {example}"
    return None


def is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def known_variables() -> set[str]:
    """Every ``JARGATE_*`` variable name the settings understand."""
    return {f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields}


def _unknown_variables(names: set[str]) -> list[str]:
    known = known_variables()
    return sorted(
        name
        for name in names
        if name.upper().startswith(ENV_PREFIX) and name.upper().split("__")[0] not in known
    )


def _with_suggestion(name: str, known: set[str]) -> str:
    """``name``, and the closest known name when one is close: a typo's likely fix."""
    close = difflib.get_close_matches(name.upper(), sorted(known), n=1)
    return f"{name} (did you mean {close[0]}?)" if close else name


def load_settings(env_file: str | os.PathLike[str] | None = None) -> Settings:
    """Read the settings from the environment (and an optional ``.env`` file).

    The environment wins over the file, as pydantic-settings does it. Raises
    :class:`SettingsError` with one message naming every bad or unknown variable.
    """
    names = set(os.environ)
    if env_file is not None:
        if not Path(env_file).is_file():
            raise SettingsError(f"--env-file {env_file}: no such file")
        names |= {k for k, v in dotenv_values(env_file).items() if v is not None}
    unknown = _unknown_variables(names)
    if unknown:
        raise SettingsError(
            "unknown setting(s): "
            + ", ".join(_with_suggestion(name, known_variables()) for name in unknown)
            + " (a typo, or a setting this version does not have)"
        )
    try:
        return Settings(_env_file=None if env_file is None else Path(env_file))
    except ValidationError as exc:
        raise SettingsError(format_validation_error(exc)) from None


def format_validation_error(exc: ValidationError) -> str:
    """One message naming each bad variable; never echo secret values."""
    problems = []
    for error in exc.errors():
        loc = error.get("loc") or ()
        name = f"{ENV_PREFIX}{str(loc[0]).upper()}" if loc else "settings"
        message = str(error.get("msg", "invalid"))
        message = message.removeprefix("Value error, ")
        if error.get("type") == "missing":
            message = "required but not set"
        elif loc and loc[0] != "redis_url" and "input" in error and error["type"] != "missing":
            shown = error["input"]
            if isinstance(shown, str) and len(shown) <= 80:
                message = f"{message} (got {shown!r})"
        problems.append(f"{name}: {message}")
    return "invalid settings: " + "; ".join(problems)
