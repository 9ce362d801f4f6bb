"""`make bench`'s comparison with a native implementation: panva's oidc-provider with its
own JAR, PAR and JARM (A) against jargate in front of the same oidc-provider with them off
(B), on the same unique request objects and PAR flows, each answered with the provider's
interaction redirect. Alternating rounds on disjoint slices; the ratio B / A per round,
the median counts; the CPU each process spends a request. Also, once and untimed, a request
object sent twice: native oidc-provider accepts the replay, jargate refuses it.

Called by bench/run.py after the main table; `BENCH_NATIVE_ONLY=1` runs this phase alone.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from statistics import median
from typing import Any
from urllib.parse import urlencode

import aiohttp
import run

from proxy.keyring import generate_private_jwks
from tests.support import RedisServer, free_port

ROOT = run.ROOT
INTEROP = ROOT / "tests" / "interop"
#: Unique request objects per alg and per side (1.5 x BENCH_OBJECTS): each round takes a
#: third, more than native oidc-provider answers in a round.
OBJECTS = run.OBJECTS * 3 // 2
TARGET = 0.75
#: Where the provider's login page sends the browser: the only success.
INTERACTION = "/interaction/"
SECRET = "bench-secret"  # noqa: S105 - the benchmark client's, as in run.registry()
PAR_AUTH = "Basic " + base64.b64encode(f"bench-par:{SECRET}".encode()).decode()
ALGS = ("PS256", "ES256")


def problem() -> str | None:
    """Why the phase cannot run here (Node or oidc-provider missing), or None."""
    node = shutil.which("node")
    if node is None:
        return "node is not installed"
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=False)
    if int(version.stdout.strip().lstrip("v").split(".")[0] or 0) < 20:
        return f"node {version.stdout.strip()} is older than 20"
    if not (INTEROP / "node_modules" / "oidc-provider").is_dir():
        return "tests/interop/node_modules is missing (`make interop-deps`)"
    return None


def provider_clients(native: bool) -> list[dict[str, Any]]:
    """The clients as oidc-provider registers them: with keys and JARM algs when it does
    JAR and JARM itself, plain behind jargate (whose registry, run.registry(), has both)."""
    jwks = {"keys": [key.as_dict(private=False) for key in run.KEYS.values()]}
    jar: dict[str, Any] = {
        "client_id": "bench",
        "client_secret": SECRET,
        "redirect_uris": [run.REDIRECT],
    }
    par: dict[str, Any] = {
        "client_id": "bench-par",
        "client_secret": SECRET,
        "redirect_uris": [run.REDIRECT],
        "token_endpoint_auth_method": "client_secret_basic",
    }
    if native:
        jar |= {"jwks": jwks, "authorization_signed_response_alg": "ES256"}
        par |= {"authorization_signed_response_alg": "ES256"}
    return [jar, par]


def provider_command() -> list[str]:
    return ["node", str(ROOT / "bench" / "native_provider.mjs")]


def provider_env(port: int, issuer: str, native: bool) -> dict[str, str]:
    return {
        **os.environ,
        "PORT": str(port),
        "ISSUER": issuer,
        "CLIENTS": json.dumps(provider_clients(native)),
        "NATIVE": "1" if native else "0",
    }


def jar_items(tokens: list[str]) -> list[dict[str, Any]]:
    return [
        {"path": "/auth?" + urlencode({"client_id": "bench", "request": t}), "expect": INTERACTION}
        for t in tokens
    ]


def par_items(push_path: str, count: int) -> list[dict[str, Any]]:
    """PAR push (client_secret_basic, JARM asked for) then the authorization request."""
    return [
        {
            "par": True,
            "path": push_path,
            "form": {
                "client_id": "bench-par",
                "response_type": "code",
                "redirect_uri": run.REDIRECT,
                "scope": "openid",
                "response_mode": "jwt",
                "state": f"s{i}",
            },
            "headers": {"Authorization": PAR_AUTH},
            "then": "/auth?client_id=bench-par&request_uri={request_uri}",
            "expect": INTERACTION,
        }
        for i in range(count)
    ]


def sign(pool: ProcessPoolExecutor, alg: str, issuer: str, count: int) -> list[str]:
    jwk = json.dumps(run.KEYS[run.KEY_FOR[alg]].as_dict(private=True))
    jobs: list[tuple[str, str, str, int, dict[str, Any], str]] = [
        (alg, jwk, "bench", count // 2, {}, issuer) for _ in range(2)
    ]
    return [token for chunk in pool.map(run.sign_objects, jobs) for token in chunk]


async def _twice(url: str) -> list[str]:
    """The status and Location of two GETs of one URL."""
    outcomes = []
    async with aiohttp.ClientSession() as session:
        for _ in range(2):
            async with session.get(url, allow_redirects=False) as response:
                await response.read()
                location = response.headers.get("Location", "")
                outcomes.append(f"{response.status} {location[:90]}")
    return outcomes


def replay(base: str, token: str) -> dict[str, Any]:
    """One request object sent twice to ``base``: each outcome, and whether the second
    was accepted (the interaction redirect)."""
    outcomes = asyncio.run(_twice(base + jar_items([token])[0]["path"]))
    first, second = (INTERACTION in outcome for outcome in outcomes)
    return {"outcomes": outcomes, "first_accepted": first, "replay_accepted": second}


def native_phase(processes: run.Processes, redis_port: int, redis_pid: int) -> dict[str, Any]:
    """Start both sides, measure JAR PS256, JAR ES256 and PAR in alternating rounds,
    check the replay; return the rows and the replay outcomes for the report."""
    started = time.monotonic()
    native_port, legacy_port, gateway_port = (free_port() for _ in range(3))
    native_url = f"http://127.0.0.1:{native_port}"
    gateway_url = f"http://127.0.0.1:{gateway_port}"
    keys_file, clients_file = run.TMP / "native-keys.json", run.TMP / "native-clients.json"
    keys_file.write_text(json.dumps(generate_private_jwks(["ES256", "RS256"])))
    clients_file.write_text(json.dumps(run.registry()))
    gateway_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("JARGATE_")},
        "JARGATE_UPSTREAM_URL": f"http://127.0.0.1:{legacy_port}",
        "JARGATE_ISSUER": gateway_url,
        "JARGATE_AUTHORIZATION_PATH": "/auth",
        "JARGATE_HOST": "127.0.0.1",
        "JARGATE_PORT": str(gateway_port),
        "JARGATE_METRICS_PORT": "0",
        "JARGATE_REDIS_URL": f"redis://127.0.0.1:{redis_port}/2",
        "JARGATE_KEYS_FILE": str(keys_file),
        "JARGATE_CLIENTS_FILE": str(clients_file),
    }
    native = processes.start(
        provider_command(), native_port, provider_env(native_port, native_url, True)
    )
    # Behind jargate the provider's issuer is jargate's public URL (it trusts X-Forwarded-*).
    legacy = processes.start(
        provider_command(), legacy_port, provider_env(legacy_port, gateway_url, False)
    )
    gateway = processes.start([sys.executable, "-m", "proxy", "serve"], gateway_port, gateway_env)
    watch = {
        "native": {"oidc-provider": native.pid, "redis": redis_pid},
        "jargate": {"jargate": gateway.pid, "oidc-provider": legacy.pid, "redis": redis_pid},
    }
    urls = {"native": native_url, "jargate": gateway_url}
    # Each side's own objects (the audience is its issuer), the same count and claims.
    with ProcessPoolExecutor(2) as pool:
        signed = {
            (alg, side): sign(pool, alg, url, OBJECTS) for alg in ALGS for side, url in urls.items()
        }
        warm = {side: sign(pool, "ES256", url, 600) for side, url in urls.items()}
        replayed = {side: sign(pool, "ES256", url, 2) for side, url in urls.items()}
    print(f"[native {time.monotonic() - started:.0f} s] objects signed; warming up ...", flush=True)
    pushes = {"native": "/request", "jargate": "/par"}
    for side, url in urls.items():
        run.load(url, run.write(jar_items(warm[side]), f"native-warm-{side}"), seconds=1)
        run.load(
            url, run.write(par_items(pushes[side], 5000), f"native-warm-par-{side}"), seconds=1
        )

    scenarios = [
        (f"JAR by value, {alg}", {side: jar_items(signed[alg, side]) for side in urls})
        for alg in ALGS
    ]
    scenarios.append(
        ("PAR push then authorization", {side: par_items(pushes[side], OBJECTS) for side in urls})
    )
    rows: list[dict[str, Any]] = []
    for title, items in scenarios:
        rounds: list[dict[str, dict[str, Any]]] = []
        for r in range(run.PHASE_ROUNDS):
            one_round = {}
            # Alternate which side goes first, so that neither always follows the other.
            for side in ("native", "jargate") if r % 2 == 0 else ("jargate", "native"):
                one_round[side] = run.load(
                    urls[side],
                    run.write(items[side][r :: run.PHASE_ROUNDS], f"native-{len(rows)}-{r}-{side}"),
                    seconds=run.ROUND_SECONDS,
                    watch=watch[side],
                )
            rounds.append(one_round)
        ratios = [
            by_round
            for each in rounds
            if (by_round := run.ratio(each["jargate"]["rps"], each["native"]["rps"])) is not None
        ]
        row: dict[str, Any] = {
            "title": title,
            "native": run.combine([each["native"] for each in rounds]),
            "jargate": run.combine([each["jargate"] for each in rounds]),
            "ratio": round(median(ratios), 2) if ratios else None,
            "round_ratios": [round(x, 2) for x in ratios],
            "exhausted": any(side["exhausted"] for each in rounds for side in each.values()),
        }
        rows.append(row)
        print(
            f"native: {title}: jargate + legacy {row['jargate']['rps']} rps vs native "
            f"{row['native']['rps']} rps = {run.shown(row['ratio'])} (rounds {row['round_ratios']}), "
            f"errors {row['jargate']['errors']}/{row['native']['errors']}; CPU µs/request "
            f"jargate side {row['jargate']['cpu_us']} native {row['native']['cpu_us']}",
            flush=True,
        )
    replays = {side: replay(urls[side], replayed[side][0]) for side in urls}
    print(f"native: replay {replays}", flush=True)
    for process in (gateway, legacy, native):
        processes.stop(process)
    return {"rows": rows, "replay": replays, "seconds": round(time.monotonic() - started)}


def report_lines(result: dict[str, Any] | None) -> list[str]:
    """RESULTS.md's section "Against the native implementation"."""
    lines = ["## Against the native implementation", ""]
    if result is None or "skipped" in (result or {}):
        why = (result or {}).get("skipped", "not run (BENCH_ONLY)")
        return [*lines, f"(not measured: {why})", ""]
    lines += [
        "panva's oidc-provider 9.13.3 (`bench/native_provider.mjs`) with its own request "
        "objects by value, PAR and JWT response modes on (native), against jargate in front "
        "of the same oidc-provider with all three off (jargate + legacy, its Redis in database "
        "2): the same unique request objects (each side's audience its issuer), the same PAR "
        "push (client_secret_basic, `response_mode=jwt`) then authorization, "
        f"{run.CONNECTIONS} connections, {run.PHASE_ROUNDS} alternating rounds of "
        f"{run.ROUND_SECONDS:g} s on disjoint slices; success is the provider's interaction "
        "redirect (`/interaction/…`) only. Ratio: jargate + legacy over native in each round, "
        "the median counts. Native oidc-provider does not refuse a replayed request object "
        "(no one-time `jti`); jargate does, with a Redis claim per object: part of the "
        "difference buys that. CPU µs a request: user + system time of each process over "
        "the rounds over the requests completed; their sums' ratio is the throughput ratio "
        "the two cores allow once saturated.",
        "",
        "| scenario | native rps / p50 ms / p99 ms | jargate + legacy rps / p50 ms / p99 ms "
        "| ratio | rounds' ratios | target | CPU µs a request: native | CPU µs a request: "
        "jargate + legacy | CPU: native / jargate + legacy |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    sides = ("native", "jargate")
    for row in result["rows"]:
        ratio = row["ratio"]
        verdict = (
            "**not measured**" if ratio is None else "met" if ratio >= TARGET else "**not met**"
        )
        notes = ""
        if row["native"]["errors"] or row["jargate"]["errors"]:
            notes += f" (errors {row['native']['errors']} / {row['jargate']['errors']})"
        if row["exhausted"]:
            notes += " (objects ran out in a round: raise BENCH_OBJECTS)"
        lines.append(
            f"| {row['title']}{notes} | {_fmt(row['native'])} | {_fmt(row['jargate'])} "
            f"| {run.shown(ratio)} | {', '.join(str(r) for r in row['round_ratios'])} "
            f"| ≥ {TARGET} ({verdict}) | {_cpu(row['native'])} | {_cpu(row['jargate'])} "
            f"| {run.shown(run.ratio(*(sum(row[k]['cpu_us'].values()) for k in sides)))} |"
        )
    native, gateway = result["replay"]["native"], result["replay"]["jargate"]
    lines += [
        "",
        "One ES256 request object sent twice, untimed: native oidc-provider "
        + ("**accepts** the replay" if native["replay_accepted"] else "refuses the replay")
        + f" ({'; '.join(native['outcomes'])}); jargate "
        + ("refuses it" if not gateway["replay_accepted"] else "**accepts** it")
        + f" ({'; '.join(gateway['outcomes'])}).",
        "",
        f"Phase time: {result['seconds']} s.",
        "",
    ]
    return lines


def _fmt(result: dict[str, Any]) -> str:
    return f"{result['rps']:.0f} / {result['p50_ms']} / {result['p99_ms']}"


def _cpu(result: dict[str, Any]) -> str:
    cpu = result["cpu_us"]
    parts = ", ".join(f"{name} {value}" for name, value in cpu.items())
    return f"{sum(cpu.values())} ({parts})"


def alone() -> int:
    """`BENCH_NATIVE_ONLY=1`: this phase alone, its section printed (and written to
    BENCH_RESULTS when that is set)."""
    why = problem()
    if why is not None:
        print(f"native phase not run: {why}")
        return 1
    processes = run.Processes()
    redis_server = RedisServer(port=free_port()).start()
    try:
        assert redis_server.process is not None
        result = native_phase(processes, redis_server.port, redis_server.process.pid)
    finally:
        processes.stop_all()
        redis_server.stop()
    lines = report_lines(result)
    print("\n".join(lines))
    if os.environ.get("BENCH_RESULTS"):
        Path(os.environ["BENCH_RESULTS"]).write_text("\n".join(lines))
    return 0
