"""The client registry, and each client's verification keys.

The registry is a YAML or JSON document ``{"clients": [...]}`` (``JARGATE_CLIENTS_FILE``)
or the same JSON inline (``JARGATE_CLIENTS``). Each client uses the registered
metadata names of RFC 7591, OpenID Connect Registration, RFC 9101, RFC 9126 and JARM.
Unknown fields and contradictions are refused at start, naming the client and field.

A client's keys are either inline (``jwks``, imported once) or fetched from its
``jwks_uri`` by :class:`proxy.client_keys.JwksCache`.
"""

from __future__ import annotations

import difflib
import json
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from joserfc.errors import JoseError
from joserfc.jwk import Key, KeySet, OctKey, import_key
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from .algorithms import (
    DEFAULT_ENC,
    ENCRYPTION_ALGS,
    ENCRYPTION_ENCS,
    FAPI2_SIGNING_ALGS,
    SIGNING_ALGS,
    alg_fits_key,
    fapi2_key_problem,
)
from .redirect_uris import check_redirect_uri
from .settings import Profile, Settings, is_loopback_host

AuthMethod = Literal["private_key_jwt", "client_secret_basic", "client_secret_post", "none"]
#: How the gateway authenticates a client to the upstream's token endpoint.
UpstreamAuthMethod = Literal["client_secret_basic", "client_secret_post", "none"]


#: FAPI 2.0 Security Profile §5.3.2.1: nbf and iat more than 60 s ahead are refused.
FAPI2_MAX_SKEW = 60
#: FAPI 2.0 Security Profile §5.3.2.2: a pushed request's expires_in below 600 s.
FAPI2_MAX_PAR_TTL = 600
#: FAPI 2.0 Message Signing §5.4: a JARM response's exp at most 10 minutes ahead.
MESSAGE_SIGNING_JARM_LIFETIME = 600


class RegistryError(Exception):
    """The client registry is unusable; the message names the client and field."""


def _signing_alg(value: str | None) -> str | None:
    if value is None:
        return None
    if value == "none" or value.upper().startswith("HS"):
        raise ValueError(
            f"{value!r} is not allowed: symmetric and 'none' algorithms are refused (RFC 8725 §3.1)"
        )
    if value not in SIGNING_ALGS:
        raise ValueError(f"unsupported algorithm {value!r} (allowed: {', '.join(SIGNING_ALGS)})")
    return value


