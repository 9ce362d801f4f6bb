"""`make bench`: jargate against the pass-through baseline and the floor, in one run.

Starts Redis, a minimal upstream (bench/upstream.py), the baseline (bench/baseline.py, a
naive aiohttp pass-through proxy), the floor (bench/floor.py, the baseline plus only the
work the RFCs make unavoidable) and jargate, each in its own process on loopback, and
drives load from another process (bench/load.py) over pre-generated, unique request
objects; then counts instructions per request under callgrind (bench/instructions.py).
Every phase is bounded in time and count. Prints a table and writes bench/RESULTS.md.
Figures are ratios against the baseline measured in the same run.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from statistics import median
from typing import Any
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import instructions  # noqa: E402
import token_phase  # noqa: E402
from joserfc import jws  # noqa: E402
from joserfc.jwk import ECKey, OKPKey, RSAKey, import_key  # noqa: E402
from load import quantile  # noqa: E402

from proxy.keyring import generate_private_jwks  # noqa: E402
from proxy.store import hashed_key  # noqa: E402
from tests.support import RedisServer, free_port  # noqa: E402

#: A load phase's length: a scenario without a target (one round), a half-load trial, the
#: workers' runs.
SECONDS = float(os.environ.get("BENCH_SECONDS", "3"))
#: A scenario with a target runs this many alternating baseline/floor/jargate rounds of
#: ROUND_SECONDS each; each round's ratios are taken while the machine ran at one speed
#: for all, and the median of the rounds' ratios counts.
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
#: The phases after the table (against native oidc-provider, the token exchange) run this
#: many alternating rounds of ROUND_SECONDS.
PHASE_ROUNDS = 3
ROUND_SECONDS = 2.0
#: (a) and (f), whose ratio sits near 1, are the most sensitive to this shared machine's
#: drift: more and shorter rounds.
CHEAP_ROUNDS, CHEAP_SECONDS = 7, 1.5
CHEAP = ("a", "f")
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "32"))
OBJECTS = int(os.environ.get("BENCH_OBJECTS", "20000"))
#: Only these scenario keys (e.g. "a,b"); the half-load, workers and profile phases run
#: only when the whole table does.
ONLY = {key for key in os.environ.get("BENCH_ONLY", "").split(",") if key}
#: Only these phases of bench/token_phase.py ("token", "reload"), without the table and
#: the other phases; unset, both run after the half-load phase of a whole run.
PHASES = {key for key in os.environ.get("BENCH_PHASES", "").split(",") if key}
#: Count instructions per request under callgrind (bench/instructions.py) at the end.
INSTRUCTIONS = os.environ.get("BENCH_INSTRUCTIONS", "1") != "0"
INSTRUCTION_REQUESTS = 400
#: Only the comparison with native oidc-provider (bench/native.py), not the main table.
NATIVE_ONLY = os.environ.get("BENCH_NATIVE_ONLY") == "1"
#: Alternating half-load trials for (a); the p99 over their requests pooled counts.
HALF_TRIALS = 5
#: Open-loop requests sent before the counting starts (connections opened, steady state).
HALF_WARMUP = 0.5
#: Scenarios also measured through the floor (bench/floor.py).
FLOORED = ("b", "c", "d")
#: jargate's throughput against the floor's, and its instructions a request against the
#: floor's, for (b) RS256 and ES256 and (c) ES256.
FLOOR_THROUGHPUT_TARGET, FLOOR_INSTRUCTIONS_TARGET = 0.85, 1.25
REDIRECT = "https://rp.example/cb"
TICKS = os.sysconf("SC_CLK_TCK")
CORES = os.cpu_count() or 1
TMP = Path(tempfile.mkdtemp(prefix="jargate-bench-"))


def wait_port(port: int, within: float = 20) -> None:
    deadline = time.monotonic() + within
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def ratio(part: float, whole: float) -> float | None:
    """``part / whole``; None when ``whole`` is 0 (a phase that measured nothing)."""
    return part / whole if whole else None


def shown(value: float | None, spec: str = ".2f") -> str:
    """``value`` formatted, or "n/a" for one that could not be measured."""
    return "n/a" if value is None else format(value, spec)


def largest(*values: float | None) -> float | None:
    """The largest of the values measured; None when none was."""
    measured = [value for value in values if value is not None]
    return max(measured) if measured else None


class Processes:
    """Every process the run starts, stopped at the end whatever happens."""

    def __init__(self) -> None:
        self.running: list[subprocess.Popen[bytes]] = []

    def start(
        self, args: list[str], port: int, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.running.append(process)
        wait_port(port)
        return process

    def stop(self, process: subprocess.Popen[bytes], signum: int = signal.SIGTERM) -> None:
        if process.poll() is None:
            process.send_signal(signum)
            process.wait(timeout=60)

    def stop_all(self) -> None:
        for process in reversed(self.running):
            if process.poll() is None:
                process.kill()
                process.wait()


# ------------------------------------------------------------------ keys and objects

KEYS: dict[str, Any] = {
    "rsa": RSAKey.generate_key(2048, parameters={"kid": "bench-rsa"}),
    "p256": ECKey.generate_key("P-256", parameters={"kid": "bench-p256"}),
    "ed25519": OKPKey.generate_key("Ed25519", parameters={"kid": "bench-ed25519"}),
}
KEY_FOR = {"RS256": "rsa", "PS256": "rsa", "ES256": "p256", "EdDSA": "ed25519"}


def sign_objects(args: tuple[str, str, str, int, dict[str, Any], str]) -> list[str]:
    """``count`` unique request objects (runs in a worker process)."""
    alg, jwk_json, client_id, count, extra, issuer = args
    key = import_key(json.loads(jwk_json))
    tokens = []
    for index in range(count):
        now = int(time.time())
        claims = {
            "iss": client_id,
            "aud": issuer,
            "client_id": client_id,
            "response_type": "code",
            "redirect_uri": REDIRECT,
            "scope": "openid",
            "state": f"s{index}",
            "nonce": f"n{index}",
            "iat": now,
            "nbf": now,
            "exp": now + 600,
            "jti": secrets.token_urlsafe(18),
            **extra,
        }
        header = {"alg": alg, "kid": key.kid, "typ": "oauth-authz-req+jwt"}
        tokens.append(jws.serialize_compact(header, json.dumps(claims), key, algorithms=[alg]))
    return tokens


def objects(
    pool: ProcessPoolExecutor,
    alg: str,
    client_id: str,
    issuer: str,
    extra: dict[str, Any] | None = None,
    count: int = OBJECTS,
) -> list[str]:
    jwk = json.dumps(KEYS[KEY_FOR[alg]].as_dict(private=True))
    half = (count + 1) // 2
    jobs = [(alg, jwk, client_id, half, extra or {}, issuer) for _ in range(2)]
    return [token for chunk in pool.map(sign_objects, jobs) for token in chunk]


def fresh_objects(alg: str, issuer: str) -> list[str]:
    """Request objects for a later phase, signed when it starts: those signed at the start
    of the run may have expired (exp is 10 minutes after iat) and would measure refusals."""
    with ProcessPoolExecutor(2) as pool:
        return objects(pool, alg, "bench", issuer)


def registry() -> dict[str, Any]:
    jwks = {"keys": [key.as_dict(private=False) for key in KEYS.values()]}
    base = {"jwks": jwks, "redirect_uris": [REDIRECT]}
    return {
        "clients": [
            {
                "client_id": "bench",
                **base,
                "authorization_signed_response_alg": "ES256",
                "request_uris": ["https://rp.example/ro/"],
            },
            {"client_id": "bench-rs", **base, "authorization_signed_response_alg": "RS256"},
            {
                "client_id": "bench-par",
                "redirect_uris": [REDIRECT],
                "client_secret": "bench-secret",
                "token_endpoint_auth_method": "client_secret_basic",
                "authorization_signed_response_alg": "ES256",
            },
            {"client_id": "bench-plain", "redirect_uris": [REDIRECT]},
            *token_phase.clients(REDIRECT),
        ]
    }


# ------------------------------------------------------------------ scenarios


def write(items: list[dict[str, Any]], name: str) -> Path:
    path = TMP / f"{name}.jsonl"
    path.write_text("".join(json.dumps(item) + "\n" for item in items))
    return path


def jar_items(
    client_id: str, tokens: list[str]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(for jargate, for the baseline): the same exchange count; the baseline's upstream
    needs redirect_uri and state to redirect, so they ride along."""
    gateway = [
        {"path": "/authorize?" + urlencode({"client_id": client_id, "request": t})} for t in tokens
    ]
    baseline = [
        {
            "path": "/authorize?"
            + urlencode(
                {"client_id": client_id, "request": t, "redirect_uri": REDIRECT, "state": "s"}
            )
        }
        for t in tokens
    ]
    return gateway, baseline


