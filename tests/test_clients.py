"""The client registry: metadata names, refusals naming client and field, and client keys."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from joserfc.jwk import ECKey, RSAKey

from proxy.app import create_app
from proxy.client_keys import ClientKeysUnavailable, JwksCache
from proxy.clients import RegistryError, load_registry
from proxy.keyring import Keyring
from proxy.store import MemoryStore
from tests.conftest import AiohttpClient, AiohttpServer, Legacy
from tests.jar import Claims, sign
from tests.support import REPO, RawServer, http_answer, make_settings
from tests.test_jar import assert_refused, authorize

EC_PUBLIC = ECKey.generate_key("P-256").as_dict(private=False, kid="k1")


def registry_of(*clients: dict[str, Any], **settings: Any) -> Any:
    return load_registry(make_settings(clients=json.dumps({"clients": list(clients)}), **settings))


def client(**fields: Any) -> dict[str, Any]:
    return {"client_id": "c1", "redirect_uris": ["https://rp.example/cb"], **fields}


def test_example_registry_loads() -> None:
    """config/clients.example.yaml is valid, so it never rots."""
    registry = load_registry(make_settings(clients_file=REPO / "config" / "clients.example.yaml"))
    assert [c.client_id for c in registry] == ["web-client", "fapi-client", "legacy-app"]
    web_client = registry.get("web-client")
    assert web_client is not None
    assert web_client.keys is not None
    assert web_client.meta.request_object_signing_alg == "ES256"


def test_json_file_and_inline_json(tmp_path: Path) -> None:
    """The registry may be a JSON file or inline JSON; the result is the same."""
    document = {"clients": [client(jwks={"keys": [EC_PUBLIC]})]}
    path = tmp_path / "clients.json"
    path.write_text(json.dumps(document))
    from_file = load_registry(make_settings(clients_file=path))
    inline = load_registry(make_settings(clients=json.dumps(document)))
    assert from_file.get("c1") is not None
    assert inline.get("c1") is not None
    assert from_file.get("c1").meta == inline.get("c1").meta  # type: ignore[union-attr]


def test_encryption_enc_defaults_to_a128cbc_hs256() -> None:
    """OIDC Registration: *_enc defaults to A128CBC-HS256 when only *_alg is registered."""
    registry = registry_of(
        client(
            jwks={"keys": [EC_PUBLIC]},
            request_object_encryption_alg="RSA-OAEP-256",
            authorization_encrypted_response_alg="ECDH-ES",
        )
    )
    meta = registry.get("c1").meta
    assert meta.request_object_encryption_enc == "A128CBC-HS256"
    assert meta.authorization_encrypted_response_enc == "A128CBC-HS256"


def test_unknown_client_is_none() -> None:
    """A client not in the registry is simply unknown."""
    assert registry_of().get("nobody") is None


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"colour": "blue"}, "client 'c1': colour: unknown field"),
        (
            {"jwks": {"keys": [EC_PUBLIC]}, "jwks_uri": "https://rp.example/jwks"},
            "client 'c1': jwks and jwks_uri are both set",
        ),
        (
            {"request_object_signing_alg": "none"},
            "request_object_signing_alg: 'none' is not allowed",
        ),
        (
            {"request_object_signing_alg": "HS256"},
            "request_object_signing_alg: 'HS256' is not allowed",
        ),
        (
            {"authorization_signed_response_alg": "HS512"},
            "authorization_signed_response_alg: 'HS512'",
        ),
        ({"request_object_encryption_alg": "RSA1_5"}, "request_object_encryption_alg: unsupported"),
        ({"request_object_encryption_alg": "PBES2-HS256+A128KW"}, "unsupported algorithm"),
        (
            {"authorization_encrypted_response_enc": "A128GCM"},
            "needs authorization_encrypted_response_alg",
        ),
        (
            {"redirect_uris": ["/relative/cb"]},
            "client 'c1': redirect_uris: '/relative/cb' is not an absolute URI",
        ),
        ({"redirect_uris": ["https://rp.example/cb#frag"]}, "must not contain a fragment"),
        ({"request_uris": ["http://rp.example/r/"]}, "request_uri prefixes must be https"),
        ({"jwks_uri": "http://rp.example/jwks"}, "must be an https URL"),
        (
            {"require_signed_request_object": True},
            "require_signed_request_object needs the client's keys",
        ),
        ({"token_endpoint_auth_method": "client_secret_basic"}, "needs client_secret"),
        ({"token_endpoint_auth_method": "none", "client_secret": "s"}, "public client"),
        ({"token_endpoint_auth_method": "magic"}, "token_endpoint_auth_method: Input should be"),
        (
            {"client_secret": "a", "client_secret_file": "/x"},
            "client_secret and client_secret_file",
        ),
        ({"client_secret_file": "/nonexistent/secret"}, "client_secret_file: No such file"),
        ({"jwks": {"keys": [{**EC_PUBLIC, "d": "x"}]}}, "private or symmetric"),
        ({"jwks": {"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}}, "private or symmetric"),
        ({"jwks": {"keys": [{"kty": "EC", "crv": "P-256", "x": "bad"}]}}, "not a valid JWK"),
        (
            {"jwks": {"keys": [EC_PUBLIC]}, "request_object_signing_alg": "PS256"},
            "fits none of the keys",
        ),
        ({"client_id": ""}, "client_id: String should have at least 1 character"),
    ],
)
def test_bad_clients_are_refused_naming_client_and_field(
    fields: dict[str, Any], message: str
) -> None:
    """Each contradiction or unknown field stops loading with the client and field named."""
    with pytest.raises(RegistryError) as caught:
        registry_of(client(**fields))
    assert message in str(caught.value)


SCHEME_RULE = "redirect URIs must be https, http to a loopback host, or a private-use scheme"
NOT_A_URI = "is not a URI: only RFC 3986 characters are allowed"


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("javascript:alert(1)", f"the scheme 'javascript' is refused; {SCHEME_RULE}"),
        ("javascript://rp.example/%0aalert(1)", "the scheme 'javascript' is refused"),
        ("data:text/html;base64,PHNjcmlwdD4=", "the scheme 'data' is refused"),
        ("vbscript:msgbox(1)", "the scheme 'vbscript' is refused"),
        ("file:///etc/passwd", "the scheme 'file' is refused"),
        ("blob:https://rp.example/0b1c", "the scheme 'blob' is refused"),
        ("about:blank", "the scheme 'about' is refused"),
        ("myapp:/cb", "the scheme 'myapp' is refused"),
        ("ftp://rp.example/cb", "the scheme 'ftp' is refused"),
        ("JavaScript:alert(1)", "the scheme 'JavaScript' is refused"),
        ("HTTPS://rp.example/cb", "the scheme must be lowercase"),
        (" JavaScript:alert(1)", NOT_A_URI),
        ("java\tscript:alert(1)", NOT_A_URI),
        ("java\nscript:alert(1)", NOT_A_URI),
        ("\x00javascript:alert(1)", NOT_A_URI),
        ("https://rp.example/cb ", NOT_A_URI),
        ("https://rp.example/c\u2028b", NOT_A_URI),
        ("https://rp.example/caf\u00e9", NOT_A_URI),
        ("https://rp.example/%zz", "a % must start a percent-encoded octet"),
        ("http://rp.example/cb", "http is allowed only to a loopback host"),
        ("http://10.0.0.1/cb", "http is allowed only to a loopback host"),
        ("http://127.0.0.1.nip.io/cb", "http is allowed only to a loopback host"),
        ("http://localhost.rp.example/cb", "http is allowed only to a loopback host"),
        ("http://[::ffff:127.0.0.1]/cb", "http is allowed only to a loopback host"),
        ("https://rp.example@evil.example/cb", "must not contain user information"),
        ("https:///cb", "is not an absolute URI (no host)"),
        ("https://rp.example:99999/cb", "Port out of range"),
    ],
)
def test_redirect_uris_outside_rfc_8252_are_refused(uri: str, message: str) -> None:
    """Only https, http to loopback and private-use schemes with a dot load; every other
    scheme or hidden character stops loading, naming the client, the field and the rule."""
    with pytest.raises(RegistryError) as caught:
        registry_of(client(redirect_uris=["https://rp.example/ok", uri]))
    assert f"client 'c1': redirect_uris: {uri!r}" in str(caught.value)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("allowed", "look_alike"),
    [
        ("https://rp.example/cb", "http://rp.example/cb"),
        ("https://rp.example:8443/cb?tenant=a%20b&x=1", "https://rp.example:8443/cb?tenant=a b"),
        ("http://127.0.0.1/cb", "http://127.0.0.1.nip.io/cb"),
        ("http://127.0.0.1:51004/oauth2redirect", "http://10.0.0.1:51004/oauth2redirect"),
        ("http://127.10.20.30:8080/cb", "http://128.0.0.1:8080/cb"),
        ("http://[::1]:8080/cb", "http://[::2]:8080/cb"),
        ("http://localhost/cb", "http://localhost.rp.example/cb"),
        ("com.example.app:/oauth2redirect/provider", "exampleapp:/oauth2redirect/provider"),
        ("com.example.app://cb", "comexampleapp://cb"),
    ],
)
def test_rfc_8252_redirect_uris_load_and_their_look_alikes_do_not(
    allowed: str, look_alike: str
) -> None:
    """https, http to a loopback host and private-use schemes with a dot are registered as
    written; the nearest URI outside those rules is refused."""
    registered = registry_of(client(redirect_uris=[allowed])).get("c1")
    assert registered is not None
    assert (allowed,) == registered.meta.redirect_uris
    with pytest.raises(RegistryError, match="client 'c1': redirect_uris: "):
        registry_of(client(redirect_uris=[allowed, look_alike]))


def test_http_request_uris_need_the_test_setting() -> None:
    """An http request_uri prefix is allowed only with JARGATE_REQUEST_URI_ALLOW_HTTP."""
    registry = registry_of(
        client(request_uris=["http://127.0.0.1:9/r/"]), request_uri_allow_http=True
    )
    assert registry.get("c1").meta.request_uris == ("http://127.0.0.1:9/r/",)


def test_duplicate_client_is_refused() -> None:
    """One client_id registered twice is an error."""
    with pytest.raises(RegistryError, match="'c1' is registered twice"):
        registry_of(client(), client())


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ("not json", "JARGATE_CLIENTS: not JSON"),
        ('{"clients": {}}', "'clients' must be a list"),
        ('{"clients": [], "extra": 1}', 'expected a document {"clients": [...]}'),
    ],
)
def test_malformed_registry_documents(document: str, message: str) -> None:
    """A registry that is not {clients: [...]} is refused with its source named."""
    with pytest.raises(RegistryError, match=message.replace("[", r"\[").replace("{", r"\{")):
        load_registry(make_settings(clients=document))


def test_client_secret_file_is_read(tmp_path: Path) -> None:
    """client_secret_file names a file (a mounted Secret) whose content is the secret."""
    secret = tmp_path / "secret"
    secret.write_text("s3cr3t-value\n")
    registry = registry_of(client(client_secret_file=str(secret)))
    registered = registry.get("c1")
    assert registered is not None
    assert registered.secret is not None
    assert registered.secret.get_secret_value() == "s3cr3t-value"
    assert registered.meta.auth_method == "client_secret_basic"


class JwksServer:
    """A client's jwks_uri on loopback that counts fetches."""

    def __init__(self) -> None:
        self.keys = [RSAKey.generate_key(2048).as_dict(private=False, kid="first")]
        self.fetches = 0
        self.cache_control = "max-age=600"
        self.status = 200

    def app(self) -> web.Application:
        async def jwks(request: web.Request) -> web.Response:
            self.fetches += 1
            return web.json_response(
                {"keys": self.keys},
                status=self.status,
                headers={"Cache-Control": self.cache_control},
            )

        app = web.Application()
        app.router.add_get("/jwks", jwks)
        return app


