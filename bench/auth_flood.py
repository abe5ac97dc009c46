"""A well-behaved client's latency while abusive clients flood the gateway:
``python -m bench auth-flood``.

Starts ``boardcast serve`` (``--backend local`` by default, ``BOARDCAST_AUTH=none``) on a
free loopback port, trusting 127.0.0.1 as a proxy so that each client acts as an address of
its own through ``X-Forwarded-For``. One calm client (two sockets on one board) writes an
update every ``1/--rate`` s and times it to the other socket; that is measured quiet, then
while a separate flood process runs for ``--seconds``:

- ``--addresses`` abusive addresses, each with ``--rest-concurrency`` loops of
  ``GET /v1/projects`` as fast as answers come;
- ``--sockets`` WebSocket upgrade attempts spread over those addresses (each accepted
  socket held open, never read), onto boards of their own;
- ``--slow`` connections that send half a request head and then one byte a second.

This runs ``--repeat`` times (3) each: with the gateway's default limits, and with every
limit off (the aiohttp defaults: a head may take 3630 s), each run on a fresh server. The
JSON holds the calm client's latency p50/p99 (ms) quiet and flooded, and what the flood got,
counted by kind. All traffic is on loopback, bounded in count and time; on a 2-core machine
the flood process, the server and the calm client share the CPU, so flooded latency
includes that contention.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import aiohttp
from pycrdt import Map

from bench.paths import ROOT
from bench.stats import median_summary, summarize_ms
from bench.targets import free_port
from clients.provider import BoardClient

CALM_ADDRESS = "203.0.113.10"


# -- the server (a child process) ---------------------------------------------------------


def _serve(port: int, data_dir: str, backend: str, limits_on: bool) -> int:
    """``boardcast serve`` with the app's limits set as the lead's settings will set them."""
    import boardcast.cli as cli
    from gateway.limits import GatewayLimits
    from gateway.limits_middleware import LIMITS

    proxy = ("127.0.0.1/32",)
    limits = (
        GatewayLimits(trusted_proxies=proxy)
        if limits_on
        else GatewayLimits(
            rest_per_ip_per_second=0,
            rest_per_user_per_second=0,
            ws_upgrades_per_ip_per_second=0,
            max_sockets_per_ip=0,
            max_sockets_per_user=0,
            handshake_timeout_seconds=0,
            body_timeout_seconds=0,
            trusted_proxies=proxy,
        )
    )
    # The shim until settings carry the limits: what create_app builds, plus LIMITS.
    namespace = vars(cli)
    build = namespace["create_app"]

    def create_app(*args: Any, **kwargs: Any) -> Any:
        app = build(*args, **kwargs)
        app[LIMITS] = limits
        return app

    namespace["create_app"] = create_app
    argv = ["serve", "--port", str(port), "--data-dir", data_dir, "--backend", backend]
    cli.main([*argv, "--hosts", "1", "--log-level", "WARNING"])
    return 0


class Server:
    """The child server process, started and stopped by pid."""

    def __init__(self, backend: str, limits_on: bool, log_path: Path, auth: str = "none") -> None:
        self.port = free_port()
        self.auth = auth
        self.token: str | None = None
        self.data_dir = tempfile.mkdtemp(prefix="bench-auth-flood-")
        self.log_path = log_path
        self.command = [
            *(sys.executable, "-m", "bench.auth_flood", "--serve", str(self.port)),
            *("--data-dir", self.data_dir, "--backend", backend),
            *(["--limits-off"] if not limits_on else []),
        ]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 120.0) -> None:
        env = {**os.environ, "BOARDCAST_AUTH": self.auth, "PYTHONUNBUFFERED": "1"}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        if self.auth == "required":
            self.token = _calm_token(self.data_dir, env)
        # Repeats append to one log: only what this server writes counts as its ready line.
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while b"ready" not in self.log_path.read_bytes()[offset:]:
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the server did not start; see {self.log_path}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None


def _calm_token(data_dir: str, env: dict[str, str]) -> str:
    """An account and an operator's token for the calm client's board, made with the CLI."""
    cli = [sys.executable, "-m", "boardcast"]
    subprocess.run(
        [*cli, "user", "add", "calm", "--password-stdin", "--data-dir", data_dir],
        input=b"a long enough password\n",
        env=env,
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    issued = subprocess.run(
        [
            *cli,
            *("token", "issue", "--data-dir", data_dir, "--user", "calm"),
            *("--board", "calm", "--role", "editor"),
        ],
        env=env,
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    return issued.stdout.decode().strip()


# -- the calm client ----------------------------------------------------------------------


async def _calm(port: int, seconds: float, rate: float, token: str | None) -> dict[str, Any]:
    """Update round trips of one writer to one reader on a board of their own."""
    base = f"ws://127.0.0.1:{port}/ws"
    params = {"token": token} if token else None
    latencies: list[float] = []
    pending: dict[str, float] = {}
    changed = asyncio.Event()
    http = aiohttp.ClientSession(headers={"X-Forwarded-For": CALM_ADDRESS})
    async with (
        http,
        BoardClient(base, "calm", session=http, ack=False, params=params) as writer,
        BoardClient(base, "calm", session=http, ack=False, params=params) as reader,
    ):
        await writer.synced(timeout=60)
        await reader.synced(timeout=60)
        seen = reader.doc.get("tasks", type=Map)
        reader.doc.observe(lambda _event: changed.set())

        async def check() -> None:
            while True:
                await changed.wait()
                changed.clear()
                now = time.perf_counter()
                for key in [key for key in pending if key in seen]:
                    latencies.append(now - pending.pop(key))

        checker = asyncio.create_task(check())
        tasks = writer.doc.get("tasks", type=Map)
        stamp = f"{time.monotonic_ns()}"
        count = int(seconds * rate)
        for n in range(count):
            key = f"{stamp}-{n}"
            pending[key] = time.perf_counter()
            tasks[key] = n
            await asyncio.sleep(1 / rate)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10):
                while pending:
                    await asyncio.sleep(0.05)
        lost = len(pending)
        checker.cancel()
        closed = writer.close_code or reader.close_code
    return {**summarize_ms(latencies), "lost": lost, "close_code": closed}


# -- the flood (a child process) ----------------------------------------------------------


def _upgrade_request(board: str, address: str) -> bytes:
    return (
        f"GET /ws/{board} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        f"X-Forwarded-For: {address}\r\n\r\n"
    ).encode()


async def _flood(
    port: int, seconds: float, addresses: int, concurrency: int, sockets: int, slow: int
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    counts: Counter[str] = Counter()
    held: list[asyncio.StreamWriter] = []
    slow_closed_after: list[float] = []
    names = [f"198.51.{100 + n // 250}.{n % 250 + 1}" for n in range(addresses)]

    async def rest(address: str) -> None:
        async with aiohttp.ClientSession(headers={"X-Forwarded-For": address}) as http:
            while loop.time() < deadline:
                try:
                    async with http.get(f"http://127.0.0.1:{port}/v1/projects") as response:
                        await response.read()
                        counts[f"rest_{response.status}"] += 1
                except aiohttp.ClientError:
                    counts["rest_error"] += 1

    async def open_sockets(address: str, attempts: int) -> None:
        for n in range(attempts):
            if loop.time() >= deadline:
                return
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(_upgrade_request(f"flood-{address}-{n % 4}", address))
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
            except (OSError, asyncio.IncompleteReadError, TimeoutError):
                counts["ws_error"] += 1
                continue
            status = head.split(b" ", 2)[1]
            if status == b"101":
                # With auth on, an upgrade without credentials is closed at once (4401).
                first = b""
                with contextlib.suppress(TimeoutError, ConnectionError):
                    first = await asyncio.wait_for(reader.read(64), 0.5)
                if first[:1] == b"\x88":
                    code = int.from_bytes(first[2:4], "big") if len(first) >= 4 else 0
                    counts[f"ws_closed_{code}"] += 1
                    writer.close()
                    continue
                counts["ws_accepted"] += 1
                held.append(writer)  # held open and never read
                continue
            body = b""
            with contextlib.suppress(Exception):
                body = await asyncio.wait_for(reader.read(4096), 5)
            kind = "too_many_connections" if b"too-many-connections" in body else "rate_limited"
            counts[f"ws_{status.decode()}_{kind if status == b'429' else 'other'}"] += 1
            writer.close()

    async def slow_head() -> None:
        started = loop.time()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            counts["slow_error"] += 1
            return
        writer.write(b"GET /v1/projects HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        try:
            while loop.time() < deadline:
                try:
                    data = await asyncio.wait_for(reader.read(1024), 1.0)
                except TimeoutError:
                    writer.write(b"a")
                    continue
                if not data:
                    slow_closed_after.append(loop.time() - started)
                    return
        except ConnectionError:
            slow_closed_after.append(loop.time() - started)
            return
        finally:
            writer.close()
        counts["slow_still_open"] += 1

    per_address = max(1, sockets // max(1, addresses))
    jobs = [rest(a) for a in names for _ in range(concurrency)]
    # Several openers per address: thousands of attempts within the phase.
    openers = 16
    jobs += [open_sockets(a, max(1, per_address // openers)) for a in names for _ in range(openers)]
    jobs += [slow_head() for _ in range(slow)]
    await asyncio.gather(*jobs)
    for writer in held:
        writer.close()
    closed = sorted(slow_closed_after)
    return {
        "counts": dict(sorted(counts.items())),
        "slow_closed_by_server": len(closed),
        "slow_closed_after_s_median": round(closed[len(closed) // 2], 2) if closed else None,
    }


def _run_flood_child(args: argparse.Namespace, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [
        *(sys.executable, "-m", "bench.auth_flood", "--flood", str(port)),
        *("--seconds", str(args.seconds), "--addresses", str(args.addresses)),
        *("--rest-concurrency", str(args.rest_concurrency), "--sockets", str(args.sockets)),
        *("--slow", str(args.slow)),
    ]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE)


def _scenario(args: argparse.Namespace, limits_on: bool, log_dir: Path) -> dict[str, Any]:
    server = Server(
        args.backend, limits_on, log_dir / f"server-limits-{limits_on}.log", auth=args.auth
    )
    server.start()
    try:
        quiet = asyncio.run(_calm(server.port, args.seconds, args.rate, server.token))
        flood = _run_flood_child(args, server.port)
        time.sleep(1.0)  # the flood is under way
        flooded = asyncio.run(_calm(server.port, args.seconds - 2, args.rate, server.token))
        out, _ = flood.communicate(timeout=args.seconds + 120)
        return {"quiet": quiet, "flooded": flooded, "flood": json.loads(out)}
    finally:
        server.stop()


def _repeated(args: argparse.Namespace, limits_on: bool, log_dir: Path) -> dict[str, Any]:
    """``--repeat`` runs on fresh servers, and the median of each latency figure."""
    runs = [_scenario(args, limits_on, log_dir) for _ in range(args.repeat)]
    return {
        "median": {
            phase: median_summary([run[phase] for run in runs]) for phase in ("quiet", "flooded")
        },
        "runs": runs,
    }


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench auth-flood", description=__doc__)
    parser.add_argument("--backend", choices=["local", "ray"], default="local")
    parser.add_argument("--seconds", type=float, default=20.0, help="each phase")
    parser.add_argument("--rate", type=float, default=20.0, help="calm updates per second")
    parser.add_argument("--addresses", type=int, default=4)
    parser.add_argument("--rest-concurrency", type=int, default=8)
    parser.add_argument("--sockets", type=int, default=4000)
    parser.add_argument("--slow", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each scenario")
    parser.add_argument(
        "--auth",
        choices=["none", "required"],
        default="none",
        help="required: the calm client has a token, the flood has none",
    )
    parser.add_argument("--out", type=Path, help="write the JSON here (default: stdout)")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--flood", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    parser.add_argument("--limits-off", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve is not None:
        return _serve(args.serve, args.data_dir, args.backend, not args.limits_off)
    if args.flood is not None:
        result = asyncio.run(
            _flood(
                *(args.flood, args.seconds, args.addresses, args.rest_concurrency),
                *(args.sockets, args.slow),
            )
        )
        print(json.dumps(result))
        return 0
    from gateway.limits import GatewayLimits

    log_dir = Path(tempfile.mkdtemp(prefix="bench-auth-flood-logs-"))
    report = {
        "command": "python -m bench auth-flood " + " ".join(argv),
        "cpus": os.cpu_count(),
        "limits": asdict(GatewayLimits(trusted_proxies=("127.0.0.1/32",))),
        "with_limits": _repeated(args, True, log_dir),
        "without_limits": _repeated(args, False, log_dir),
    }
    text = json.dumps(report, indent=2)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
