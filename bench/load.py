"""The load generator, in a process of its own. Reads requests (one JSON object a line:
method, path, form?, headers?) and plays them in order, each at most once, with a fixed
number of connections (closed loop) or at a fixed rate (open loop); bounded in count and
time. Prints one JSON line: completed, errors, seconds, rps, p50_ms, p99_ms, and its own
CPU seconds (cpu_s)."""

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
            return response.status in (200, 302) and not refused(
                response.headers.get("Location", "")
            )
    async with session.request(
        item.get("method", "GET"),
        base + item["path"],
        data=item.get("form"),
        headers=item.get("headers"),
        allow_redirects=False,
    ) as response:
        await response.read()
        return response.status in (200, 201, 302) and not refused(
            response.headers.get("Location", "")
        )


async def run(
    base: str, items: list[dict[str, Any]], connections: int, seconds: float, rate: float
) -> dict[str, Any]:
    cpu_started = time.process_time()
    latencies: list[float] = []
    errors = 0
    cursor = 0
    deadline = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=connections, force_close=False)
    async with aiohttp.ClientSession(
        connector=connector, cookie_jar=aiohttp.DummyCookieJar()
    ) as session:

        async def timed(item: dict[str, Any]) -> None:
            nonlocal errors
            started = time.perf_counter()
            try:
                ok = await one(session, base, item)
            except aiohttp.ClientError:
                ok = False
            latencies.append(time.perf_counter() - started)
            errors += 0 if ok else 1

        started = time.monotonic()
        if rate > 0:  # open loop: a request every 1/rate seconds
            tasks = []
            interval = 1.0 / rate
            next_at = time.monotonic()
            while time.monotonic() < deadline and cursor < len(items):
                tasks.append(asyncio.ensure_future(timed(items[cursor])))
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

    def percentile(p: float) -> float:
        return (
            round(latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000, 2)
            if latencies
            else 0.0
        )

    return {
        "completed": len(latencies),
        "errors": errors,
        "seconds": round(elapsed, 2),
        "rps": round(len(latencies) / elapsed, 1),
        "p50_ms": percentile(0.50),
        "p99_ms": percentile(0.99),
        "exhausted": cursor >= len(items),
        "cpu_s": round(time.process_time() - cpu_started, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", required=True)
    parser.add_argument("--requests", required=True)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--rate", type=float, default=0)
    args = parser.parse_args()
    with open(args.requests) as lines:
        items = [json.loads(line) for line in lines]
    print(json.dumps(asyncio.run(run(args.base, items, args.connections, args.seconds, args.rate))))


if __name__ == "__main__":
    main()