async def test_jwks_uri_is_fetched_cached_and_refetched_on_unknown_kid(
    aiohttp_server: AiohttpServer,
) -> None:
    """Keys are fetched once, served from cache, and refetched for an unknown kid at most once
    per interval."""
    jwks = JwksServer()
    server = await aiohttp_server(jwks.app())
    registry = registry_of(client(jwks_uri=str(server.make_url("/jwks"))))
    registered = registry.get("c1")
    assert registered is not None
    async with aiohttp.ClientSession() as session:
        cache = JwksCache(session, refetch_interval=0.3)
        keys = await cache.keys_for(registered, "first")
        assert [k.kid for k in keys] == ["first"]
        await cache.keys_for(registered, "first")
        assert jwks.fetches == 1
        jwks.keys.append(ECKey.generate_key("P-256").as_dict(private=False, kid="second"))
        # Within the interval an unknown kid does not cause a fetch (no amplification).
        await cache.keys_for(registered, "second")
        assert jwks.fetches == 1
        await asyncio.sleep(0.35)
        keys = await cache.keys_for(registered, "second")
        assert jwks.fetches == 2
        assert [k.kid for k in keys] == ["first", "second"]


async def test_jwks_uri_failure_uses_stale_keys_or_raises(aiohttp_server: AiohttpServer) -> None:
    """A failing jwks_uri keeps serving the cached keys; with nothing cached it raises."""
    jwks = JwksServer()
    server = await aiohttp_server(jwks.app())
    registered = registry_of(client(jwks_uri=str(server.make_url("/jwks")))).get("c1")
    assert registered is not None
    async with aiohttp.ClientSession() as session:
        cache = JwksCache(session, refetch_interval=0.0)
        jwks.status = 500
        with pytest.raises(ClientKeysUnavailable, match="HTTP 500"):
            await cache.keys_for(registered)
        jwks.status = 200
        await cache.keys_for(registered)
        jwks.status = 500
        keys = await cache.keys_for(registered, "unknown-kid")
        assert [k.kid for k in keys] == ["first"]


