"""Cost per request in instructions: each proxy (the baseline, the floor, jargate) run
under valgrind's callgrind, which counts the instructions a process executes, whatever
else the machine is doing. Throughput on a shared 2-core machine drifts from run to run;
these counts repeat to within about 1%. Used by bench/run.py (``BENCH_INSTRUCTIONS=0``
skips it).

Each proxy is started once under callgrind; for each of its cases: warm it up, zero the
counters (``callgrind_control -z``), play ``count`` requests with 4 connections, dump the
counters (``callgrind_control -d``) and divide.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from load import refused

_TOTALS = re.compile(r"^(?:summary|totals):\s+(\d+)", re.MULTILINE)


def available() -> bool:
    """valgrind and callgrind_control are installed."""
    return shutil.which("valgrind") is not None and shutil.which("callgrind_control") is not None


#: A request: a path to GET, or a POST item as bench/load.py plays them (path, form, headers).
Request = str | dict[str, Any]


async def _play(base: str, requests: list[Request], connections: int = 4) -> int:
    """Send every request once; the number answered with a 2xx or 3xx that is no
    authorization error (a refused request object costs less than an accepted one: it must
    not count)."""
    good = 0
    queue = iter(requests)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:

        async def client() -> None:
            nonlocal good
            for request in queue:
                if isinstance(request, str):
                    sent = session.get(base + request, allow_redirects=False)
                else:
                    sent = session.post(
                        base + request["path"],
                        data=request["form"],
                        headers=request.get("headers", {}),
                        allow_redirects=False,
                    )
                async with sent as response:
                    await response.read()
                    location = response.headers.get("Location", "")
                    good += response.status < 400 and not refused(location)

        await asyncio.gather(*(client() for _ in range(connections)))
    return good


def per_request(
    args: list[str],
    port: int,
    env: dict[str, str] | None,
    cases: list[tuple[list[Request], list[Request]]],
    wait_port: Any,
    cwd: Path,
) -> list[float]:
    """Instructions the process started with ``args`` executes per request, for each
    ``(warm, measured)`` case in turn in the same process (one start-up under valgrind,
    about half a minute, for all of them); 0.0 for a case where a request failed."""
    out = Path(tempfile.mkdtemp(prefix="jargate-callgrind-"))
    process = subprocess.Popen(
        ["valgrind", "-q", "--tool=callgrind", f"--callgrind-out-file={out}/cg.%p", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    counts = []
    try:
        wait_port(port, within=300)
        base = f"http://127.0.0.1:{port}"
        for warm, measured in cases:
            asyncio.run(_play(base, warm))
            control = ["callgrind_control", "-z", str(process.pid)]
            subprocess.run(control, check=True, timeout=60, capture_output=True)
            good = asyncio.run(_play(base, measured))
            control[1] = "-d"
            subprocess.run(control, check=True, timeout=60, capture_output=True)
            time.sleep(0.5)
            dumps = sorted(out.glob(f"cg.{process.pid}.*"), key=lambda dump: dump.stat().st_mtime)
            if not dumps or not measured or good != len(measured):
                counts.append(0.0)
                continue
            counts.append(int(_TOTALS.findall(dumps[-1].read_text())[-1]) / len(measured))
        return counts
    finally:
        process.kill()
        process.wait()
        shutil.rmtree(out, ignore_errors=True)