class Client(BaseModel):
    """One registered client, in registration-metadata names."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    client_id: str = Field(min_length=1, max_length=255)
    jwks: dict[str, Any] | None = None
    jwks_uri: str | None = None
    redirect_uris: tuple[str, ...] = ()
    request_object_signing_alg: str | None = None
    request_object_encryption_alg: str | None = None
    request_object_encryption_enc: str | None = None
    require_signed_request_object: bool = False
    require_pushed_authorization_requests: bool = False
    request_uris: tuple[str, ...] = ()
    authorization_signed_response_alg: str | None = None
    authorization_encrypted_response_alg: str | None = None
    authorization_encrypted_response_enc: str | None = None
    token_endpoint_auth_method: AuthMethod | None = None
    client_secret: SecretStr | None = None
    client_secret_file: Path | None = None
    profile: Profile | None = None
    require_pkce: bool | None = None
    upstream_token_endpoint_auth_method: UpstreamAuthMethod | None = None
    upstream_client_secret: SecretStr | None = None
    upstream_client_secret_file: Path | None = None

    @model_validator(mode="before")
    @classmethod
    def _default_enc(cls, data: Any) -> Any:
        # OpenID Connect Registration §2: *_enc defaults to A128CBC-HS256 when *_alg is set.
        if isinstance(data, dict):
            data = dict(data)
            for prefix in ("request_object_encryption", "authorization_encrypted_response"):
                if data.get(f"{prefix}_alg") is not None and data.get(f"{prefix}_enc") is None:
                    data[f"{prefix}_enc"] = DEFAULT_ENC
        return data

    @field_validator("request_object_signing_alg", "authorization_signed_response_alg")
    @classmethod
    def _check_signing_alg(cls, value: str | None) -> str | None:
        return _signing_alg(value)

    @field_validator("request_object_encryption_alg", "authorization_encrypted_response_alg")
    @classmethod
    def _check_encryption_alg(cls, value: str | None) -> str | None:
        if value is not None and value not in ENCRYPTION_ALGS:
            raise ValueError(
                f"unsupported algorithm {value!r} (allowed: {', '.join(ENCRYPTION_ALGS)}; "
                "RSA1_5, PBES2, dir and symmetric key wrapping are refused)"
            )
        return value

    @field_validator("request_object_encryption_enc", "authorization_encrypted_response_enc")
    @classmethod
    def _check_encryption_enc(cls, value: str | None) -> str | None:
        if value is not None and value not in ENCRYPTION_ENCS:
            raise ValueError(
                f"unsupported encryption {value!r} (allowed: {', '.join(ENCRYPTION_ENCS)})"
            )
        return value

    @field_validator("redirect_uris")
    @classmethod
    def _check_redirect_uris(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(check_redirect_uri(uri) for uri in value)

    @field_validator("request_uris")
    @classmethod
    def _check_request_uris(cls, value: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        allow_http = bool((info.context or {}).get("allow_http"))
        for uri in value:
            parts = urlsplit(uri)
            if parts.scheme != "https" and not (allow_http and parts.scheme == "http"):
                raise ValueError(
                    f"{uri!r}: request_uri prefixes must be https (RFC 9101 §5.2)"
                    + ("" if allow_http else "; http needs JARGATE_REQUEST_URI_ALLOW_HTTP")
                )
            if not parts.netloc:
                raise ValueError(f"{uri!r} is not an absolute URL")
        return value

    @field_validator("jwks_uri")
    @classmethod
    def _check_jwks_uri(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        loopback = parts.scheme == "http" and is_loopback_host(parts.hostname or "")
        if parts.scheme != "https" and not loopback:
            raise ValueError(f"{value!r} must be an https URL (http only for loopback)")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Client:
        if self.jwks is not None and self.jwks_uri is not None:
            raise ValueError("jwks and jwks_uri are both set; register one of them")
        if self.client_secret is not None and self.client_secret_file is not None:
            raise ValueError("client_secret and client_secret_file are both set")
        if self.request_object_encryption_enc and not self.request_object_encryption_alg:
            raise ValueError("request_object_encryption_enc needs request_object_encryption_alg")
        if (
            self.authorization_encrypted_response_enc
            and not self.authorization_encrypted_response_alg
        ):
            raise ValueError(
                "authorization_encrypted_response_enc needs authorization_encrypted_response_alg"
            )
        has_keys = self.jwks is not None or self.jwks_uri is not None
        has_secret = self.client_secret is not None or self.client_secret_file is not None
        needs_keys = {
            "require_signed_request_object": self.require_signed_request_object,
            "request_object_signing_alg": self.request_object_signing_alg is not None,
            "authorization_encrypted_response_alg": (
                self.authorization_encrypted_response_alg is not None
            ),
            "token_endpoint_auth_method: private_key_jwt": (
                self.token_endpoint_auth_method == "private_key_jwt"  # noqa: S105 - a method name
            ),
        }
        for name, needed in needs_keys.items():
            if needed and not has_keys:
                raise ValueError(f"{name} needs the client's keys: register jwks or jwks_uri")
        method = self.token_endpoint_auth_method
        if method in ("client_secret_basic", "client_secret_post") and not has_secret:
            raise ValueError(f"token_endpoint_auth_method {method} needs client_secret(_file)")
        if method == "none" and has_secret:
            raise ValueError("a public client (token_endpoint_auth_method none) has no secret")
        self._check_upstream_authentication()
        return self

    def _check_upstream_authentication(self) -> None:
        upstream = self.upstream_token_endpoint_auth_method
        secrets = (self.upstream_client_secret, self.upstream_client_secret_file)
        has_secret = any(secret is not None for secret in secrets)
        if all(secret is not None for secret in secrets):
            raise ValueError("upstream_client_secret and upstream_client_secret_file are both set")
        if upstream is None and has_secret:
            raise ValueError(
                "upstream_client_secret(_file) needs upstream_token_endpoint_auth_method"
            )
        if upstream in ("client_secret_basic", "client_secret_post") and not has_secret:
            raise ValueError(
                f"upstream_token_endpoint_auth_method {upstream} needs"
                " upstream_client_secret(_file)"
            )
        if upstream == "none" and has_secret:
            raise ValueError("upstream_token_endpoint_auth_method none takes no upstream secret")
        if upstream is not None and self.auth_method is None:
            raise ValueError(
                "upstream_token_endpoint_auth_method needs a way for the client to authenticate"
                " to the gateway: token_endpoint_auth_method with jwks or a client_secret"
            )

    @property
    def auth_method(self) -> AuthMethod | None:
        """How the client authenticates at the PAR endpoint (RFC 7591 §2 names the field).

        When the registry names none: ``private_key_jwt`` for clients with keys, else
        ``client_secret_basic`` for clients with a secret, else none possible.
        """
        if self.token_endpoint_auth_method is not None:
            return self.token_endpoint_auth_method
        if self.jwks is not None or self.jwks_uri is not None:
            return "private_key_jwt"
        if self.client_secret is not None or self.client_secret_file is not None:
            return "client_secret_basic"
        return None


@dataclass(frozen=True)
class RegisteredClient:
    """A client with its keys imported and its secret read."""

    meta: Client
    keys: KeySet | None
    secret: SecretStr | None
    #: The secret the gateway authenticates this client with at the upstream's token endpoint.
    upstream_secret: SecretStr | None = None

    @property
    def client_id(self) -> str:
        """The client's identifier."""
        return self.meta.client_id


