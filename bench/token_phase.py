"""Two phases of `make bench` (bench/run.py): the token exchange, and a registry reload
under load.

Token exchange: codes are obtained first, outside the timed part (plain authorization
requests of a registered client through jargate, which records each code it delivers;
the floor keeps no record of the codes it relayed, so a code it never saw is all its
``SET NX`` needs), then ``grant_type=authorization_code`` requests are timed
through the baseline (a relay, no store), the floor (one ``SET NX`` of the code's digest,
then the relay) and jargate (the token endpoint guard: the code's record read, its one
redemption claimed, the relay), in alternating rounds. Each code is presented once.

Reload under load: a gateway of its own (its own registry file and metrics port) serves a
bounded closed-loop load of JAR by value, plain requests and token exchanges while its
registry file is replaced several times (two valid registries, with and without an
unrelated client) and each replacement is followed by ``SIGHUP``; every request that
failed, was refused or lost its connection counts as lost, and the reloads are read back
from ``jargate_config_reload_total``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import secrets
import signal
import sys
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import aiohttp

#: The token exchange's client: registered with a secret it presents in Basic; jargate
#: passes its credentials on for the upstream to check.
CLIENT_ID, SECRET = "bench-token", "bench-secret"
#: The same client, but jargate checks its secret and authenticates it upstream with the
#: upstream's own (``upstream_token_endpoint_auth_method``).
TRANSLATED_ID = "bench-token-tr"
BASIC = {
    client: "Basic " + base64.b64encode(f"{client}:{SECRET}".encode()).decode()
    for client in (CLIENT_ID, TRANSLATED_ID)
}
#: Codes obtained through jargate per variant (each redeemed once): more than 3 rounds of
#: 2 s use on this machine. The floor and the baseline get unique codes of their own, as
#: many as the load can play.
CODES = int(os.environ.get("BENCH_TOKEN_CODES", "20000"))
UNRECORDED_CODES = 60_000
#: Codes per proxy for the warm-up before the timed rounds, and its length.
WARM_CODES, WARM_SECONDS = 1000, 1.0
#: Connections used to obtain codes (not timed).
COLLECT_CONNECTIONS = 16
#: The reload phase: its load's length, how many registry replacements (each with a
#: SIGHUP) during it, and the requests prepared for it.
RELOAD_SECONDS = 4.0
RELOADS = 8
RELOAD_ITEMS = 12_000
_RELOADS_METRIC = re.compile(r'^jargate_config_reload_total\{outcome="(\w+)"\} (\S+)$', re.M)


def clients(redirect: str) -> list[dict[str, Any]]:
    """The registry entries the token exchange needs (added to the bench registry)."""
    return [
        {
            "client_id": CLIENT_ID,
            "redirect_uris": [redirect],
            "client_secret": SECRET,
            "token_endpoint_auth_method": "client_secret_basic",
        },
        {
            "client_id": TRANSLATED_ID,
            "redirect_uris": [redirect],
            "client_secret": SECRET,
            "token_endpoint_auth_method": "client_secret_basic",
            "upstream_token_endpoint_auth_method": "client_secret_basic",
            "upstream_client_secret": "bench-upstream-secret",
        },
    ]


@dataclass(frozen=True)
class Rig:
    """What the phases use of bench/run.py: its load runner and request file writer, the
    running proxies' URLs and pids, the shared processes' pids, the redirect URI."""

    load: Callable[..., dict[str, Any]]
    write: Callable[[list[dict[str, Any]], str], Path]
    urls: dict[str, str]
    pids: dict[str, int]
    shared: dict[str, int]
    redirect: str


# ------------------------------------------------------------------ obtaining codes


async def _codes(base: str, paths: list[str], within: float) -> list[str]:
    """GET every path (bounded by ``within`` seconds); the codes the redirects carry."""
    found: list[str] = []
    queue = iter(paths)
    deadline = time.monotonic() + within
    connector = aiohttp.TCPConnector(limit=COLLECT_CONNECTIONS)
    async with aiohttp.ClientSession(
        connector=connector, cookie_jar=aiohttp.DummyCookieJar()
    ) as session:

        async def client() -> None:
            for path in queue:
                if time.monotonic() > deadline:
                    return
                async with session.get(base + path, allow_redirects=False) as response:
                    await response.read()
                    location = response.headers.get("Location", "")
                found.extend(parse_qs(urlsplit(location).query).get("code", []))

        await asyncio.gather(*(client() for _ in range(COLLECT_CONNECTIONS)))
    return found


def obtain_codes(base: str, paths: list[str], within: float = 30) -> list[str]:
    """The codes delivered for ``paths`` through the proxy at ``base``."""
    return asyncio.run(_codes(base, paths, within))


def plain_paths(client_id: str, redirect: str, count: int) -> list[str]:
    """Plain authorization requests of ``client_id`` (the upstream answers each at once)."""
    return [
        "/authorize?"
        + urlencode(
            {
                "client_id": client_id,
                "response_type": "code",
                "redirect_uri": redirect,
                "state": f"t{index}",
            }
        )
        for index in range(count)
    ]


def token_items(codes: list[str], client_id: str, redirect: str) -> list[dict[str, Any]]:
    """One token request a code: ``authorization_code``, the client in Basic."""
    return [
        {
            "method": "POST",
            "path": "/token",
            "form": {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": redirect,
            },
            "headers": {"Authorization": BASIC[client_id]},
        }
        for code in codes
    ]


# ------------------------------------------------------------------ the token exchange


def unrecorded_codes(count: int) -> list[str]:
    """Unique codes no proxy delivered (for the floor, which keeps no record, and the baseline)."""
    prefix = secrets.token_urlsafe(6)
    return [f"{prefix}{index}" for index in range(count)]


def token_exchange(rig: Rig, rounds: int, seconds: float) -> dict[str, Any]:
    """Baseline, floor, jargate (and jargate translating the client's authentication) on
    token requests, ``rounds`` alternating rounds of ``seconds``; CPU µs a request by
    process, and the rounds' jargate / floor ratios."""
    started = time.monotonic()
    wanted = WARM_CODES + CODES
    codes = {
        "baseline": unrecorded_codes(WARM_CODES + UNRECORDED_CODES),
        "floor": unrecorded_codes(WARM_CODES + UNRECORDED_CODES),
        "jargate": obtain_codes(rig.urls["jargate"], plain_paths(CLIENT_ID, rig.redirect, wanted)),
        "translated": obtain_codes(
            rig.urls["jargate"], plain_paths(TRANSLATED_ID, rig.redirect, wanted)
        ),
    }
    collect_seconds = time.monotonic() - started
    items = {
        name: token_items(found, TRANSLATED_ID if name == "translated" else CLIENT_ID, rig.redirect)
        for name, found in codes.items()
    }
    proxies = [("baseline", "baseline"), ("floor", "floor"), ("jargate", "jargate")]
    proxies.append(("translated", "jargate"))
    # The token path warmed first (the relay's POST connections, the guard's code paths).
    for name, proxy in proxies:
        warm = items[name][:WARM_CODES]
        rig.load(rig.urls[proxy], rig.write(warm, f"token-warm-{name}"), seconds=WARM_SECONDS)
        items[name] = items[name][WARM_CODES:]
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in proxies}
    for r in range(rounds):
        for name, proxy in proxies:
            played = items[name][r::rounds]
            runs[name].append(
                rig.load(
                    rig.urls[proxy],
                    rig.write(played, f"token-{r}-{name}"),
                    seconds=seconds,
                    watch={"proxy": rig.pids[proxy], **rig.shared},
                )
            )

    def round_ratios(name: str, of: str, key: Callable[[dict[str, Any]], float]) -> list[float]:
        return [
            round(key(mine) / key(theirs), 2)
            for mine, theirs in zip(runs[name], runs[of], strict=True)
            if key(theirs)
        ]

    def proxy_cpu(run: dict[str, Any]) -> float:
        return float(run["cpu_us"]["proxy"])

    def all_cpu(run: dict[str, Any]) -> float:
        return float(sum(run["cpu_us"].values()))

    def rps(run: dict[str, Any]) -> float:
        return float(run["rps"])

    result: dict[str, Any] = {
        "codes": {name: len(found) - WARM_CODES for name, found in codes.items()},
        "collect_seconds": round(collect_seconds, 1),
        "rounds": rounds,
        "seconds": seconds,
        "runs": {
            name: {
                "rps": [run["rps"] for run in each],
                "errors": sum(run["errors"] for run in each),
                "completed": sum(run["completed"] for run in each),
                "exhausted": any(run["exhausted"] for run in each),
                "cpu_us": {
                    part: round(median(run["cpu_us"][part] for run in each))
                    for part in each[0]["cpu_us"]
                },
                "p50_ms": median(run["p50_ms"] for run in each),
                "p99_ms": max(run["p99_ms"] for run in each),
            }
            for name, each in runs.items()
        },
    }
    for name in ("jargate", "translated"):
        cpu = round_ratios(name, "floor", proxy_cpu)
        total = round_ratios(name, "floor", all_cpu)
        speed = round_ratios(name, "floor", rps)
        result[name] = {
            "cpu_ratios": cpu,
            "cpu_ratio": median(cpu) if cpu else None,
            "all_cpu_ratios": total,
            "all_cpu_ratio": median(total) if total else None,
            "rps_ratios": speed,
            "rps_ratio": median(speed) if speed else None,
            "baseline_rps_ratio": (
                median(ratios) if (ratios := round_ratios(name, "baseline", rps)) else None
            ),
        }
    floor_cpu = round_ratios("floor", "baseline", proxy_cpu)
    result["floor_over_baseline_cpu"] = median(floor_cpu) if floor_cpu else None
    return result


