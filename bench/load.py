"""The load generator, in a process of its own. Reads requests (one JSON object a line:
method, path, form?, headers?, expect?) and plays them in order, each at most once, with a fixed
number of connections (closed loop) or at a fixed rate (open loop; with ``--warmup``, the
requests sent in its first seconds, while the connections open, are not counted); bounded
in count and time. Prints one JSON line: completed, errors, seconds, rps, p50_ms, p99_ms,
and its own CPU seconds (cpu_s)."""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp


def refused(location: str) -> bool:
    """An authorization error, in the query or inside a JARM response (never a success)."""
    query = parse_qs(urlsplit(location).query)
    if "error" in query:
        return True
    for token in query.get("response", []):
        payload = token.split(".")[1]
        if "error" in json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))):
            return True
    return False


def succeeded(item: dict[str, Any], status: int, location: str) -> bool:
    """A page, a push or a redirect that is no error; with ``expect`` in the item, only a
    redirect whose Location contains it (a provider's login page, not the client)."""
    if "expect" in item:
        return status in (302, 303) and item["expect"] in location and not refused(location)
    return status in (200, 201, 302, 303) and not refused(location)


def quantile(ordered: list[float], p: float) -> float:
    """The ``p`` quantile (0–1) of values already sorted; 0 for none."""
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))] if ordered else 0.0


async def one(session: aiohttp.ClientSession, base: str, item: dict[str, Any]) -> bool:
    if item.get("par"):
        async with session.post(
            base + item["path"], data=item["form"], headers=item.get("headers")
        ) as pushed:
            if pushed.status != 201:
                return False
            request_uri = (await pushed.json())["request_uri"]
        path = item["then"].replace("{request_uri}", request_uri)
        async with session.get(base + path, allow_redirects=False) as response:
            await response.read()
            return response.status != 201 and succeeded(
                item, response.status, response.headers.get("Location", "")
            )
    async with session.request(
        item.get("method", "GET"),
        base + item["path"],
        data=item.get("form"),
        headers=item.get("headers"),
        allow_redirects=False,
    ) as response:
        await response.read()
        return succeeded(item, response.status, response.headers.get("Location", ""))


async def run(
    base: str,
    items: list[dict[str, Any]],
    connections: int,
    seconds: float,
    rate: float,
    warmup: float = 0.0,
) -> dict[str, Any]:
    cpu_started = time.process_time()
    latencies: list[float] = []
    errors = 0
    cursor = 0
    counting_from = time.monotonic() + warmup
    deadline = counting_from + seconds
    connector = aiohttp.TCPConnector(limit=connections, force_close=False)
    async with aiohttp.ClientSession(
        connector=connector, cookie_jar=aiohttp.DummyCookieJar()
    ) as session:

        async def timed(item: dict[str, Any], counted: bool = True) -> None:
            nonlocal errors
            started = time.perf_counter()
            try:
                ok = await one(session, base, item)
            except aiohttp.ClientError:
                ok = False
            if counted:
                latencies.append(time.perf_counter() - started)
                errors += 0 if ok else 1

        started = time.monotonic()
        if rate > 0:  # open loop: a request every 1/rate seconds; none counted in the warm-up
            tasks = []
            started_counting = warmup <= 0
            interval = 1.0 / rate
            next_at = time.monotonic()
            while (now := time.monotonic()) < deadline and cursor < len(items):
                counted = now >= counting_from
                if counted and not started_counting:
                    started, started_counting = now, True
                tasks.append(asyncio.ensure_future(timed(items[cursor], counted)))
                cursor += 1
                next_at += interval
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            await asyncio.gather(*tasks)
        else:  # closed loop: `connections` clients, each sending the next request when done

            async def client() -> None:
                nonlocal cursor
                while time.monotonic() < deadline and cursor < len(items):
                    item = items[cursor]
                    cursor += 1
                    await timed(item)

            await asyncio.gather(*(client() for _ in range(connections)))
        elapsed = time.monotonic() - started
    latencies.sort()
    return {
        "completed": len(latencies),
        "errors": errors,
        "seconds": round(elapsed, 2),
        "rps": round(len(latencies) / elapsed, 1) if elapsed > 0 else 0.0,
        "p50_ms": round(quantile(latencies, 0.50) * 1000, 2),
        "p99_ms": round(quantile(latencies, 0.99) * 1000, 2),
        "exhausted": cursor >= len(items),
        "cpu_s": round(time.process_time() - cpu_started, 3),
        "latencies_ms": [round(x * 1000, 3) for x in latencies],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", required=True)
    parser.add_argument("--requests", required=True)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--rate", type=float, default=0)
    parser.add_argument("--warmup", type=float, default=0, help="open loop: seconds not counted")
    parser.add_argument("--latencies", help="also write every latency (ms, JSON) to this file")
    args = parser.parse_args()
    if args.warmup and args.rate <= 0:
        parser.error("--warmup is for the open loop (--rate)")
    with open(args.requests) as lines:
        items = [json.loads(line) for line in lines]
    result = asyncio.run(
        run(args.base, items, args.connections, args.seconds, args.rate, args.warmup)
    )
    latencies = result.pop("latencies_ms")
    if args.latencies:  # for the caller to pool several runs
        with open(args.latencies, "w") as out:
            json.dump(latencies, out)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