def import_client_jwks(document: Any, where: str) -> KeySet:
    """Import a client's public JWKS; private or symmetric keys are refused."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise RegistryError(f'{where}: expected a JWKS {{"keys": [...]}}')
    keys: list[Key] = []
    for index, item in enumerate(document["keys"]):
        if not isinstance(item, dict):
            raise RegistryError(f"{where}: key #{index} is not a JSON object")
        if "d" in item or item.get("kty") == "oct":
            raise RegistryError(
                f"{where}: key #{index} is private or symmetric; register public keys only"
            )
        try:
            key = import_key(item)
        except (JoseError, ValueError, TypeError, KeyError) as exc:
            raise RegistryError(f"{where}: key #{index} is not a valid JWK ({exc})") from None
        if isinstance(key, OctKey):  # pragma: no cover - refused above by kty
            raise RegistryError(f"{where}: key #{index} is symmetric")
        keys.append(key)
    return KeySet(keys)


@lru_cache(maxsize=4096)
def fold_identifier(value: str) -> str:
    """``value`` as a lenient lookup would compare it: MySQL's default collations fold
    case and accents and ignore trailing spaces; other stores fold Unicode compatibility
    forms or trim. Control, format (zero-width) and space characters are dropped."""
    decomposed = unicodedata.normalize("NFKD", value)
    kept = "".join(
        char
        for char in decomposed
        if not unicodedata.combining(char) and unicodedata.category(char)[0] not in "CZ"
    )
    return unicodedata.normalize("NFKC", kept.casefold())


class ClientRegistry:
    """Clients by ``client_id``; built once at start."""

    def __init__(self, clients: list[RegisteredClient]) -> None:
        self._clients = {c.client_id: c for c in clients}
        self._places = frozenset(
            (parts.scheme, parts.netloc.lower(), parts.path)
            for client in clients
            for parts in map(urlsplit, client.meta.redirect_uris)
        )
        self._folded: dict[str, RegisteredClient] = {}
        for client in clients:
            other = self._folded.setdefault(fold_identifier(client.client_id), client)
            if other is not client:
                raise RegistryError(
                    f"clients {other.client_id!r} and {client.client_id!r} differ only in case, "
                    "accents, spaces or Unicode form: a server that folds them would confuse them"
                )

    def __len__(self) -> int:
        return len(self._clients)

    def __iter__(self) -> Any:
        return iter(self._clients.values())

    def get(self, client_id: str) -> RegisteredClient | None:
        """The registered client, or None for a client the gateway does not know."""
        return self._clients.get(client_id)

    @property
    def redirect_places(self) -> frozenset[tuple[str, str, str]]:
        """(scheme, host, path) of every registered redirect URI: an answer leading there
        is a flow's response even on the issuer's own host."""
        return self._places

    def equivalent(self, client_id: str) -> RegisteredClient | None:
        """The registered client an unknown ``client_id`` is another spelling of, if any."""
        return self._folded.get(fold_identifier(client_id))


def _describe(exc: ValidationError, client_id: str) -> str:
    problems = []
    for error in exc.errors():
        loc = ".".join(str(part) for part in error.get("loc", ()))
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        if error.get("type") == "extra_forbidden":
            close = difflib.get_close_matches(loc, sorted(Client.model_fields), n=1)
            message = f"unknown field (did you mean {close[0]}?)" if close else "unknown field"
        problems.append(f"{loc}: {message}" if loc else message)
    return f"client {client_id!r}: " + "; ".join(problems)


def _read_document(settings: Settings) -> tuple[Any, str]:
    if settings.clients_file is not None:
        path = settings.clients_file
        source = f"JARGATE_CLIENTS_FILE {path}"
        try:
            text = path.read_text()
        except OSError as exc:
            raise RegistryError(f"{source}: {exc.strerror}") from None
        try:
            if path.suffix == ".json":
                return json.loads(text), source
            return yaml.safe_load(text), source
        except ValueError as exc:
            raise RegistryError(f"{source}: cannot parse ({exc})") from None
        except yaml.YAMLError as exc:
            raise RegistryError(f"{source}: cannot parse ({_yaml_problem(exc)})") from None
    if settings.clients is not None:
        try:
            return json.loads(settings.clients), "JARGATE_CLIENTS"
        except ValueError as exc:
            raise RegistryError(f"JARGATE_CLIENTS: not JSON ({exc})") from None
    return {"clients": []}, "no registry"


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """What is wrong and where, without PyYAML's quote of the line (it may hold a secret)."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        return f"{exc.problem} at line {mark.line + 1}, column {mark.column + 1}"
    return type(exc).__name__