def instruction_case(rig: Rig, count: int) -> tuple[str, dict[str, list[dict[str, Any]]]]:
    """The token exchange for the callgrind phase: its label and, per proxy, ``count`` token
    requests (POST items as bench/load.py plays them); jargate's on codes obtained now
    through the running jargate (each valid for the code lifetime, 600 s, in the shared
    Redis: a later jargate on the same settings redeems them)."""
    ours = obtain_codes(rig.urls["jargate"], plain_paths(CLIENT_ID, rig.redirect, count))
    floor, baseline = unrecorded_codes(count), unrecorded_codes(count)
    return "token exchange, authorization_code (client_secret_basic passed on)", {
        name: token_items(found, CLIENT_ID, rig.redirect)
        for name, found in (("baseline", baseline), ("floor", floor), ("jargate", ours))
    }


# ------------------------------------------------------------------ reload under load


def _reloads(metrics_port: int) -> dict[str, float]:
    """``jargate_config_reload_total`` by outcome, as the metrics port serves it."""
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as answer:
        text = answer.read().decode()
    return {outcome: float(value) for outcome, value in _RELOADS_METRIC.findall(text)}


def _replace(path: Path, document: dict[str, Any]) -> None:
    """Write ``document`` to ``path`` whole (a new file renamed over the old one)."""
    fresh = path.with_suffix(".new")
    fresh.write_text(json.dumps(document))
    os.replace(fresh, path)


