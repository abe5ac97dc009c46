"""Fan-out benchmark: how long does one edit take to reach everyone else on its board?

R boards x C clients connect to a y-websocket server; W clients of each board
write real Yjs updates at a fixed rate. Every update sets a map key that names
it (``~m{writer}.{seq}~``), so a receiver finds it in the frame bytes without
applying anything, and the send time comes from a shared table: one process,
one clock (``time.perf_counter``). The load generator's own CPU is reported,
because on a small machine it, not the server, may be the bottleneck.

Run ``python -m bench fanout --help``; see bench/README.md for the report.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import math
import random
import re
import resource
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pycrdt

from crdt.errors import ProtocolError
from crdt.protocol import (
    SyncStep1,
    SyncStep2,
    SyncUpdate,
    decode_frame,
    sync_step1,
    sync_step2,
    sync_update,
)

MARKER = re.compile(rb"~m\d+\.\d+~")
EMPTY_STATE_VECTOR = b"\x00"
EMPTY_UPDATE = b"\x00\x00"
SATURATED_CPU_FRACTION = 0.8


@dataclass(frozen=True)
class FanoutParams:
    """What to run: the shape of the load and how long."""

    url: str
    boards: int
    clients: int
    writers: int
    rate: float
    duration: float
    warmup: float
    drain: float
    payload_bytes: int
    connect_batch: int
    board_prefix: str


@dataclass(eq=False)
class Connection:
    """One benchmark client: a raw socket, plus a pycrdt document if it writes."""

    ws: aiohttp.ClientWebSocketResponse
    board: str
    writer_id: int | None
    doc: pycrdt.Doc[Any] | None
    synced: asyncio.Event = field(default_factory=asyncio.Event)
    seen: set[bytes] = field(default_factory=set)


class Ledger:
    """Send times of every update and the deliveries seen, on one clock."""

    def __init__(self) -> None:
        # marker -> (send time, writer id, in the measured window)
        self.sent: dict[bytes, tuple[float, int, bool]] = {}
        self.measure_start = math.inf
        self.measure_end = math.inf
        self.latencies: list[float] = []
        self.schedule_lags: list[float] = []
        self.sends = 0
        self.sends_total = 0
        self.expected = 0
        self.expected_total = 0
        self.observed = 0
        self.observed_total = 0
        self.duplicates = 0
        self.disconnects = 0
        self.errors: list[str] = []
        self.closing = False

    def measuring(self, due: float) -> bool:
        """True if a send scheduled at ``due`` belongs to the measured window."""
        return self.measure_start <= due < self.measure_end

    def record_send(
        self, marker: bytes, writer_id: int, receivers: int, *, at: float, due: float
    ) -> None:
        """Note an update about to be sent, and how many clients should receive it."""
        measured = self.measuring(due)
        self.sent[marker] = (at, writer_id, measured)
        self.sends_total += 1
        self.expected_total += receivers
        if measured:
            self.sends += 1
            self.expected += receivers
            self.schedule_lags.append(at - due)

    def deliver(self, data: bytes, connection: Connection) -> None:
        """Account for every marked update found in a received payload."""
        now = time.perf_counter()
        for marker in MARKER.findall(data):
            entry = self.sent.get(marker)
            if entry is None or entry[1] == connection.writer_id:
                continue
            if marker in connection.seen:
                self.duplicates += 1
                continue
            connection.seen.add(marker)
            self.observed_total += 1
            if entry[2]:
                self.observed += 1
                self.latencies.append(now - entry[0])


def is_single_update(data: bytes) -> bool:
    """True if the frame is exactly one sync update (the hot path: no full decode)."""
    if len(data) < 3 or data[0] != 0 or data[1] != 2:
        return False
    length = shift = 0
    for pos in range(2, min(len(data), 12)):
        byte = data[pos]
        length |= (byte & 0x7F) << shift
        if byte < 0x80:
            return pos + 1 + length == len(data)
        shift += 7
    return False


async def receive(connection: Connection, ledger: Ledger) -> None:
    """Answer the sync handshake and account for deliveries until the socket closes."""
    try:
        await _receive_frames(connection, ledger)
    except (ProtocolError, ValueError) as exc:
        ledger.errors.append(f"{connection.board}: {exc!r}")
        await connection.ws.close()
    if not ledger.closing:
        ledger.disconnects += 1


async def _receive_frames(connection: Connection, ledger: Ledger) -> None:
    ws = connection.ws
    async for message in ws:
        if message.type is not aiohttp.WSMsgType.BINARY:
            continue
        data: bytes = message.data
        if is_single_update(data):
            ledger.deliver(data, connection)
            continue
        for item in decode_frame(data):
            if isinstance(item, SyncUpdate):
                ledger.deliver(item.update, connection)
            elif isinstance(item, SyncStep1):
                doc = connection.doc
                missing = EMPTY_UPDATE if doc is None else doc.get_update(item.state_vector)
                await ws.send_bytes(sync_step2(missing))
            elif isinstance(item, SyncStep2):
                # Receivers never apply: writers need the state so their updates are valid.
                if connection.doc is not None:
                    connection.doc.apply_update(item.update)
                connection.synced.set()


async def write(
    connection: Connection,
    ledger: Ledger,
    params: FanoutParams,
    start_at: float,
    stop_at: float,
) -> None:
    """Set one marked key at a fixed rate until ``stop_at`` (open loop: late sends catch up)."""
    assert connection.doc is not None and connection.writer_id is not None
    board = connection.doc.get("bench", type=pycrdt.Map)
    updates: list[bytes] = []
    connection.doc.observe(lambda event: updates.append(event.update))
    payload = "x" * params.payload_bytes
    interval = 1.0 / params.rate
    receivers = params.clients - 1
    due = start_at + random.uniform(0.0, interval)
    seq = 0
    while due < stop_at:
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        seq += 1
        marker = f"~m{connection.writer_id}.{seq}~"
        board[marker] = payload
        frame = sync_update(updates.pop())
        now = time.perf_counter()
        ledger.record_send(marker.encode(), connection.writer_id, receivers, at=now, due=due)
        try:
            await connection.ws.send_bytes(frame)
        except (ConnectionError, aiohttp.ClientError):
            return
        due += interval


async def watch_loop_lag(lags: list[float], stop: asyncio.Event, period: float = 0.01) -> None:
    """Record how late the event loop wakes up: the load generator's own queueing delay."""
    while not stop.is_set():
        before = time.perf_counter()
        await asyncio.sleep(period)
        lags.append(time.perf_counter() - before - period)