def load_registry(settings: Settings) -> ClientRegistry:
    """Load and validate the registry the settings name (empty when none is set)."""
    document, source = _read_document(settings)
    if not isinstance(document, dict) or set(document) != {"clients"}:
        raise RegistryError(f'{source}: expected a document {{"clients": [...]}} and nothing else')
    items = document["clients"]
    if not isinstance(items, list):
        raise RegistryError(f"{source}: 'clients' must be a list")
    context = {"allow_http": settings.request_uri_allow_http}
    clients: list[RegisteredClient] = []
    seen: set[str] = set()
    for index, item in enumerate(items):
        client_id = item.get("client_id") if isinstance(item, dict) else None
        label = client_id if isinstance(client_id, str) else f"#{index}"
        try:
            meta = Client.model_validate(item, context=context)
        except ValidationError as exc:
            raise RegistryError(f"{source}: {_describe(exc, label)}") from None
        if meta.client_id in seen:
            raise RegistryError(f"{source}: client {meta.client_id!r} is registered twice")
        seen.add(meta.client_id)
        where = f"{source}: client {meta.client_id!r}: jwks"
        keys = import_client_jwks(meta.jwks, where) if meta.jwks is not None else None
        pinned = meta.request_object_signing_alg
        if keys is not None and pinned and not any(alg_fits_key(pinned, k) for k in keys):
            raise RegistryError(
                f"{source}: client {meta.client_id!r}: request_object_signing_alg {pinned} "
                "fits none of the keys in its jwks"
            )
        sealed = meta.authorization_encrypted_response_alg
        if keys is not None and sealed and not any(_encrypts_to(sealed, k) for k in keys):
            raise RegistryError(
                f"{source}: client {meta.client_id!r}: authorization_encrypted_response_alg "
                f"{sealed} fits none of the keys in its jwks (RSA-OAEP* needs an RSA key, "
                "ECDH-ES* an EC or X25519 key, with use enc or no use): add one"
            )
        _check_profile(meta, keys, settings, source)
        clients.append(
            RegisteredClient(
                meta=meta,
                keys=keys,
                secret=_read_secret(
                    meta.client_secret, meta.client_secret_file, "client_secret_file", meta, source
                ),
                upstream_secret=_read_secret(
                    meta.upstream_client_secret,
                    meta.upstream_client_secret_file,
                    "upstream_client_secret_file",
                    meta,
                    source,
                ),
            )
        )
    return ClientRegistry(clients)


