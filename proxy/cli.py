"""The ``jargate`` command: serve, check, keys, request-object, demo."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import multiprocessing
import os
import signal
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from aiohttp import web
from joserfc.jwk import Key, import_key

from . import __version__, appkeys
from .algorithms import RSA_SIZES
from .app import create_app
from .clients import ClientRegistry, RegistryError, load_registry
from .demo.run import run_demo
from .errors import StoreUnavailable
from .inspection import KIND_NAMES, InspectionError, inspect_jwt, read_client_keys
from .keyring import (
    GatewayKey,
    Keyring,
    KeyringError,
    generate_private_jwks,
    read_private_jwks,
)
from .loading import check_keys_cover_clients, load_keyring, registry_warnings
from .metadata import discovery_advice, issuer_problem, upstream_discovery
from .observability import Metrics, lighten_log_records, metrics_app, setup_logging
from .request.make import make_request_object, par_form
from .serving import gateway_runner
from .settings import Settings, SettingsError, load_settings
from .store import build_store
from .upstream import Upstream

log = logging.getLogger("jargate")


class CommandError(Exception):
    """A command cannot go on; the message is printed as ``jargate: <message>``."""


def _load(env_file: str | None) -> tuple[Settings, ClientRegistry, Keyring]:
    try:
        settings = load_settings(env_file)
        registry = load_registry(settings)
        keyring = load_keyring(settings, registry)
        check_keys_cover_clients(settings, registry, keyring)
    except (SettingsError, RegistryError, KeyringError) as exc:
        raise CommandError(str(exc)) from None
    return settings, registry, keyring


def cmd_serve(args: argparse.Namespace) -> int:
    settings, registry, keyring = _load(args.env_file)
    setup_logging(settings.log_level, settings.log_format)
    lighten_log_records()
    if keyring.ephemeral:
        log.warning(
            "JARGATE_KEYS_FILE is not set: using throw-away keys; "
            "JARM responses will not verify after a restart"
        )
    if settings.redis_url is None:
        log.warning("JARGATE_REDIS_URL is not set: in-memory store, one replica only")
    for warning in registry_warnings(settings, registry):
        log.warning(warning)
    if settings.workers == 1:
        _run_worker(settings, registry, keyring)
        return 0
    return _run_workers(settings, registry, keyring)


def _run_worker(settings: Settings, registry: ClientRegistry, keyring: Keyring) -> None:
    metrics = Metrics()
    app = create_app(settings, registry=registry, keyring=keyring, metrics=metrics)
    try:
        with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
            runner.run(_serve(app, settings, metrics))
    except SettingsError as exc:  # what start-up learnt (the token path) that makes it unservable
        raise CommandError(str(exc)) from None
    # Drained and closed: a repeated SIGTERM from now on must not turn a clean exit into a kill.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop where it is installed (Linux and macOS; cheaper socket
    operations); else asyncio's."""
    try:
        import uvloop  # noqa: PLC0415
    except ImportError:
        return None
    return uvloop.new_event_loop


def _worker_process(settings: Settings, registry: ClientRegistry, keyring: Keyring) -> None:
    """One of JARGATE_WORKERS: what stops it at start is one line and exit 2, as for one."""
    try:
        _run_worker(settings, registry, keyring)
    except CommandError as exc:
        print(f"jargate: {exc}", file=sys.stderr)
        sys.exit(2)


def _run_workers(settings: Settings, registry: ClientRegistry, keyring: Keyring) -> int:
    """JARGATE_WORKERS processes sharing the port (SO_REUSEPORT); the kernel spreads the
    connections. SIGTERM and SIGINT are passed on (each worker drains on its own), and
    SIGHUP (each worker reloads on its own)."""
    context = multiprocessing.get_context("fork")
    workers = [
        context.Process(target=_worker_process, args=(settings, registry, keyring), daemon=False)
        for _ in range(settings.workers)
    ]
    for worker in workers:
        worker.start()

    def forward(signum: int, frame: object) -> None:
        for worker in workers:
            if worker.pid is not None and worker.is_alive():
                os.kill(worker.pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGHUP, forward)
    for worker in workers:
        worker.join()
    return max((worker.exitcode or 0) for worker in workers)