async def test_failing_jwks_uri_is_asked_once_for_many_requests(
    aiohttp_client: AiohttpClient, legacy: Legacy, aiohttp_server: AiohttpServer
) -> None:
    """Twenty request objects for a client whose jwks_uri fails are each refused with
    invalid_request_object, nothing reaches the upstream, and the jwks_uri is asked once."""
    jwks = JwksServer()
    jwks.status = 500
    server = await aiohttp_server(jwks.app())
    settings = make_settings(
        legacy.url,
        clients=json.dumps({"clients": [client(jwks_uri=str(server.make_url("/jwks")))]}),
    )
    app = create_app(
        settings, registry=load_registry(settings), keyring=Keyring.throwaway(), store=MemoryStore()
    )
    gateway = await aiohttp_client(app)
    for _ in range(20):
        token = sign(Claims("c1").build(), "ES256", kid="unknown")
        response = await authorize(gateway, client_id="c1", request=token)
        params = await assert_refused(response, legacy, "invalid_request_object")
        assert "keys are unavailable" in params["error_description"][0]
    assert 1 == jwks.fetches


async def test_failed_refetch_counts_as_an_attempt(aiohttp_server: AiohttpServer) -> None:
    """With keys cached and the jwks_uri failing, unknown kids cause one refetch per interval,
    not one per request, and the cached keys keep serving."""
    jwks = JwksServer()
    server = await aiohttp_server(jwks.app())
    registered = registry_of(client(jwks_uri=str(server.make_url("/jwks")))).get("c1")
    assert registered is not None
    async with aiohttp.ClientSession() as session:
        cache = JwksCache(session, refetch_interval=0.3)
        await cache.keys_for(registered, "first")
        jwks.status = 500
        await asyncio.sleep(0.35)
        for _ in range(20):
            keys = await cache.keys_for(registered, "unknown-kid")
            assert ["first"] == [k.kid for k in keys]
        assert 2 == jwks.fetches
        await asyncio.sleep(0.35)
        await cache.keys_for(registered, "unknown-kid")
        assert 3 == jwks.fetches