async def open_connection(
    session: aiohttp.ClientSession, params: FanoutParams, board: str, writer_id: int | None
) -> Connection:
    """Connect one client and send its sync step 1."""
    ws = await session.ws_connect(f"{params.url.rstrip('/')}/{board}", max_msg_size=0)
    doc: pycrdt.Doc[Any] | None = pycrdt.Doc() if writer_id is not None else None
    connection = Connection(ws=ws, board=board, writer_id=writer_id, doc=doc)
    await ws.send_bytes(sync_step1(EMPTY_STATE_VECTOR if doc is None else doc.get_state()))
    return connection


def summarize(seconds: Sequence[float]) -> dict[str, float | int | None]:
    """Percentiles (nearest rank), max and mean in milliseconds."""
    if not seconds:
        return {"count": 0, "p50": None, "p95": None, "p99": None, "max": None, "mean": None}
    ordered = sorted(seconds)

    def rank(q: float) -> float:
        return round(ordered[max(0, math.ceil(q * len(ordered)) - 1)] * 1000, 3)

    return {
        "count": len(ordered),
        "p50": rank(0.50),
        "p95": rank(0.95),
        "p99": rank(0.99),
        "max": round(ordered[-1] * 1000, 3),
        "mean": round(sum(ordered) / len(ordered) * 1000, 3),
    }


