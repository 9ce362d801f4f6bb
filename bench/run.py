"""`make bench`: jargate against the pass-through floor, on this machine, in one run.

Starts Redis, a minimal upstream (bench/upstream.py), the baseline (bench/baseline.py, a
naive aiohttp pass-through proxy) and jargate, each in its own process on loopback, and
drives load from another process (bench/load.py) over pre-generated, unique request
objects. Every phase is bounded in time and count. Prints a table and writes
bench/RESULTS.md. Figures are ratios against the baseline measured in the same run.
"""

from __future__ import annotations

import json
import os
import platform
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from joserfc import jws  # noqa: E402
from joserfc.jwk import ECKey, OKPKey, RSAKey, import_key  # noqa: E402

from proxy.keyring import generate_private_jwks  # noqa: E402
from proxy.store import hashed_key  # noqa: E402
from tests.support import RedisServer, free_port  # noqa: E402

SECONDS = float(os.environ.get("BENCH_SECONDS", "4"))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "32"))
OBJECTS = int(os.environ.get("BENCH_OBJECTS", "8000"))
REDIRECT = "https://rp.example/cb"
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

KEYS = {
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
) -> list[str]:
    jwk = json.dumps(KEYS[KEY_FOR[alg]].as_dict(private=True))
    half = OBJECTS // 2
    jobs = [(alg, jwk, client_id, half, extra or {}, issuer) for _ in range(2)]
    return [token for chunk in pool.map(sign_objects, jobs) for token in chunk]


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


