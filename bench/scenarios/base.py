"""What every scenario gets (a running target) and returns (measurements)."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from bench.client import Behaviour, Counters, StockClient
from bench.ledger import Ledger
from bench.profiling import Profiler
from bench.stats import summarize_ms
from bench.targets import Sampler, ServerProcess
from bench.wire import Wire, wire_for

# Above this share of one core, the load generator itself may be what limits the figures.
LOADGEN_BOUND_CPU = 0.8
# ...or when its own event-loop lag (p99) is most of the measured latency p99.
LOADGEN_BOUND_LAG_SHARE = 0.8
CONNECT_BATCH = 50


@dataclass
class RunContext:
    """A started target, its sampler, and the parameters of this run."""

    url: str
    wire_name: str
    params: dict[str, Any]
    server: ServerProcess | None = None
    samples_path: Path | None = None
    sampler: Sampler | None = None
    profile_dir: Path | None = None
    profiles: list[dict[str, Any]] = field(default_factory=list)
    _profiler: Profiler | None = field(default=None, init=False, repr=False)

    @classmethod
    def for_server(
        cls, server: ServerProcess, samples_path: Path, params: dict[str, Any]
    ) -> RunContext:
        """A context for a target the bench started itself."""
        return cls(
            url=server.url,
            wire_name=server.target.wire,
            params=params,
            server=server,
            samples_path=samples_path,
        )

    @property
    def wire(self) -> Wire:
        """How this target frames messages."""
        return wire_for(self.wire_name)

    @property
    def http_url(self) -> str:
        """The server's HTTP base URL (same host and port as the WebSocket URL)."""
        return f"http://{urlsplit(self.url).netloc}"

    def start_sampler(self) -> None:
        """Watch the current server process."""
        if self.server is not None and self.samples_path is not None:
            self.sampler = Sampler(self.server.pid, self.samples_path)

    def stop_sampler(self) -> None:
        """Stop watching."""
        if self.sampler is not None:
            self.sampler.stop()
            self.sampler = None

    def window_started(self) -> None:
        """The measured window begins: start py-spy if profiling was asked for."""
        if self.profile_dir is not None and self.server is not None:
            self._profiler = Profiler(self.server.pid, self.profile_dir)
            self._profiler.start()

    async def window_ended(self) -> None:
        """The measured window is over: stop py-spy and keep its summaries."""
        if self._profiler is not None:
            self.profiles = await asyncio.to_thread(self._profiler.stop)
            self._profiler = None

    async def restart_server(self) -> float:
        """Stop the server cleanly and start it again on the same data; return seconds taken."""
        if self.server is None:
            raise RuntimeError("this scenario restarts the server: run it with `bench run`")
        started = time.monotonic()
        self.stop_sampler()
        await asyncio.to_thread(self.server.stop)
        await asyncio.to_thread(self.server.start)
        self.start_sampler()
        return time.monotonic() - started


@dataclass
class Measured:
    """What a scenario observed; the runner adds the server's CPU and memory."""

    latencies_s: list[float]
    window: tuple[float, float]
    loadgen_cpu_s: float
    lost: int | None
    details: dict[str, Any] = field(default_factory=dict)
    # (send time, latency) pairs for the latency-over-time plot.
    timeline: tuple[list[float], list[float]] = field(default_factory=lambda: ([], []))
    loop_lag_s: list[float] = field(default_factory=list)

    def loadgen_report(self) -> dict[str, Any]:
        """CPU of the load generator over the window, and whether it may be the limit."""
        seconds = max(self.window[1] - self.window[0], 1e-9)
        fraction = self.loadgen_cpu_s / seconds
        lag = summarize_ms(self.loop_lag_s)
        latency = summarize_ms(self.latencies_s)
        lag_dominates = bool(
            lag["p99"] is not None
            and latency["p99"]
            and lag["p99"] >= LOADGEN_BOUND_LAG_SHARE * latency["p99"]
        )
        return {
            "loadgen_cpu_s": round(self.loadgen_cpu_s, 3),
            "loadgen_cpu_fraction": round(fraction, 3),
            "loadgen_loop_lag_ms": lag,
            "loadgen_bound": fraction > LOADGEN_BOUND_CPU or lag_dominates,
        }