async def _serve(app: web.Application, settings: Settings, metrics: Metrics) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    reloads: set[asyncio.Task[bool]] = set()

    def reload() -> None:
        # Kept referenced until done: the loop holds tasks only weakly.
        task = loop.create_task(app[appkeys.RELOADER].reload("SIGHUP"))
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, reload)
    runner = gateway_runner(app, settings, shutdown_timeout=settings.shutdown_timeout_seconds)
    await runner.setup()
    runners = [runner]
    try:
        site = web.TCPSite(
            runner, settings.host, settings.port, reuse_port=settings.workers > 1 or None
        )
        await site.start()
        log.info("listening", extra={"url": f"http://{settings.host}:{settings.port}"})
        if settings.metrics_port:
            metrics_runner = gateway_runner(metrics_app(metrics), settings)
            await metrics_runner.setup()
            runners.append(metrics_runner)
            # With several workers each serves its own counters (docs/operations.md).
            await web.TCPSite(
                metrics_runner,
                settings.host,
                settings.metrics_port,
                reuse_port=settings.workers > 1 or None,
            ).start()
        async with Upstream.create_session(settings) as session:
            why = await Upstream(session, settings).why_unreachable()
            if why is not None:
                log.warning(
                    "the upstream does not answer", extra={"url": settings.upstream_url, "why": why}
                )
            document = await upstream_discovery(session, settings)
        problem = issuer_problem(settings, document)
        if problem is not None:
            log.error(problem)
        for advice in discovery_advice(settings, document):
            log.warning(advice)
        log.debug("start-up objects frozen", extra={"objects": freeze_startup_objects()})
        await stop.wait()
        log.info(
            "draining in-flight requests",
            extra={"bound_seconds": settings.shutdown_timeout_seconds},
        )
    finally:
        for each in reversed(runners):
            await each.cleanup()
        log.info("stopped")