def load(base: str, requests: Path, rate: float = 0, seconds: float = SECONDS) -> dict[str, Any]:
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
    ]
    result = subprocess.run(args, capture_output=True, text=True, check=True, timeout=seconds + 120)
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


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
    processes = Processes()
    upstream_port, baseline_port, gateway_port, redis_port = (free_port() for _ in range(4))
    issuer = f"http://127.0.0.1:{gateway_port}"
    keys_file, clients_file = TMP / "keys.json", TMP / "clients.json"
    keys_file.write_text(
        json.dumps({"keys": [generate_private_jwks(a)["keys"][0] for a in ("ES256", "RS256")]})
    )
    clients_file.write_text(json.dumps(registry()))
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
    rows: list[dict[str, Any]] = []
    redis_server = RedisServer(port=redis_port).start()
    try:
        processes.start(
            [sys.executable, "bench/upstream.py", "--port", str(upstream_port)], upstream_port
        )
        processes.start(
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
        gateway = processes.start(
            [sys.executable, "-m", "proxy", "serve"], gateway_port, gateway_env
        )

        print(f"generating {OBJECTS} unique request objects per scenario ...", flush=True)
        with ProcessPoolExecutor(2) as pool:
            signed = {
                alg: objects(pool, alg, "bench", issuer)
                for alg in ("RS256", "PS256", "ES256", "EdDSA")
            }
            jarm_es = objects(pool, "ES256", "bench", issuer, {"response_mode": "jwt"})
            jarm_rs = objects(pool, "ES256", "bench-rs", issuer, {"response_mode": "jwt"})
            by_reference = objects(pool, "ES256", "bench", issuer)
            workers_objects = objects(pool, "ES256", "bench", issuer)
            profile_objects = objects(pool, "ES256", "bench", issuer)
            half_objects = objects(pool, "ES256", "bench", issuer)

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

        scenarios: list[tuple[str, str, list[dict[str, Any]], list[dict[str, Any]], float]] = [
            (
                "a",
                "pass-through of a non-OAuth page",
                [{"path": "/page"}] * 200_000,
                [{"path": "/page"}] * 200_000,
                0.95,
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
                    0.80 if alg != "EdDSA" else 0,
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
                    0.70 if label == "ES256" else 0,
                )
            )
        scenarios.append(
            ("d", "PAR push then authorization (JARM ES256)", par_gateway, par_baseline, 0.70)
        )
        scenarios.append(
            ("e", "request_uri by reference, cache warm", reference_gateway, reference_baseline, 0)
        )
        scenarios.append(
            (
                "f",
                "plain request, unregistered client",
                plain_items("someone", 200_000),
                plain_items("someone", 200_000),
                0.95,
            )
        )
        scenarios.append(
            (
                "f'",
                "plain request, registered client (flow + iss)",
                plain_items("bench-plain", 200_000),
                plain_items("bench-plain", 200_000),
                0,
            )
        )

        # Warm both servers up (connections, caches) before anything is measured.
        warm = write([{"path": "/page"}] * 50_000, "warm-up")
        for url in (baseline_url, gateway_url):
            load(url, warm, seconds=2)

        for key, title, gw_items, bl_items, target in scenarios:
            name = f"{key}-{len(rows)}"
            baseline = load(baseline_url, write(bl_items, name + "-baseline"))
            measured = load(gateway_url, write(gw_items, name + "-gateway"))
            ratio = round(measured["rps"] / baseline["rps"], 2) if baseline["rps"] else 0
            rows.append(
                {
                    "key": key,
                    "title": title,
                    "baseline": baseline,
                    "jargate": measured,
                    "ratio": ratio,
                    "target": target,
                }
            )
            print(
                f"({key}) {title}: jargate {measured['rps']} rps vs baseline {baseline['rps']} rps "
                f"= {ratio} (target {target or '-'}), errors {measured['errors']}/{baseline['errors']}",
                flush=True,
            )

        peak_rss = rss_peak_mb(gateway.pid)

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
            at_half_baseline = load(baseline_url, write(bl_items, name + "-baseline"), rate=rate)
            at_half_gateway = load(gateway_url, write(gw_items, name + "-gateway"), rate=rate)
            half.append(
                {
                    "key": key,
                    "title": title,
                    "rate": rate,
                    "baseline": at_half_baseline,
                    "jargate": at_half_gateway,
                    "added_p99_ms": round(
                        at_half_gateway["p99_ms"] - at_half_baseline["p99_ms"], 2
                    ),
                }
            )
            print(
                f"half load ({key}) at {rate} rps: p99 baseline {at_half_baseline['p99_ms']} ms, "
                f"jargate {at_half_gateway['p99_ms']} ms",
                flush=True,
            )

        processes.stop(gateway)
        gateway = processes.start(
            [sys.executable, "-m", "proxy", "serve"],
            gateway_port,
            {**gateway_env, "JARGATE_WORKERS": "2"},
        )
        gw, _ = jar_items("bench", workers_objects)
        two_workers = load(gateway_url, write(gw, "workers"))
        one_worker = next(
            r["jargate"] for r in rows if r["title"].startswith("JAR by value, ES256")
        )
        scaling = round(two_workers["rps"] / one_worker["rps"], 2)
        print(
            f"2 workers on (b) ES256: {two_workers['rps']} rps = {scaling} x 1 worker", flush=True
        )
        processes.stop(gateway)

        profile = profile_gateway(
            processes, gateway_env, gateway_port, gateway_url, profile_objects
        )
    finally:
        processes.stop_all()
        redis_server.stop()
    report(
        rows, half, peak_rss, two_workers, one_worker, scaling, profile, time.monotonic() - started
    )
    return 0


def profile_gateway(
    processes: Processes, env: dict[str, str], port: int, url: str, tokens: list[str]
) -> str:
    """Run jargate under pyinstrument for scenario (b) ES256; return the top frames."""
    try:
        import pyinstrument  # noqa: F401
    except ImportError:
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


def fmt(result: dict[str, Any]) -> str:
    return f"{result['rps']:.0f} | {result['p50_ms']} | {result['p99_ms']}"


def report(
    rows: list[dict[str, Any]],
    half: list[dict[str, Any]],
    peak_rss: float,
    two: dict[str, Any],
    one: dict[str, Any],
    scaling: float,
    profile: str,
    elapsed: float,
) -> None:
    def verdict(ok: bool) -> str:
        return "met" if ok else "**not met**"

    lines = [
        "# jargate benchmark results",
        "",
        f"Measured by `make bench` on {time.strftime('%Y-%m-%d')}: {machine()}.",
        f"Each scenario: {CONNECTIONS} connections, {SECONDS:.0f} s, closed loop, every request object "
        "unique (a fresh `jti`, so the Redis replay claim is included). The baseline is a naive aiohttp "
        "pass-through proxy (`bench/baseline.py`) carrying the same number of HTTP exchanges to the same "
        "upstream in the same run. Ratios are jargate's throughput over the baseline's.",
        "",
        "| scenario | baseline rps / p50 ms / p99 ms | jargate rps / p50 ms / p99 ms | ratio | target |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        target = (
            f"≥ {row['target']} ({verdict(row['ratio'] >= row['target'])})"
            if row["target"]
            else "-"
        )
        lines.append(
            f"| ({row['key']}) {row['title']} | {fmt(row['baseline'])} | {fmt(row['jargate'])} | {row['ratio']} | {target} |"
        )
    lines += [
        "",
        "Latency added at half of the baseline's peak load (open loop, the same rate for both):",
        "",
        "| scenario | rate rps | baseline p99 ms | jargate p99 ms | added p99 ms | target < 2 ms |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for item in half:
        lines.append(
            f"| ({item['key']}) {item['title']} | {item['rate']} | {item['baseline']['p99_ms']} | "
            f"{item['jargate']['p99_ms']} | {item['added_p99_ms']} | {verdict(item['added_p99_ms'] < 2)} |"
        )
    lines += [
        "",
        f"Peak RSS of jargate (one worker, after every scenario): {peak_rss} MB "
        f"(target < 120 MB: {verdict(peak_rss < 120)}).",
        "",
        f"Workers (`JARGATE_WORKERS=2`, SO_REUSEPORT) on (b) ES256: {two['rps']} rps against "
        f"{one['rps']} rps with one worker = {scaling} x (target ≥ 1.6: {verdict(scaling >= 1.6)}).",
        "",
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


if __name__ == "__main__":
    raise SystemExit(main())