def board_specs(params: FanoutParams) -> list[tuple[str, int | None]]:
    """(board name, writer id or None) of every client; names are new on every run."""
    run_id = uuid.uuid4().hex[:8]
    writer_ids = iter(range(params.boards * params.writers))
    return [
        (f"{params.board_prefix}-{run_id}-{b}", next(writer_ids) if c < params.writers else None)
        for b in range(params.boards)
        for c in range(params.clients)
    ]


def server_cpu_s(pids: Sequence[int]) -> float | None:
    """CPU seconds used so far by the server processes and their children (psutil)."""
    if not pids:
        return None
    psutil: Any = importlib.import_module("psutil")  # a test extra, needed only here
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            parent = psutil.Process(pid)
            for process in [parent, *parent.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    times = process.cpu_times()
                    total += times.user + times.system
    return total


async def drive(
    params: FanoutParams, ledger: Ledger, connections: list[Connection], server_pids: Sequence[int]
) -> dict[str, Any]:
    """Run the writers through warm-up and the measured window; return the CPU figures."""
    start_at = time.perf_counter() + 0.1
    ledger.measure_start = start_at + params.warmup
    ledger.measure_end = ledger.measure_start + params.duration
    loop_lags: list[float] = []
    stop_watch = asyncio.Event()
    watcher = asyncio.create_task(watch_loop_lag(loop_lags, stop_watch))
    writers = [
        asyncio.create_task(write(c, ledger, params, start_at, ledger.measure_end))
        for c in connections
        if c.writer_id is not None
    ]
    await asyncio.sleep(max(0.0, ledger.measure_start - time.perf_counter()))
    wall_before, usage_before = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    server_before = server_cpu_s(server_pids)
    await asyncio.gather(*writers)
    await asyncio.sleep(max(0.0, ledger.measure_end - time.perf_counter()))
    wall_s = time.perf_counter() - wall_before
    usage = resource.getrusage(resource.RUSAGE_SELF)
    server_after = server_cpu_s(server_pids)
    stop_watch.set()
    await watcher
    user_s, system_s = (
        usage.ru_utime - usage_before.ru_utime,
        usage.ru_stime - usage_before.ru_stime,
    )
    fraction = (user_s + system_s) / wall_s
    server: dict[str, Any] | None = None
    if server_before is not None and server_after is not None:
        used = server_after - server_before
        server = {"pids": list(server_pids), "cpu_s": round(used, 3)}
        server["cpu_fraction_of_one_core"] = round(used / wall_s, 3)
    generator = {
        "cpu_s": round(user_s + system_s, 3),
        "user_s": round(user_s, 3),
        "system_s": round(system_s, 3),
        "cpu_fraction_of_one_core": round(fraction, 3),
        "saturated": fraction > SATURATED_CPU_FRACTION,
        "event_loop": type(asyncio.get_running_loop()).__module__.split(".")[0],
        "loop_lag_ms": summarize(loop_lags),
        "send_schedule_lag_ms": summarize(ledger.schedule_lags),
    }
    return {"load_generator": generator, "server": server}


async def run(params: FanoutParams, server_pids: Sequence[int] = ()) -> dict[str, Any]:
    """Connect, write for warm-up + duration, drain, disconnect; return the report."""
    ledger = Ledger()
    specs = board_specs(params)
    connections: list[Connection] = []
    receivers: list[asyncio.Task[None]] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        try:
            connect_started = time.perf_counter()
            for i in range(0, len(specs), params.connect_batch):
                chunk = specs[i : i + params.connect_batch]
                batch = await asyncio.gather(
                    *(open_connection(session, params, board, wid) for board, wid in chunk)
                )
                connections += batch
                receivers += [asyncio.create_task(receive(c, ledger)) for c in batch]
            async with asyncio.timeout(30.0 + len(specs) / 50):
                await asyncio.gather(*(c.synced.wait() for c in connections))
            connect_s = time.perf_counter() - connect_started
            cpu = await drive(params, ledger, connections, server_pids)
            drain_until = time.perf_counter() + params.drain
            while ledger.observed_total < ledger.expected_total:
                if time.perf_counter() > drain_until:
                    break
                await asyncio.sleep(0.02)
        finally:
            ledger.closing = True
            for i in range(0, len(connections), params.connect_batch):
                chunk_of = connections[i : i + params.connect_batch]
                await asyncio.gather(*(c.ws.close() for c in chunk_of), return_exceptions=True)
            for task in receivers:
                task.cancel()
            await asyncio.gather(*receivers, return_exceptions=True)
    return {
        "benchmark": "fanout",
        "server_url": params.url,
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "parameters": asdict(params),
        "connections": len(connections),
        "connect_s": round(connect_s, 3),
        "latency_ms": summarize(ledger.latencies),
        "sends": ledger.sends,
        "expected_deliveries": ledger.expected,
        "observed_deliveries": ledger.observed,
        "lost": ledger.expected - ledger.observed,
        "duplicates": ledger.duplicates,
        "disconnects": ledger.disconnects,
        "errors": ledger.errors[:10],
        "updates_per_s": round(ledger.sends / params.duration, 1),
        "deliveries_per_s": round(ledger.observed / params.duration, 1),
        **cpu,
    }


def parse_args(argv: Sequence[str]) -> tuple[FanoutParams, argparse.Namespace]:
    """Read the command line into parameters and the run options."""
    parser = argparse.ArgumentParser(
        prog="python -m bench fanout", description="Fan-out latency of a y-websocket server."
    )
    parser.add_argument("--url", default="ws://127.0.0.1:8000/ws", help="base WebSocket URL")
    parser.add_argument("--boards", type=int, default=1)
    parser.add_argument("--clients", type=int, default=10, help="clients per board")
    parser.add_argument("--writers", type=int, default=1, help="writing clients per board")
    parser.add_argument("--rate", type=float, default=10.0, help="updates/s per writer")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds first")
    parser.add_argument("--drain", type=float, default=3.0, help="max seconds to await stragglers")
    parser.add_argument("--payload-bytes", type=int, default=32, help="value size of each edit")
    parser.add_argument("--connect-batch", type=int, default=50, help="connections opened at once")
    parser.add_argument("--board-prefix", default="fanout")
    parser.add_argument("--out", help="write the JSON report here (default: stdout)")
    parser.add_argument("--no-uvloop", action="store_true", help="use the default asyncio loop")
    parser.add_argument(
        "--server-pid",
        type=int,
        action="append",
        default=[],
        help="also report the CPU of this local server process and its children (repeatable)",
    )
    args = parser.parse_args(argv)
    if not 0 <= args.writers <= args.clients or args.rate <= 0 or args.clients < 1:
        parser.error("need 0 <= writers <= clients, clients >= 1 and rate > 0")
    params = FanoutParams(**{f.name: getattr(args, f.name) for f in fields(FanoutParams)})
    return params, args


def main(argv: Sequence[str]) -> int:
    """Run the benchmark from the command line; print a one-line summary to stderr."""
    params, options = parse_args(argv)
    runner: Any = asyncio.run
    if not options.no_uvloop:
        with contextlib.suppress(ImportError):
            import uvloop

            runner = uvloop.run
    report = runner(run(params, options.server_pid))
    text = json.dumps(report, indent=2)
    if options.out:
        with open(options.out, "w", encoding="utf-8") as file:
            file.write(text + "\n")
    else:
        print(text)
    latency = report["latency_ms"]
    generator = report["load_generator"]
    print(
        f"fanout {params.boards}x{params.clients} w{params.writers}@{params.rate:g}/s: "
        f"p50 {latency['p50']} p99 {latency['p99']} max {latency['max']} ms, "
        f"lost {report['lost']}/{report['expected_deliveries']}, "
        f"generator cpu {generator['cpu_fraction_of_one_core']:.0%}"
        + (" (SATURATED: results bound by the load generator)" if generator["saturated"] else ""),
        file=sys.stderr,
    )
    return 0