def plain_items(client_id: str, count: int) -> list[dict[str, Any]]:
    return [
        {
            "path": "/authorize?"
            + urlencode(
                {
                    "client_id": client_id,
                    "response_type": "code",
                    "redirect_uri": REDIRECT,
                    "state": f"s{i}",
                }
            )
        }
        for i in range(count)
    ]


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of ``pid`` and its children so far."""
    total = 0.0
    for candidate in [pid, *_children(pid)]:
        fields = Path(f"/proc/{candidate}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / TICKS
    return total


def load(
    base: str,
    requests: Path,
    rate: float = 0,
    seconds: float = SECONDS,
    watch: dict[str, int] | None = None,
    warmup: float = 0,
    keep: bool = False,
) -> dict[str, Any]:
    """Play ``requests`` against ``base``. With ``watch`` (name -> pid), also the CPU time
    each of those processes spent per completed request, in µs (``cpu_us``); with ``keep``,
    every latency (``latencies_ms``)."""
    before = {name: cpu_seconds(pid) for name, pid in (watch or {}).items()}
    args = [
        sys.executable,
        str(ROOT / "bench" / "load.py"),
        "--base",
        base,
        "--requests",
        str(requests),
        "--connections",
        str(CONNECTIONS),
        "--seconds",
        str(seconds),
        "--rate",
        str(rate),
        "--warmup",
        str(warmup),
    ]
    kept = requests.with_suffix(".latencies.json")
    if keep:
        args += ["--latencies", str(kept)]
    result = subprocess.run(
        args, capture_output=True, text=True, check=True, timeout=seconds + warmup + 120
    )
    measured = dict(json.loads(result.stdout.strip().splitlines()[-1]))
    completed = max(1, measured["completed"])
    measured["cpu_us"] = {
        name: round((cpu_seconds(pid) - before[name]) * 1e6 / completed)
        for name, pid in (watch or {}).items()
    }
    measured["cpu_us"]["generator"] = round(measured.pop("cpu_s") * 1e6 / completed)
    if keep:
        measured["latencies_ms"] = json.loads(kept.read_text())
    return measured


def floor_command(
    port: int, upstream_port: int, redis_port: int, issuer: str, public_file: Path
) -> list[str]:
    """bench/floor.py on ``port``, its jti claims and pushed requests in Redis database 1."""
    return [
        sys.executable,
        "bench/floor.py",
        "--port",
        str(port),
        "--upstream",
        f"http://127.0.0.1:{upstream_port}",
        "--jwks",
        str(public_file),
        "--redis",
        f"redis://127.0.0.1:{redis_port}/1",
        "--issuer",
        issuer,
        "--par-client",
        "bench-par:bench-secret",
    ]


def count_instructions(
    gateway_env: dict[str, str],
    gateway_port: int,
    upstream_port: int,
    redis_port: int,
    issuer: str,
    public_file: Path,
    token_case: tuple[str, dict[str, list[dict[str, Any]]]] | None = None,
) -> list[dict[str, Any]]:
    """Instructions per request (bench/instructions.py) for (a), (f), (b) RS256 and ES256
    and (c) ES256, the floor beside jargate for the last three, and ``token_case``'s token
    exchange (bench/token_phase.py ``instruction_case``: jargate's codes obtained earlier).
    The request objects are signed here, just before they are played: signed at the start
    of the run, they would have expired by now, and a refusal costs less than the work
    measured."""
    if not INSTRUCTIONS or not instructions.available():
        return []
    upstream = f"http://127.0.0.1:{upstream_port}"
    count, warm = INSTRUCTION_REQUESTS, 150
    plain = [item["path"] for item in plain_items("someone", count + warm)]
    with ProcessPoolExecutor(2) as pool:
        signed = [
            (
                "b",
                "JAR by value, RS256",
                objects(pool, "RS256", "bench", issuer, None, count + warm),
            ),
            (
                "b",
                "JAR by value, ES256",
                objects(pool, "ES256", "bench", issuer, None, count + warm),
            ),
            (
                "c",
                "JAR + JARM, ES256",
                objects(pool, "ES256", "bench", issuer, {"response_mode": "jwt"}, count + warm),
            ),
        ]
    Requests = list[instructions.Request]
    # (key, title, jargate's requests, the baseline's, the floor's: None for none)
    cases: list[tuple[str, str, Requests, Requests, Requests | None]] = [
        ("a", "pass-through of a non-OAuth page", ["/page"] * (count + warm), [], None),
        ("f", "plain request, unregistered client", plain, [], None),
    ]
    for key, title, tokens in signed:
        gateway_jar, baseline_jar = jar_items("bench", tokens)
        given: Requests = [item["path"] for item in baseline_jar]
        cases.append((key, title, [item["path"] for item in gateway_jar], given, given))
    if token_case is not None:
        title, items = token_case
        cases.append(("t", title, [*items["jargate"]], [*items["baseline"]], [*items["floor"]]))
    port = free_port()

    def measure(args: list[str], port: int, lists: list[Requests], env: Any = None) -> list[float]:
        return instructions.per_request(
            args, port, env, [(paths[:warm], paths[warm:]) for paths in lists], wait_port, ROOT
        )

    baseline = measure(
        [sys.executable, "bench/baseline.py", "--port", str(port), "--upstream", upstream],
        port,
        [given or ours for _, _, ours, given, _ in cases],
    )
    port = free_port()
    floored = [floors for _, _, _, _, floors in cases if floors is not None]
    floor = iter(
        measure(floor_command(port, upstream_port, redis_port, issuer, public_file), port, floored)
    )
    ours_counts = measure(
        [sys.executable, "-m", "proxy", "serve"],
        gateway_port,
        [ours for _, _, ours, _, _ in cases],
        gateway_env,
    )
    rows = []
    for (key, title, _, _, floors), theirs, jargate in zip(
        cases, baseline, ours_counts, strict=True
    ):
        row: dict[str, Any] = {"key": key, "title": title, "baseline": theirs}
        if floors is not None:
            row["floor"] = next(floor)
        row["jargate"] = jargate
        print(f"instructions per request ({key}): {row}", flush=True)
        rows.append(row)
    return rows


def combine(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Several rounds of one scenario as one: throughput over the summed time, the median
    round's p50 and the worst round's p99, CPU per request weighted by requests."""
    completed = sum(r["completed"] for r in results)
    seconds = sum(r["seconds"] for r in results)
    p50s = sorted(r["p50_ms"] for r in results)
    return {
        "completed": completed,
        "errors": sum(r["errors"] for r in results),
        "seconds": round(seconds, 2),
        "rps": round(completed / seconds, 1) if seconds else 0.0,
        "p50_ms": p50s[len(p50s) // 2],
        "p99_ms": max(r["p99_ms"] for r in results),
        "cpu_us": {
            name: round(
                sum(r["cpu_us"][name] * r["completed"] for r in results) / max(1, completed)
            )
            for name in results[0]["cpu_us"]
        },
    }


def rss_peak_mb(pid: int) -> float:
    total = 0
    for candidate in [pid, *_children(pid)]:
        for line in Path(f"/proc/{candidate}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                total += int(line.split()[1])
    return round(total / 1024, 1)


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(child) for child in path.read_text().split()] if path.exists() else []


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    memory = next(
        line.split(":", 1)[1].strip()
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal")
    )
    return (
        f"{os.cpu_count()} cores ({cpu}), {memory} memory, Linux {platform.release()}, "
        f"Python {platform.python_version()}; load generator, Redis, upstream, baseline and "
        f"jargate all share these cores"
    )


def main() -> int:
    started = time.monotonic()
    if NATIVE_ONLY:
        return native.alone()
    processes = Processes()
    upstream_port, baseline_port, gateway_port, redis_port, floor_port = (
        free_port() for _ in range(5)
    )
    issuer = f"http://127.0.0.1:{gateway_port}"
    keys_file, clients_file = TMP / "keys.json", TMP / "clients.json"
    keys_file.write_text(json.dumps(generate_private_jwks(["ES256", "RS256"])))
    clients_file.write_text(json.dumps(registry()))
    public_file = TMP / "public.json"
    public_file.write_text(
        json.dumps({"keys": [key.as_dict(private=False) for key in KEYS.values()]})
    )
    gateway_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("JARGATE_")},
        "JARGATE_UPSTREAM_URL": f"http://127.0.0.1:{upstream_port}",
        "JARGATE_ISSUER": issuer,
        "JARGATE_HOST": "127.0.0.1",
        "JARGATE_PORT": str(gateway_port),
        "JARGATE_METRICS_PORT": "0",
        "JARGATE_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "JARGATE_KEYS_FILE": str(keys_file),
        "JARGATE_CLIENTS_FILE": str(clients_file),
    }
    gateway_url, baseline_url = issuer, f"http://127.0.0.1:{baseline_port}"
    floor_url = f"http://127.0.0.1:{floor_port}"
    rows: list[dict[str, Any]] = []
    redis_server = RedisServer(port=redis_port).start()
    try:
        upstream = processes.start(
            [sys.executable, "bench/upstream.py", "--port", str(upstream_port)], upstream_port
        )
        baseline_process = processes.start(
            [
                sys.executable,
                "bench/baseline.py",
                "--port",
                str(baseline_port),
                "--upstream",
                f"http://127.0.0.1:{upstream_port}",
            ],
            baseline_port,
        )
        floor_process = processes.start(
            floor_command(floor_port, upstream_port, redis_port, issuer, public_file), floor_port
        )
        gateway = processes.start(
            [sys.executable, "-m", "proxy", "serve"], gateway_port, gateway_env
        )

        with ProcessPoolExecutor(2) as pool:
            reload_objects = objects(
                pool, "ES256", "bench", issuer, count=token_phase.RELOAD_ITEMS // 3
            )
        assert redis_server.process is not None
        rig = token_phase.Rig(
            load,
            write,
            {"baseline": baseline_url, "floor": floor_url, "jargate": gateway_url},
            {"baseline": baseline_process.pid, "floor": floor_process.pid, "jargate": gateway.pid},
            {"upstream": upstream.pid, "redis": redis_server.process.pid},
            REDIRECT,
        )

        def run_phases(which: set[str]) -> list[str]:
            """bench/token_phase.py's phases named in ``which``; their report sections."""
            exchange = reload = None
            if "token" in which:
                print(f"[{time.monotonic() - started:.0f} s] token exchange ...", flush=True)
                exchange = token_phase.token_exchange(rig, PHASE_ROUNDS, ROUND_SECONDS)
                print(f"token exchange: {exchange['jargate']}", flush=True)
            if "reload" in which:
                print(f"[{time.monotonic() - started:.0f} s] reload under load ...", flush=True)
                reload = token_phase.reload_under_load(
                    rig,
                    processes.start,
                    processes.stop,
                    gateway_env,
                    registry(),
                    reload_objects,
                    (free_port(), free_port()),
                    TMP,
                )
                print(f"reload under load: {reload}", flush=True)
            return token_phase.report_lines(exchange, reload)

        if PHASES:
            for url in (baseline_url, floor_url, gateway_url):
                load(url, write([{"path": "/page"}] * 20_000, "warm-phases"), seconds=1)
            lines = run_phases(PHASES)
            print("\n".join(lines), flush=True)
            if "BENCH_RESULTS" in os.environ:
                Path(os.environ["BENCH_RESULTS"]).write_text("\n".join(lines))
            return 0
        print(f"generating {OBJECTS} unique request objects per scenario ...", flush=True)
        with ProcessPoolExecutor(2) as pool:
            signed = {
                alg: objects(pool, alg, "bench", issuer)
                for alg in ("RS256", "PS256", "ES256", "EdDSA")
            }
            jarm_es = objects(pool, "ES256", "bench", issuer, {"response_mode": "jwt"})
            jarm_rs = objects(pool, "ES256", "bench-rs", issuer, {"response_mode": "jwt"})
            by_reference = objects(pool, "ES256", "bench", issuer)
            half_objects = objects(pool, "ES256", "bench", issuer)
            warm_objects = objects(pool, "ES256", "bench", issuer)

        import redis

        cache = redis.Redis(port=redis_port)
        reference_gateway, reference_baseline = [], []
        for index, token in enumerate(by_reference):
            uri = f"https://rp.example/ro/{index}"
            cache.set(
                "jargate:" + hashed_key("ruri", "bench", uri), token, ex=900
            )  # the cache warm
            reference_gateway.append(
                {"path": "/authorize?" + urlencode({"client_id": "bench", "request_uri": uri})}
            )
            reference_baseline.append(
                {
                    "path": "/authorize?"
                    + urlencode(
                        {
                            "client_id": "bench",
                            "request_uri": uri,
                            "redirect_uri": REDIRECT,
                            "state": "s",
                        }
                    )
                }
            )
        basic = "Basic " + __import__("base64").b64encode(b"bench-par:bench-secret").decode()
        par_form = {
            "response_type": "code",
            "redirect_uri": REDIRECT,
            "scope": "openid",
            "response_mode": "jwt",
        }
        par_gateway = [
            {
                "par": True,
                "path": "/par",
                "form": {**par_form, "state": f"s{i}"},
                "headers": {"Authorization": basic},
                "then": "/authorize?client_id=bench-par&request_uri={request_uri}",
            }
            for i in range(OBJECTS)
        ]
        par_baseline = [
            {
                "par": True,
                "path": "/par",
                "form": {**par_form, "state": f"s{i}"},
                "headers": {"Authorization": basic},
                "then": "/authorize?client_id=bench-par&request_uri={request_uri}&redirect_uri="
                + REDIRECT
                + "&state=s",
            }
            for i in range(OBJECTS)
        ]

        # (key, title, jargate's items, the baseline's, the target against the baseline,
        # the target against the floor); 0: none.
        scenarios: list[
            tuple[str, str, list[dict[str, Any]], list[dict[str, Any]], float, float]
        ] = [
            (
                "a",
                "pass-through of a non-OAuth page",
                [{"path": "/page"}] * 200_000,
                [{"path": "/page"}] * 200_000,
                0.95,
                0,
            ),
        ]
        for alg in ("RS256", "PS256", "ES256", "EdDSA"):
            gw, bl = jar_items("bench", signed[alg])
            scenarios.append(
                (
                    "b",
                    f"JAR by value, {alg}, unique jti (Redis)",
                    gw,
                    bl,
                    0,
                    FLOOR_THROUGHPUT_TARGET if alg in ("RS256", "ES256") else 0,
                )
            )
        for label, tokens, client in (("ES256", jarm_es, "bench"), ("RS256", jarm_rs, "bench-rs")):
            gw, bl = jar_items(client, tokens)
            scenarios.append(
                (
                    "c",
                    f"JAR + JARM round trip, JARM {label}",
                    gw,
                    bl,
                    0,
                    FLOOR_THROUGHPUT_TARGET if label == "ES256" else 0,
                )
            )
        scenarios.append(
            ("d", "PAR push then authorization (JARM ES256)", par_gateway, par_baseline, 0, 0)
        )
        scenarios.append(
            (
                "e",
                "request_uri by reference, cache warm",
                reference_gateway,
                reference_baseline,
                0,
                0,
            )
        )
        scenarios.append(
            (
                "f",
                "plain request, unregistered client",
                plain_items("someone", 200_000),
                plain_items("someone", 200_000),
                0.95,
                0,
            )
        )
        scenarios.append(
            (
                "f'",
                "plain request, registered client (flow + iss)",
                plain_items("bench-plain", 200_000),
                plain_items("bench-plain", 200_000),
                0,
                0,
            )
        )

        print(f"[{time.monotonic() - started:.0f} s] warming up ...", flush=True)
        # Warm every server up before anything is measured: connections to the upstream,
        # and for the floor and jargate their Redis connections and signature checks
        # (unwarmed, the floor's first scenario read 0.1 below the next, same-cost one).
        warm = write([{"path": "/page"}] * 50_000, "warm-up")
        warm_gateway, warm_floor = jar_items("bench", warm_objects)
        for url in (baseline_url, floor_url, gateway_url):
            load(url, warm, seconds=2)
        load(floor_url, write(warm_floor, "warm-floor"), seconds=2)
        load(gateway_url, write(warm_gateway, "warm-gateway"), seconds=2)

        assert redis_server.process is not None
        shared = {"upstream": upstream.pid, "redis": redis_server.process.pid}
        for key, title, gw_items, bl_items, target, floor_target in scenarios:
            if ONLY and key not in ONLY:
                continue
            name = f"{key}-{len(rows)}"
            floored = key in FLOORED and bool(floor_target or key == "b")
            count, seconds = (
                (CHEAP_ROUNDS, CHEAP_SECONDS)
                if key in CHEAP
                else (ROUNDS, ROUND_SECONDS)
                if target or floor_target
                else (1, SECONDS)
            )
            # Alternate baseline, floor and jargate in every round (disjoint object
            # slices), so that drift in this shared machine's speed falls on all alike.
            # The baseline checks nothing: its slice may repeat, so that it never runs out.
            rounds = []
            for r in range(count):
                one_round = {
                    "baseline": load(
                        baseline_url,
                        write(bl_items[r::count] * 3, f"{name}-{r}-baseline"),
                        seconds=seconds,
                        watch={"proxy": baseline_process.pid, **shared},
                    )
                }
                if floored:
                    one_round["floor"] = load(
                        floor_url,
                        write(bl_items[r::count], f"{name}-{r}-floor"),
                        seconds=seconds,
                        watch={"proxy": floor_process.pid, **shared},
                    )
                one_round["jargate"] = load(
                    gateway_url,
                    write(gw_items[r::count], f"{name}-{r}-gateway"),
                    seconds=seconds,
                    watch={"proxy": gateway.pid, **shared},
                )
                rounds.append(one_round)
            baseline = combine([each["baseline"] for each in rounds])
            measured = combine([each["jargate"] for each in rounds])
            round_ratios = [
                by_round
                for each in rounds
                if (by_round := ratio(each["jargate"]["rps"], each["baseline"]["rps"])) is not None
            ]
            scenario_ratio = round(median(round_ratios), 2) if round_ratios else None
            row: dict[str, Any] = {
                "key": key,
                "title": title,
                "baseline": baseline,
                "jargate": measured,
                "ratio": scenario_ratio,
                "round_ratios": [round(r, 2) for r in round_ratios],
                "target": target,
                "floor_target": floor_target,
            }
            if floored:
                row["floor"] = combine([each["floor"] for each in rounds])
                ceilings = [
                    by_round
                    for each in rounds
                    if (by_round := ratio(each["floor"]["rps"], each["baseline"]["rps"]))
                    is not None
                ]
                row["ceiling"] = median(ceilings) if ceilings else None
                over_floor = [
                    by_round
                    for each in rounds
                    if (by_round := ratio(each["jargate"]["rps"], each["floor"]["rps"])) is not None
                ]
                row["over_floor"] = round(median(over_floor), 2) if over_floor else None
                row["floor_round_ratios"] = [round(r, 2) for r in over_floor]
            rows.append(row)
            print(
                f"({key}) {title}: jargate {measured['rps']} rps vs baseline {baseline['rps']} rps "
                f"= {shown(scenario_ratio)} (target {target or '-'}), errors {measured['errors']}/{baseline['errors']}"
                f"; CPU µs/request jargate {measured['cpu_us']} baseline {baseline['cpu_us']}",
                flush=True,
            )
            if "floor" in row:
                print(
                    f"    floor {row['floor']['rps']} rps, errors {row['floor']['errors']}",
                    flush=True,
                )

        peak_rss = rss_peak_mb(gateway.pid)
        if ONLY:
            return 0

        print(f"[{time.monotonic() - started:.0f} s] against native oidc-provider ...", flush=True)
        skipped = native.problem()
        against_native = (
            {"skipped": skipped}
            if skipped
            else native.native_phase(processes, redis_port, shared["redis"])
        )

        print(f"[{time.monotonic() - started:.0f} s] half load ...", flush=True)
        half = []
        for key, title, gw_items, bl_items in (
            ("a", "pass-through", [{"path": "/page"}] * 200_000, [{"path": "/page"}] * 200_000),
            ("b", "JAR ES256", *jar_items("bench", half_objects)),
        ):
            base_rps = next(
                r["baseline"]["rps"]
                for r in rows
                if r["key"] == key and (key == "a" or "ES256" in r["title"])
            )
            rate = round(base_rps / 2, 1)
            name = f"half-{key}"
            item: dict[str, Any] = {"key": key, "title": title, "rate": rate, "trials": []}
            if rate <= 0:  # rate 0 is the closed loop: no half load without a peak
                print(
                    f"half load ({key}): not measured, the baseline completed nothing", flush=True
                )
                item["counted"] = 0
                half.append(item)
                continue
            # (a) needs no unique objects: several alternating trials, their latencies
            # pooled, so that one stall of this shared machine (which hits whichever
            # proxy's trial it falls in) does not decide the verdict.
            pooled: dict[str, list[float]] = {}
            proxies = [("baseline", baseline_url, bl_items)]
            if key in FLOORED:  # what the unavoidable work alone adds at this rate
                proxies.append(("floor", floor_url, bl_items))
            proxies.append(("jargate", gateway_url, gw_items))
            for trial in range(HALF_TRIALS if key == "a" else 1):
                at_half = {
                    proxy: load(
                        url,
                        write(items, f"{name}-{trial}-{proxy}"),
                        rate=rate,
                        warmup=HALF_WARMUP,
                        keep=True,
                    )
                    for proxy, url, items in proxies
                }
                item["trials"].append({k: v["p99_ms"] for k, v in at_half.items()})
                for proxy, measured in at_half.items():
                    pooled.setdefault(proxy, []).extend(measured["latencies_ms"])
            item["counted"] = min(len(latencies) for latencies in pooled.values())
            for proxy, latencies in pooled.items():
                item[proxy] = round(quantile(sorted(latencies), 0.99), 2)
            item["added_p99_ms"] = item["jargate"] - item["baseline"]
            if "floor" in item:
                item["floor_added_p99_ms"] = item["floor"] - item["baseline"]
            half.append(item)
            print(f"half load ({key}) at {rate} rps: p99 ms by trial {item['trials']}", flush=True)

        phase_lines = run_phases({"token", "reload"})
        # Codes for the callgrind phase's token exchange, while this jargate runs (they stay
        # redeemable for the code lifetime, by any jargate on the same keys and Redis).
        token_case = token_phase.instruction_case(rig, INSTRUCTION_REQUESTS + 150)

        print(f"[{time.monotonic() - started:.0f} s] workers ...", flush=True)
        # One worker, then two, back to back on (b) ES256 (disjoint objects).
        gw, _ = jar_items("bench", fresh_objects("ES256", issuer))
        one_worker = load(
            gateway_url, write(gw[::2], "one-worker"), watch={"proxy": gateway.pid, **shared}
        )
        processes.stop(gateway)
        gateway = processes.start(
            [sys.executable, "-m", "proxy", "serve"],
            gateway_port,
            {**gateway_env, "JARGATE_WORKERS": "2"},
        )
        two_workers = load(
            gateway_url, write(gw[1::2], "two-workers"), watch={"proxy": gateway.pid, **shared}
        )
        scaling = ratio(two_workers["rps"], one_worker["rps"])
        scaling = None if scaling is None else round(scaling, 2)
        # Every process's CPU per request: the cores cannot carry more than cores / (their
        # sum) requests a second, however many workers jargate runs. Read from both runs
        # (the CPU a request needs falls a little as batches grow); the larger is the ceiling.
        for run in (one_worker, two_workers):
            per_request = sum(run["cpu_us"].values())
            run["busy_cores"] = round(per_request * run["rps"] / 1e6, 2)
            most = ratio(CORES * 1e6, per_request)
            run["ceiling"] = None if most is None else ratio(most, one_worker["rps"])
        ceiling = largest(one_worker["ceiling"], two_workers["ceiling"])
        print(
            f"2 workers on (b) ES256: {two_workers['rps']} rps = {shown(scaling)} x 1 worker "
            f"({one_worker['rps']} rps); the machine's ceiling {shown(ceiling)} x, "
            f"{two_workers['busy_cores']} of {CORES} cores busy",
            flush=True,
        )
        processes.stop(gateway)

        print(f"[{time.monotonic() - started:.0f} s] profiling (b) ES256 ...", flush=True)
        profile = profile_gateway(
            processes, gateway_env, gateway_port, gateway_url, fresh_objects("ES256", issuer)
        )
        print(f"[{time.monotonic() - started:.0f} s] counting instructions ...", flush=True)
        counted = count_instructions(
            gateway_env,
            gateway_port,
            upstream_port,
            redis_port,
            issuer,
            public_file,
            token_case,
        )
    finally:
        processes.stop_all()
        redis_server.stop()
    report(
        rows,
        half,
        peak_rss,
        two_workers,
        one_worker,
        scaling,
        profile,
        counted,
        time.monotonic() - started,
        phase_lines,
        against_native,
    )
    return 0


