"""Task attachments through the embedded store: ``python -m bench.files``.

Runs a gateway in this process (in-process board hosts, the embedded store) and a clamd
of its own on a loopback port (Debian's ``clamd``, a one-signature database written
here), then for each ``--sizes`` file, ``--repeat`` times: the signed upload through the
gateway, ``complete``, the wait until the scan says ``clean``, and the signed download.
Reports medians (seconds) and upload/download throughput (MiB/s) as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from boardcast.deployment import build_cluster
from gateway.app import create_app
from gateway.settings import Settings

MIB = 1024 * 1024


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _start_clamd(directory: Path) -> tuple[subprocess.Popen[bytes], int]:
    binary = shutil.which("clamd") or shutil.which("clamd", path="/usr/sbin")
    if binary is None:
        raise SystemExit("clamd is not installed (apt-get install clamav-daemon)")
    port = _free_port()
    (directory / "db").mkdir()
    # A signature nothing here matches: clamd needs at least one to start.
    (directory / "db" / "bench.hdb").write_text("0" * 32 + ":1:Bench.Nothing\n")
    config = directory / "clamd.conf"
    config.write_text(
        f"Foreground yes\nTCPSocket {port}\nTCPAddr 127.0.0.1\n"
        f"DatabaseDirectory {directory / 'db'}\nTemporaryDirectory {directory}\n"
        "StreamMaxLength 100M\n"
    )
    process = subprocess.Popen(
        [binary, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as probe:
                probe.sendall(b"nPING\n")
                if probe.recv(8).startswith(b"PONG"):
                    return process, port
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit("clamd did not start")


async def _one(http: aiohttp.ClientSession, task: str, size: int, n: int) -> dict[str, float]:
    data = os.urandom(size)
    base = f"/v1/boards/bench/tasks/{task}/attachments"
    body = {"name": f"f{size}-{n}.bin", "size": size, "content_type": "application/octet-stream"}
    async with http.post(base, json=body) as response:
        created = await response.json()
    upload = created["upload"]
    started = time.perf_counter()
    async with http.put(upload["url"], data=data, headers=upload["headers"]) as response:
        assert response.status == 201, await response.text()
    uploaded = time.perf_counter()
    async with http.post(f"{base}/{created['id']}/complete") as response:
        assert response.status == 200, await response.text()
    completed = time.perf_counter()
    for _ in range(60_000):
        async with http.get(f"{base}/{created['id']}") as response:
            found = await response.json()
        if found["state"] != "pending":
            break
        await asyncio.sleep(0.002)
    assert found["state"] == "clean", found
    clean = time.perf_counter()
    async with http.get(found["download"]["url"]) as response:
        assert await response.read() == data
    downloaded = time.perf_counter()
    return {
        "upload_s": uploaded - started,
        "complete_s": completed - uploaded,
        "scan_s": clean - completed,
        "download_s": downloaded - clean,
    }


async def _measure(args: argparse.Namespace, data_dir: Path, clamd_port: int) -> dict[str, Any]:
    settings = Settings(
        port=0,
        data_dir=str(data_dir),
        backend="local",
        auth="none",
        files_clamd=f"127.0.0.1:{clamd_port}",
        files_max_bytes=max(args.sizes),
        files_max_per_task=100_000,
        files_scan_poll_seconds=0.05,
    )
    cluster = await build_cluster(settings)
    runner = web.AppRunner(create_app(settings, cluster), shutdown_timeout=2)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    results: dict[str, Any] = {}
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as http:
            async with http.post(
                "/v1/boards/bench/tasks", json={"title": "t", "column": "c"}
            ) as response:
                task = (await response.json())["id"]
            await _one(http, task, 1024, -1)  # warm-up
            for size in args.sizes:
                runs = [await _one(http, task, size, n) for n in range(args.repeat)]
                medians = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
                results[str(size)] = {
                    **{k: round(v, 4) for k, v in medians.items()},
                    "upload_mib_s": round(size / MIB / medians["upload_s"], 1),
                    "download_mib_s": round(size / MIB / medians["download_s"], 1),
                }
    finally:
        await runner.cleanup()
    return results


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.files", description=__doc__)
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[64 * 1024, MIB, 16 * MIB], help="bytes"
    )
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", type=Path, help="write the JSON here (default: stdout)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-files-") as scratch:
        root = Path(scratch)
        (root / "clamd").mkdir()
        clamd, port = _start_clamd(root / "clamd")
        try:
            results = asyncio.run(_measure(args, root / "data", port))
        finally:
            clamd.terminate()
            clamd.wait(15)
    report = {"command": "python -m bench.files " + " ".join(argv), "sizes": results}
    text = json.dumps(report, indent=2)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