def _check_profile(meta: Client, keys: KeySet | None, settings: Settings, source: str) -> None:
    """What the FAPI 2.0 profiles ask of a client, refused at start (Security Profile
    §5.3.2.1 and §5.4, Message Signing §5.3 and §5.4)."""
    profile = meta.profile or settings.profile
    if profile == "oauth2":
        return
    where = f"{source}: client {meta.client_id!r} (profile {profile})"
    allowed = ", ".join(FAPI2_SIGNING_ALGS)
    if meta.auth_method != "private_key_jwt":
        raise RegistryError(
            f"{where}: FAPI 2.0 clients authenticate with private_key_jwt: register jwks or"
            " jwks_uri and token_endpoint_auth_method private_key_jwt"
        )
    for name in ("request_object_signing_alg", "authorization_signed_response_alg"):
        alg = getattr(meta, name)
        if alg is not None and alg not in FAPI2_SIGNING_ALGS:
            raise RegistryError(f"{where}: {name} {alg} is not allowed (FAPI 2.0: {allowed})")
    for index, key in enumerate(keys or ()):
        problem = fapi2_key_problem(key)
        if problem is not None:
            raise RegistryError(f"{where}: jwks key #{index} is {problem}")
    if settings.clock_skew_seconds > FAPI2_MAX_SKEW:
        raise RegistryError(
            f"{where}: JARGATE_CLOCK_SKEW_SECONDS must be at most {FAPI2_MAX_SKEW} (FAPI 2.0"
            " refuses nbf and iat more than 60 s ahead)"
        )
    if settings.par_ttl_seconds >= FAPI2_MAX_PAR_TTL:
        raise RegistryError(
            f"{where}: JARGATE_PAR_TTL_SECONDS must be below {FAPI2_MAX_PAR_TTL} (FAPI 2.0"
            " §5.3.2.2: a request_uri lives less than 600 s)"
        )
    if profile != "fapi2-message-signing":
        return
    jarm_alg = meta.authorization_signed_response_alg or settings.jarm_default_alg
    if jarm_alg not in FAPI2_SIGNING_ALGS:
        raise RegistryError(
            f"{where}: JARM responses would be signed with {jarm_alg}: set"
            f" authorization_signed_response_alg or JARGATE_JARM_DEFAULT_ALG to one of {allowed}"
        )
    if settings.jarm_lifetime_seconds > MESSAGE_SIGNING_JARM_LIFETIME:
        raise RegistryError(
            f"{where}: JARGATE_JARM_LIFETIME_SECONDS must be at most"
            f" {MESSAGE_SIGNING_JARM_LIFETIME} (FAPI 2.0 Message Signing §5.4)"
        )


def _encrypts_to(alg: str, key: Key) -> bool:
    """Whether JARM responses could be encrypted to ``key`` with ``alg`` (the choice of
    :func:`proxy.response.jarm.encryption_key_for`)."""
    return alg_fits_key(alg, key) and key.get("use") in ("enc", None)


def _read_secret(
    inline: SecretStr | None, file: Path | None, field: str, meta: Client, source: str
) -> SecretStr | None:
    """A secret given inline, or read from its file (the registry field ``field``)."""
    if file is None:
        return inline
    try:
        text = file.read_text().strip()
    except OSError as exc:
        raise RegistryError(
            f"{source}: client {meta.client_id!r}: {field}: {exc.strerror}"
        ) from None
    if not text:
        raise RegistryError(f"{source}: client {meta.client_id!r}: {field} is empty")
    return SecretStr(text)