@pytest.mark.parametrize(
    ("content_length", "hold", "reason"),
    [("10000000000", True, "too large"), ("+100", False, "unreachable")],
    ids=["declares-10-gb-and-stalls", "cut-short"],
)
async def test_incomplete_jwks_body_is_not_used(
    raw_server: Callable[..., Awaitable[RawServer]],
    content_length: str,
    hold: bool,
    reason: str,
) -> None:
    """A jwks_uri answer whose valid JWKS is followed by a declared length over the limit
    and a stall, or by a closed connection short of its length, gives no keys."""
    body = json.dumps({"keys": [EC_PUBLIC]}).encode()
    length = str(len(body) + 100) if content_length == "+100" else content_length
    host = await raw_server(
        [http_answer(body, "application/json", Content_Length=length)], hold=hold
    )
    registered = registry_of(client(jwks_uri=host.url + "/jwks")).get("c1")
    assert registered is not None
    async with aiohttp.ClientSession() as session:
        with pytest.raises(ClientKeysUnavailable, match=reason):
            await asyncio.wait_for(JwksCache(session).keys_for(registered), 3)
    assert 1 == len(host.heads)


@pytest.mark.parametrize(
    ("header", "ttl"),
    [
        ("max-age=600", 600.0),
        ("max-age=5", 60.0),
        ("max-age=99999999", 86400.0),
        ("no-store", 60.0),
        ("", 300.0),
        ("public, max-age=3600", 3600.0),
    ],
)
def test_cache_control_is_honoured_within_bounds(header: str, ttl: float) -> None:
    """Cache-Control max-age sets the cache time, clamped to [60 s, 24 h]."""
    cache = JwksCache(session=None)  # type: ignore[arg-type]
    assert ttl == cache._ttl(header)


async def test_a_new_jwks_uri_drops_the_keys_cached_from_the_old_one(
    aiohttp_server: AiohttpServer,
) -> None:
    """A reload that moves a client to another jwks_uri: the keys cached from the old one
    are not served for it any more (a client dropping a compromised key set)."""
    old, new = JwksServer(), JwksServer()
    new.keys = [ECKey.generate_key("P-256").as_dict(private=False, kid="moved")]
    old_server, new_server = await aiohttp_server(old.app()), await aiohttp_server(new.app())
    before = registry_of(client(jwks_uri=str(old_server.make_url("/jwks")))).get("c1")
    after = registry_of(client(jwks_uri=str(new_server.make_url("/jwks")))).get("c1")
    assert before is not None
    assert after is not None
    async with aiohttp.ClientSession() as session:
        cache = JwksCache(session)
        assert ["first"] == [k.kid for k in await cache.keys_for(before)]
        assert ["moved"] == [k.kid for k in await cache.keys_for(after)]
        assert (1, 1) == (old.fetches, new.fetches)