def freeze_startup_objects() -> int:
    """Keep what start-up built (modules, settings, keys, the app) out of the garbage
    collector's sight: a full collection then walks only what requests left behind, not
    every start-up object too (a pause for every request in flight)."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def cmd_check(args: argparse.Namespace) -> int:
    settings, registry, keyring = _load(args.env_file)
    print(f"jargate {__version__}: configuration is valid")
    print(f"  issuer:    {settings.issuer}")
    print(f"  upstream:  {settings.upstream_url}")
    print(f"  store:     {settings.redis_url_for_display()}")
    print(f"  mode:      {settings.enforcement}")
    print(f"  clients:   {len(registry)}")
    for client in registry:
        meta = client.meta
        keys = "jwks" if meta.jwks is not None else ("jwks_uri" if meta.jwks_uri else "no keys")
        flags = [
            name
            for name in ("require_signed_request_object", "require_pushed_authorization_requests")
            if getattr(meta, name)
        ]
        profile = meta.profile or settings.profile
        if profile != "oauth2":
            flags.append(f"profile {profile}")
        if meta.upstream_token_endpoint_auth_method is not None:
            flags.append(f"upstream token auth {meta.upstream_token_endpoint_auth_method}")
        print(
            f"    - {meta.client_id}: {keys}; {len(meta.redirect_uris)} redirect URI(s)"
            + (f"; {', '.join(flags)}" if flags else "")
        )
    kind = "throw-away (JARGATE_KEYS_FILE unset)" if keyring.ephemeral else "from JARGATE_KEYS_FILE"
    print(f"  keys:      {len(keyring.keys)} {kind}")
    for key in keyring.keys:
        print(f"    - kid={key.kid} alg={key.alg} use={key.use}")
    for warning in registry_warnings(settings, registry):
        print(f"jargate: warning: {warning}", file=sys.stderr)
    if args.offline:
        return 0
    problems = asyncio.run(_probe(settings))
    for problem in problems:
        print(f"jargate: {problem}", file=sys.stderr)
    if not problems:
        print("  reachable: store and upstream answer")
    return 1 if problems else 0


async def _probe(settings: Settings) -> list[str]:
    problems: list[str] = []
    store = build_store(settings.redis_url.get_secret_value() if settings.redis_url else None)
    try:
        await store.ping()
    except StoreUnavailable:
        problems.append(f"store {settings.redis_url_for_display()} does not answer")
    finally:
        await store.close()
    async with Upstream.create_session(settings) as session:
        why = await Upstream(session, settings).why_unreachable()
        if why is not None:
            problems.append(f"upstream {settings.upstream_url} does not answer: {why}")
        else:
            document = await upstream_discovery(session, settings)
            problem = issuer_problem(settings, document)
            if problem is not None:
                problems.append(problem)
            for advice in discovery_advice(settings, document):
                print(f"jargate: warning: {advice}", file=sys.stderr)
    return problems


def cmd_keys_generate(args: argparse.Namespace) -> int:
    try:
        document = generate_private_jwks(args.alg, args.use, args.kid, args.size)
    except KeyringError as exc:
        raise CommandError(str(exc)) from None
    print(json.dumps(document, indent=2))
    return 0


def _private_keys(path: str) -> list[GatewayKey]:
    try:
        return read_private_jwks(Path(path), path)
    except KeyringError as exc:
        raise CommandError(str(exc)) from None


def cmd_keys_public(args: argparse.Namespace) -> int:
    keys = _private_keys(args.file)
    print(json.dumps({"keys": [key.public_jwk() for key in keys]}, indent=2))
    return 0


def _first_key(path: str, use: str) -> GatewayKey:
    for key in _private_keys(path):
        if key.use == use:
            return key
    raise CommandError(f"{path}: no key with use {use!r}")


def _encryption_key(source: str) -> Key:
    """The first ``enc`` key of a public JWKS given as a file or an https URL."""
    if source.startswith(("https://", "http://")):
        with urllib.request.urlopen(source, timeout=10) as response:  # noqa: S310 - operator's URL
            document: Any = json.loads(response.read(256 * 1024))
    else:
        try:
            document = json.loads(Path(source).read_text())
        except (OSError, ValueError) as exc:
            raise CommandError(f"--encrypt-to {source}: {exc}") from None
    for item in document.get("keys", []) if isinstance(document, dict) else []:
        if isinstance(item, dict) and item.get("use") == "enc":
            return import_key({k: v for k, v in item.items() if k != "d"})
    raise CommandError(f"--encrypt-to {source}: no key with use 'enc'")


def _post_form(url: str, form: dict[str, str]) -> dict[str, Any]:
    """POST a form and return the JSON answer; a refusal is a CommandError with its body."""
    request = urllib.request.Request(  # noqa: S310 - the operator's own gateway URL
        url,
        data=urlencode(form).encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            answer: dict[str, Any] = json.loads(response.read())
            return answer
    except urllib.error.HTTPError as exc:
        raise CommandError(
            f"{url} answered {exc.code}: {exc.read().decode(errors='replace')}"
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        raise CommandError(f"{url}: {exc}") from None


def cmd_request_object(args: argparse.Namespace) -> int:
    issuer = args.issuer or os.environ.get("JARGATE_ISSUER")
    if not issuer:
        raise CommandError("--issuer (or JARGATE_ISSUER) is required: it is the object's aud")
    params: dict[str, str] = {}
    for item in args.param:
        name, separator, value = item.partition("=")
        if not separator or not name:
            raise CommandError(f"--param {item!r}: expected name=value")
        params[name] = value
    signing_key = _first_key(args.key, "sig")
    built = make_request_object(
        signing_key,
        args.client_id,
        issuer,
        params,
        encrypt_to=_encryption_key(args.encrypt_to) if args.encrypt_to else None,
    )
    path = os.environ.get("JARGATE_AUTHORIZATION_PATH", "/authorize")
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(issuer))
    query = {"client_id": args.client_id, "request": built.jwt}
    if args.par:
        par_url = origin + os.environ.get("JARGATE_PAR_PATH", "/par")
        form = par_form(built, signing_key, args.client_id, issuer)
        pushed = _post_form(par_url, form)
        print(f"pushed to {par_url}: {json.dumps(pushed)}\n")
        query = {"client_id": args.client_id, "request_uri": pushed["request_uri"]}
    url = f"{origin}{path}?" + urlencode(query)
    print(f"request object:\n{built.jwt}\n")
    print("claims:\n" + json.dumps(built.claims, indent=2) + "\n")
    print(f"code_verifier (keep it for the token request):\n{built.code_verifier}\n")
    print(f"authorization URL:\n{url}")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    settings, registry, keyring = _load(args.env_file)
    token = sys.stdin.read() if args.jwt == "-" else args.jwt
    if not token.strip():
        raise CommandError("no JWT to inspect (an empty argument or standard input)")
    try:
        client_keys = read_client_keys(args.key) if args.key else None
        found = asyncio.run(
            inspect_jwt(
                token,
                settings,
                registry,
                keyring,
                client_id=args.client_id,
                kind=args.kind,
                client_keys=client_keys,
            )
        )
    except InspectionError as exc:
        raise CommandError(str(exc)) from None
    client = f" of client {found.client_id!r}" if found.client_id else ""
    print(f"{KIND_NAMES[found.kind]}{client}" + (" (encrypted)" if found.encrypted else ""))
    if found.header:
        print(f"  header: {json.dumps(found.header)}")
    if found.claims:
        print(f"  claims: {json.dumps(found.claims)}")
    for finding in found.broken:
        print(f"broken: {finding.line()}")
    for unchecked in found.unchecked:
        print(f"not checked: {unchecked}")
    for note in found.notes:
        print(f"note: {note}")
    if found.accepted:
        print(f"accepted: the {KIND_NAMES[found.kind]} breaks no rule checked offline")
        return 0
    print(f"refused: {len(found.broken)} rule(s) broken")
    return 1


def cmd_demo(args: argparse.Namespace) -> int:
    setup_logging("warning", "text")
    return asyncio.run(run_demo(serve=args.serve))


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="jargate",
        description="JAR, PAR and JARM in front of a legacy OAuth 2.0 / OpenID Connect server.",
    )
    parser.add_argument("--version", action="version", version=f"jargate {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument("--env-file", help="read settings from this .env file too")
    serve.set_defaults(run=cmd_serve)

    check = commands.add_parser("check", help="validate settings, clients and keys")
    check.add_argument("--env-file", help="read settings from this .env file too")
    check.add_argument(
        "--offline", action="store_true", help="do not contact the store or the upstream"
    )
    check.set_defaults(run=cmd_check)

    keys = commands.add_parser("keys", help="generate keys, or print a key set's public half")
    key_commands = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    generate = key_commands.add_parser("generate", help="print a private JWKS with one new key")
    generate.add_argument(
        "--alg",
        required=True,
        action="append",
        help="ES256, PS256, RSA-OAEP-256, ... (repeat for one key of each)",
    )
    generate.add_argument(
        "--size", type=int, choices=RSA_SIZES, default=2048, help="bits of RSA keys"
    )
    generate.add_argument("--use", choices=["sig", "enc"], help="defaults to the alg's use")
    generate.add_argument("--kid", help="defaults to the RFC 7638 thumbprint")
    generate.set_defaults(run=cmd_keys_generate)
    public = key_commands.add_parser("public", help="print the public half of a private JWKS")
    public.add_argument("file")
    public.set_defaults(run=cmd_keys_public)

    request_object = commands.add_parser(
        "request-object", help="build a signed request object, as a client would"
    )
    request_object.add_argument("--key", required=True, help="the client's private JWKS file")
    request_object.add_argument("--client-id", required=True)
    request_object.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an authorization parameter (repeatable): redirect_uri=..., scope=...",
    )
    request_object.add_argument(
        "--encrypt-to", metavar="JWKS_URL_OR_FILE", help="encrypt to the gateway's enc key"
    )
    request_object.add_argument("--issuer", help="the gateway's issuer (default JARGATE_ISSUER)")
    request_object.add_argument(
        "--par",
        action="store_true",
        help="push it to the PAR endpoint (private_key_jwt with the same key) and print the "
        "authorization URL with the request_uri",
    )
    request_object.set_defaults(run=cmd_request_object)

    inspect = commands.add_parser(
        "inspect",
        help="check a request object, client assertion or JARM response offline",
        description="Hold a JWT to every rule it would meet, offline: a request object or a "
        "client assertion as the gateway verifies it, a JARM response as its client does. "
        "Exit 0 when it would be accepted, 1 when not, 2 on a configuration error.",
    )
    inspect.add_argument("jwt", metavar="JWT", help="the compact JWT; - reads standard input")
    inspect.add_argument("--env-file", help="read settings from this .env file too")
    inspect.add_argument("--client-id", help="the client it is from or for (default: its claims)")
    inspect.add_argument(
        "--kind",
        choices=list(KIND_NAMES),
        help="what the JWT is (default: guessed from its shape and claims)",
    )
    inspect.add_argument(
        "--key",
        metavar="FILE",
        help="the client's private JWK or JWKS, to decrypt an encrypted JARM response",
    )
    inspect.set_defaults(run=cmd_inspect)

    demo = commands.add_parser("demo", help="run the bundled end-to-end demo")
    demo.add_argument("--serve", action="store_true", help="keep the demo servers running")
    demo.set_defaults(run=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``jargate`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except CommandError as exc:
        print(f"jargate: {exc}", file=sys.stderr)
        return 2