def reload_under_load(
    rig: Rig,
    start: Callable[[list[str], int, dict[str, str]], Any],
    stop: Callable[[Any], None],
    gateway_env: dict[str, str],
    registry: dict[str, Any],
    jar_tokens: list[str],
    ports: tuple[int, int],
    workdir: Path,
) -> dict[str, Any]:
    """A gateway of its own on ``ports`` (serving, metrics) under load while its registry
    file is replaced and ``SIGHUP`` sent :data:`RELOADS` times; what was lost and what
    reloaded."""
    port, metrics_port = ports
    clients_file = workdir / "reload-clients.json"
    plain = {"client_id": "reload-extra", "redirect_uris": [rig.redirect]}
    registries = [
        {"clients": [*registry["clients"], plain]},
        {"clients": list(reversed(registry["clients"]))},
    ]
    _replace(clients_file, registry)
    env = {
        **gateway_env,
        "JARGATE_PORT": str(port),
        "JARGATE_METRICS_PORT": str(metrics_port),
        "JARGATE_CLIENTS_FILE": str(clients_file),
        "JARGATE_RELOAD_INTERVAL_SECONDS": "0",
    }
    url = f"http://127.0.0.1:{port}"
    gateway = start([sys.executable, "-m", "proxy", "serve"], port, env)
    try:
        # Warm, and codes of this gateway's own for the token requests in the mix.
        third = RELOAD_ITEMS // 3
        codes = obtain_codes(url, plain_paths(CLIENT_ID, rig.redirect, third))
        gateway_jar = [
            {"path": "/authorize?" + urlencode({"client_id": "bench", "request": t})}
            for t in jar_tokens[:third]
        ]
        plain_items = [{"path": path} for path in plain_paths("bench-plain", rig.redirect, third)]
        tokens = token_items(codes, CLIENT_ID, rig.redirect)
        mixed = [
            item for group in zip(gateway_jar, plain_items, tokens, strict=False) for item in group
        ]
        before = _reloads(metrics_port)
        sent = 0
        with ThreadPoolExecutor(1) as pool:
            running = pool.submit(
                rig.load,
                url,
                rig.write(mixed, "reload"),
                seconds=RELOAD_SECONDS,
                watch={"proxy": gateway.pid},
            )
            time.sleep(0.5)
            gap = (RELOAD_SECONDS - 1.0) / RELOADS
            for index in range(RELOADS):
                if running.done():
                    break
                _replace(clients_file, registries[index % 2])
                os.kill(gateway.pid, signal.SIGHUP)
                sent += 1
                time.sleep(gap)
            measured = running.result(timeout=RELOAD_SECONDS + 180)
        deadline = time.monotonic() + 10
        after = _reloads(metrics_port)
        while sum(after.values()) - sum(before.values()) < sent and time.monotonic() < deadline:
            time.sleep(0.2)
            after = _reloads(metrics_port)
    finally:
        stop(gateway)
    return {
        "completed": measured["completed"],
        "lost": measured["errors"],
        "rps": measured["rps"],
        "p99_ms": measured["p99_ms"],
        "seconds": measured["seconds"],
        "sighups": sent,
        "reloaded": {k: int(after.get(k, 0) - before.get(k, 0)) for k in ("success", "failure")},
        "mix": {"jar": len(gateway_jar), "plain": len(plain_items), "token": len(tokens)},
    }