def process_cpu_s() -> float:
    """CPU seconds (user + system) used by this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def watch_loop_lag(lags: list[float], period: float = 0.01) -> None:
    """Record how late a short sleep wakes up: the load generator's own queueing delay."""
    while True:
        before = time.monotonic()
        await asyncio.sleep(period)
        lags.append(time.monotonic() - before - period)


@contextlib.asynccontextmanager
async def client_session() -> AsyncIterator[aiohttp.ClientSession]:
    """An aiohttp session with no connection limit."""
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        yield session


class Pool:
    """Clients of one run: opens them in batches, waits for sync, closes them all."""

    def __init__(
        self, ctx: RunContext, session: aiohttp.ClientSession, ledger: Ledger, behaviour: Behaviour
    ) -> None:
        self.ctx = ctx
        self.session = session
        self.ledger = ledger
        self.behaviour = behaviour
        self.counters = Counters()
        self.wire = ctx.wire
        self.clients: list[StockClient] = []
        self.tasks: list[asyncio.Task[None]] = []

    def make(self, board: str, writer_id: int | None = None) -> StockClient:
        """A client of ``board`` (not connected yet)."""
        return StockClient(
            session=self.session,
            wire=self.wire,
            base_url=self.ctx.url,
            board=board,
            ledger=self.ledger,
            counters=self.counters,
            behaviour=self.behaviour,
            writer_id=writer_id,
        )

    async def open(
        self, clients: Iterable[StockClient], *, batch: int = CONNECT_BATCH, timeout: float = 60.0
    ) -> float:
        """Connect ``clients`` ``batch`` at a time, wait until all synced; return seconds."""
        started = time.monotonic()
        todo = list(clients)
        for index in range(0, len(todo), batch):
            chunk = todo[index : index + batch]
            self.clients += chunk
            self.tasks += [asyncio.create_task(c.run()) for c in chunk]
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await asyncio.gather(*(c.opened.wait() for c in chunk))
        await self.wait_synced(todo, timeout=timeout + len(todo) / 20)
        return time.monotonic() - started

    async def wait_synced(self, clients: list[StockClient], *, timeout: float) -> None:
        """Wait (bounded) until every client finished its first sync or gave up."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await asyncio.gather(*(c.settled.wait() for c in clients))

    async def close(self) -> None:
        """Close every client (in batches) and end their tasks."""
        for index in range(0, len(self.clients), CONNECT_BATCH * 4):
            chunk = self.clients[index : index + CONNECT_BATCH * 4]
            await asyncio.gather(*(c.close() for c in chunk), return_exceptions=True)
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    def report(self) -> dict[str, Any]:
        """Connection and awareness counts."""
        counters = self.counters
        return {
            "connections": len(self.clients),
            "unsynced": sum(1 for c in self.clients if not c.syncs),
            "connects": counters.connects,
            "connect_failures": counters.connect_failures,
            "disconnects": counters.disconnects,
            "silence_closes": counters.silence_closes,
            "close_codes": {str(code): n for code, n in counters.close_codes.most_common()},
            "awareness_frames_in": counters.awareness_in,
            "awareness_frames_out": counters.awareness_out,
            "frames_in": counters.frames_in,
            "bytes_in": counters.bytes_in,
            "errors": counters.errors[:10],
        }


async def measure_window(
    body: Callable[[], Awaitable[None]],
) -> tuple[tuple[float, float], float]:
    """Run ``body``; return its (start, end) on the shared clock and this process's CPU."""
    cpu_before, start = process_cpu_s(), time.monotonic()
    await body()
    return (start, time.monotonic()), process_cpu_s() - cpu_before