def profile_gateway(
    processes: Processes, env: dict[str, str], port: int, url: str, tokens: list[str]
) -> str:
    """Run jargate under pyinstrument for scenario (b) ES256; return the top frames."""
    if importlib.util.find_spec("pyinstrument") is None:
        return "(pyinstrument is not installed: `make bench` installs it)"
    out = TMP / "profile.txt"
    args = [
        sys.executable,
        "-m",
        "pyinstrument",
        "--renderer",
        "text",
        "--outfile",
        str(out),
        "-m",
        "proxy",
        "serve",
    ]
    gateway = processes.start(args, port, env)
    gw, _ = jar_items("bench", tokens)
    load(url, write(gw, "profile"), seconds=min(SECONDS, 4))
    processes.stop(gateway, signal.SIGINT)
    lines = out.read_text().splitlines() if out.exists() else ["(no profile written)"]
    return "\n".join(line for line in lines[:60])


def instruction_lines(counted: list[dict[str, Any]]) -> list[str]:
    """The callgrind table: thousands of instructions a request, and the ratios."""
    if not counted:
        return ["(not measured: valgrind is not installed, or BENCH_INSTRUCTIONS=0)", ""]
    lines = [
        f"Each proxy alone under callgrind, {INSTRUCTION_REQUESTS} requests with 4 connections "
        "after a warm-up (bench/instructions.py): instructions it executed per request, "
        "thousands. Unlike throughput on this shared machine, these repeat to within about "
        "1% from run to run. The request objects are signed just before they are played "
        "and a request counts only when accepted (a refusal costs less). baseline / jargate: "
        "as a throughput ratio would be if the proxy were the only cost; jargate / floor: "
        f"the target is {FLOOR_INSTRUCTIONS_TARGET} or less for (b), (c) and (t) the token "
        "exchange (jargate's codes obtained through it earlier, each redeemed once; the "
        "floor's and the baseline's codes no proxy saw).",
        "",
        "| scenario | baseline | floor | jargate | baseline / jargate | jargate / floor | target |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]

    def thousands(count: float | None) -> str:
        # 0.0: a request of the case failed, so nothing was counted
        return shown(count / 1000 if count else None, ".0f")

    for row in counted:
        floor = thousands(row["floor"]) if "floor" in row else "-"
        by_count = ratio(row["baseline"], row["jargate"]) if row["baseline"] else None
        over = ratio(row["jargate"], row["floor"]) if row.get("floor") and row["jargate"] else None
        target = (
            "-"
            if "floor" not in row
            else "**not measured**"
            if over is None
            else ("met" if over <= FLOOR_INSTRUCTIONS_TARGET else "**not met**")
        )
        lines.append(
            f"| ({row['key']}) {row['title']} | {thousands(row['baseline'])} | {floor} "
            f"| {thousands(row['jargate'])} | {shown(by_count)} "
            f"| {shown(over) if 'floor' in row else '-'} | {target} |"
        )
    return [*lines, ""]


def fmt(result: dict[str, Any]) -> str:
    return f"{result['rps']:.0f} / {result['p50_ms']} / {result['p99_ms']}"


def report(
    rows: list[dict[str, Any]],
    half: list[dict[str, Any]],
    peak_rss: float,
    two: dict[str, Any],
    one: dict[str, Any],
    scaling: float | None,
    profile: str,
    counted: list[dict[str, Any]],
    elapsed: float,
    phase_lines: list[str],
    against_native: dict[str, Any] | None = None,
) -> None:
    def verdict(ok: bool) -> str:
        return "met" if ok else "**not met**"

    def cpu_parts(run: dict[str, Any]) -> str:
        cpu = run["cpu_us"]
        return (
            f"jargate {cpu['proxy']}, upstream {cpu['upstream']}, Redis {cpu['redis']}, "
            f"load generator {cpu['generator']}"
        )

    workers_ceiling = largest(one["ceiling"], two["ceiling"])
    fewest_cpu_us = min(sum(r["cpu_us"].values()) for r in (one, two))

    lines = [
        "# jargate benchmark results",
        "",
        f"Measured by `make bench` on {time.strftime('%Y-%m-%d')}: {machine()}.",
        f"Each scenario: {CONNECTIONS} connections, closed loop, rounds alternating "
        "baseline, floor (for (b), (c), (d)) and jargate: "
        f"{CHEAP_ROUNDS} rounds of {CHEAP_SECONDS:g} s for (a) and (f), {ROUNDS} of "
        f"{ROUND_SECONDS:g} s for the other scenarios with a target, one of {SECONDS:g} s "
        "for those without. "
        "Every request object is unique (a fresh `jti`, so the Redis replay claim is "
        "included). The baseline is a naive aiohttp pass-through proxy (`bench/baseline.py`) "
        "carrying the same number of HTTP exchanges to the same upstream in the same run. "
        "A ratio is jargate's throughput over the baseline's in the same round; the "
        "scenario's ratio is the median of its rounds' (listed), the throughputs are over "
        "all rounds.",
        "",
        "| scenario | baseline rps / p50 ms / p99 ms | jargate rps / p50 ms / p99 ms | ratio "
        "| target | rounds' ratios |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        target = (
            f"≥ {row['target']} ("
            + (
                "**not measured**"
                if row["ratio"] is None
                else verdict(row["ratio"] >= row["target"])
            )
            + ")"
            if row["target"]
            else "-"
        )
        lines.append(
            f"| ({row['key']}) {row['title']} | {fmt(row['baseline'])} | {fmt(row['jargate'])} "
            f"| {shown(row['ratio'])} | {target} | {', '.join(str(r) for r in row['round_ratios'])} |"
        )
    floors = [row for row in rows if "floor" in row]
    if floors:
        lines += [
            "",
            "Against the *floor* (`bench/floor.py`: the baseline plus only the work RFC 9101, "
            "RFC 9126 and JARM make unavoidable, done the cheapest way aiohttp, joserfc and "
            "redis-py allow, on uvloop, its Redis commands and upstream GETs on kept "
            "connections as jargate's: a signature check, the claims RFC 9101 makes binding "
            "(`exp`, `iss`, `aud`, the inner `client_id`, no nested `request`) and a "
            "once-only `jti` claim in Redis, the object's parameters sent upstream as a plain "
            "query; a PAR push kept in Redis and taken back; a JARM signature). The floor over the "
            "baseline (the median of the rounds' ratios) is the ceiling for any gateway on "
            "this stack and machine; jargate over the floor is what jargate's own checks, "
            "flows and hygiene cost on top: the target is jargate at "
            f"{FLOOR_THROUGHPUT_TARGET} of the floor or more for (b) RS256 and ES256 and (c) "
            "ES256, the median of the rounds' ratios.",
            "",
            "The same ceiling is also read from CPU time: every process's CPU time per "
            "request (proxy, upstream, Redis, load generator) summed for the baseline and for "
            "the floor; with the two cores saturated, throughput goes as its inverse.",
            "",
            "| scenario | baseline rps | floor rps | floor / baseline (ceiling) "
            "| CPU µs a request, all processes: baseline → floor (ceiling) "
            "| jargate rps | jargate / floor (rounds' median) | target | rounds' ratios |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for row in floors:
            floor, base, ours = row["floor"]["rps"], row["baseline"]["rps"], row["jargate"]["rps"]
            ceiling = row["ceiling"]
            base_cpu, floor_cpu = (sum(row[k]["cpu_us"].values()) for k in ("baseline", "floor"))
            by_cpu = ratio(base_cpu, floor_cpu)
            over = row["over_floor"]
            target = (
                f"≥ {row['floor_target']} ("
                + ("**not measured**" if over is None else verdict(over >= row["floor_target"]))
                + ")"
                if row["floor_target"]
                else "-"
            )
            lines.append(
                f"| ({row['key']}) {row['title']} | {base:.0f} | {floor:.0f} | {shown(ceiling)} "
                f"| {base_cpu} → {floor_cpu} ({shown(by_cpu)}) | {ours:.0f} | {shown(over)} "
                f"| {target} | {', '.join(str(r) for r in row['floor_round_ratios'])} |"
            )
    lines += [
        "",
        "CPU time per request, µs, by process (user + system over the whole phase, divided by "
        "the requests completed; `proxy` is the baseline or jargate):",
        "",
        "| scenario | proxy: baseline → jargate | upstream | Redis | load generator |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        b, j = row["baseline"]["cpu_us"], row["jargate"]["cpu_us"]
        lines.append(
            f"| ({row['key']}) {row['title']} | {b['proxy']} → {j['proxy']} | "
            f"{b['upstream']} → {j['upstream']} | {b['redis']} → {j['redis']} | "
            f"{b['generator']} → {j['generator']} |"
        )
    lines += [
        "",
        "Latency added at half of the baseline's peak load (open loop, the same rate for "
        f"all, counted after {HALF_WARMUP} s at that rate in which the load generator opens "
        f"its connections; for (a) {HALF_TRIALS} alternating trials of {SECONDS:g} s, the p99 "
        "over all their requests together, each trial's own in the last column): where the "
        "floor at that rate already adds 2 ms or more, the target is out of reach for any "
        "gateway on this stack and machine.",
        "",
        "| scenario | rate rps | baseline p99 ms | floor p99 ms (added) | jargate p99 ms "
        "| added p99 ms | target < 2 ms | trials: baseline / jargate p99 ms |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for item in half:
        if not item["counted"]:  # no rate (the baseline completed nothing) or no request
            lines.append(
                f"| ({item['key']}) {item['title']} | {item['rate']} | n/a | "
                + ("n/a | " if item["key"] in FLOORED else "- | ")
                + "n/a | n/a | **not measured** (no request counted) | "
                + ", ".join(f"{t['baseline']} / {t['jargate']}" for t in item["trials"])
                + " |"
            )
            continue
        floor_added = item.get("floor_added_p99_ms")
        met = item["added_p99_ms"] < 2
        lines.append(
            f"| ({item['key']}) {item['title']} | {item['rate']} | {item['baseline']} | "
            + (
                f"{item['floor']} ({round(floor_added, 2)}) | "
                if floor_added is not None
                else "- | "
            )
            + f"{item['jargate']} | {round(item['added_p99_ms'], 2)} | "
            + (
                "**out of reach**"
                if not met and floor_added is not None and floor_added >= 2
                else verdict(met)
            )
            + " | "
            + ", ".join(f"{t['baseline']} / {t['jargate']}" for t in item["trials"])
            + " |"
        )
    lines += [
        "",
        f"Peak RSS of jargate (one worker, after every scenario): {peak_rss} MB "
        f"(target < 120 MB: {verdict(peak_rss < 120)}).",
        "",
        f"Workers (`JARGATE_WORKERS=2`, SO_REUSEPORT) on (b) ES256, measured back to back: "
        f"{two['rps']} rps against {one['rps']} rps with one worker = {shown(scaling)} x "
        "(no target: two cores are shared by the load generator, the upstream and Redis). "
        f"Every process together (jargate, upstream, "
        f"Redis, load generator) needs CPU time for each request: with one worker "
        f"{sum(one['cpu_us'].values())} µs ({cpu_parts(one)}), with two "
        f"{sum(two['cpu_us'].values())} µs ({cpu_parts(two)}), so {CORES} cores carry at "
        f"most {shown(ratio(CORES * 1e6, fewest_cpu_us), '.0f')} rps "
        "whatever the number of "
        f"workers: a ceiling of {shown(workers_ceiling)} x on this machine. "
        f"The two workers kept {two['busy_cores']} of the {CORES} cores busy (one worker: "
        f"{one['busy_cores']}).",
        "",
        *phase_lines,
        "## Instructions per request",
        "",
        *instruction_lines(counted),
        *native.report_lines(against_native),
        "## Where the time goes",
        "",
        "pyinstrument over scenario (b) ES256 (top frames):",
        "",
        "```",
        profile,
        "```",
        "",
        f"Run time: {elapsed:.0f} s.",
        "",
    ]
    analysis = ROOT / "bench" / "analysis.md"
    if analysis.exists():
        lines += ["", analysis.read_text()]
    Path(os.environ.get("BENCH_RESULTS", ROOT / "bench" / "RESULTS.md")).write_text(
        "\n".join(lines)
    )
    print("\n".join(lines[: len(rows) + 12]))


def _terminated(signum: int, _frame: object) -> None:
    """SIGTERM (``timeout`` in `make bench`) as an exit, so that the finally blocks run."""
    raise SystemExit(128 + signum)


# bench/native.py imports this module by name: the script and `run` are one module.
sys.modules.setdefault("run", sys.modules[__name__])
import native  # noqa: E402

if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _terminated)
    try:
        raise SystemExit(main())
    finally:
        shutil.rmtree(TMP, ignore_errors=True)