# ------------------------------------------------------------------ the report


def report_lines(token: dict[str, Any] | None, reload: dict[str, Any] | None) -> list[str]:
    """RESULTS.md's sections for the two phases (nothing for a phase that did not run)."""

    def shown(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.2f}"

    lines: list[str] = []
    if token is not None:
        runs = token["runs"]
        ours = token["jargate"]
        met = ours["cpu_ratio"] is not None and ours["cpu_ratio"] <= 1.25
        lines += [
            "## Token exchange",
            "",
            f"`grant_type=authorization_code` at `/token`, {token['rounds']} alternating "
            f"rounds of {token['seconds']:g} s, each code presented once (codes obtained "
            "beforehand, not timed: jargate's through its authorization endpoint, "
            f"{token['codes']['jargate']} and {token['codes']['translated']}, in "
            f"{token['collect_seconds']} s; the floor's and the baseline's "
            f"{token['codes']['floor']} unique strings no proxy saw). Baseline: the relay, no store. Floor: one `SET NX` of the code's "
            "digest, then the relay. jargate: the guard (the code's record read, its redemption claimed, "
            f"`redirect_uri` checked; `{CLIENT_ID}`'s Basic credentials passed on for the "
            "upstream to check); jargate translating: it checks the client's secret and "
            "authenticates it upstream with the upstream's secret "
            f"(`{TRANSLATED_ID}`). CPU µs a request: the median round's.",
            "",
            "| proxy | rps by round | errors | p50 / p99 ms | CPU µs a request: proxy, "
            "upstream, Redis, load generator |",
            "| --- | --- | --- | --- | --- |",
        ]
        for name, label in (
            ("baseline", "baseline"),
            ("floor", "floor"),
            ("jargate", "jargate"),
            ("translated", "jargate translating"),
        ):
            run = runs[name]
            cpu = run["cpu_us"]
            lines.append(
                f"| {label} | {', '.join(f'{r:.0f}' for r in run['rps'])} | {run['errors']}"
                + (" (codes ran out)" if run["exhausted"] else "")
                + f" | {run['p50_ms']} / {run['p99_ms']} | {cpu['proxy']}, {cpu['upstream']}, "
                f"{cpu['redis']}, {cpu['generator']} |"
            )
        lines += [
            "",
            "| jargate over the floor (median of rounds; rounds') | proxy CPU a request "
            "| all processes' CPU | rps | rps over the baseline |",
            "| --- | --- | --- | --- | --- |",
        ]
        for name, label in (("jargate", "jargate"), ("translated", "jargate translating")):
            each = token[name]
            lines.append(
                f"| {label} | {shown(each['cpu_ratio'])} ({', '.join(map(str, each['cpu_ratios']))}) "
                f"| {shown(each['all_cpu_ratio'])} | {shown(each['rps_ratio'])} "
                f"({', '.join(map(str, each['rps_ratios']))}) | {shown(each['baseline_rps_ratio'])} |"
            )
        lines += [
            "",
            f"Target: the guard costs at most 1.25 x the floor's token exchange (proxy CPU a "
            f"request): {shown(ours['cpu_ratio'])} x, "
            + ("met" if met else "**not met**")
            + f". The floor's proxy CPU over the baseline's: "
            f"{shown(token['floor_over_baseline_cpu'])} x.",
            "",
        ]
    if reload is not None:
        reloaded = reload["reloaded"]
        ok = reload["lost"] == 0 and reloaded["success"] == reload["sighups"]
        lines += [
            "## Registry reload under load",
            "",
            f"A gateway of its own, closed loop for {RELOAD_SECONDS:g} s (JAR by value ES256, "
            f"plain requests of a registered client and token exchanges, interleaved, "
            f"{reload['mix']['jar']}, {reload['mix']['plain']} and {reload['mix']['token']} "
            f"prepared), its registry file replaced {reload['sighups']} times "
            "(renamed over, alternating a registry with an unrelated client added and the "
            "same clients in another order), each followed by `SIGHUP` "
            "(`JARGATE_RELOAD_INTERVAL_SECONDS=0`).",
            "",
            f"{reload['completed']} requests at {reload['rps']:.0f} rps (p99 "
            f"{reload['p99_ms']} ms); lost (errors, refusals, connections reset): "
            f"{reload['lost']}; `jargate_config_reload_total`: {reloaded['success']} success, "
            f"{reloaded['failure']} failure for {reload['sighups']} SIGHUPs. Target: no "
            "request lost, every reload done: " + ("met" if ok else "**not met**") + ".",
            "",
        ]
    return lines
