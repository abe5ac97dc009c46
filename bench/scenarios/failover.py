"""failover: SIGKILL every process of a worker node while clients write; what comes back.

Boardcast only, on a multi-node Ray cluster that the scenario starts itself on this machine
(tests/cluster/nodes.py: a head and two worker nodes, each at its own loopback address with
its own Ray and `boardcast serve`, gateways included). Stock clients spread over the three
gateways; the first of each board writes at ``rate``. Beside them, a durable writer per board
(tests/writers.py) counts what the server acknowledged as stored. At ``kill_after`` seconds
into the window every process of the second worker node gets SIGKILL (by pid), and the
clients that were on its gateway are sent to the surviving gateways, as a load balancer
would. Per board that was cut off:

* ``serving_again_s``: first delivery of an update made after the kill, minus the kill time;
* ``resynced_s``: when every client of the board had synced again.

Over the run: ``lost`` (measured deliveries that never arrived, after a drain),
``lost_acknowledged`` (keys the durable writers had acknowledged that the store no longer
holds: must be 0), and ``converged`` (boards whose fresh reader, on a surviving gateway, holds
exactly what their writing client holds).
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pycrdt

from bench.client import Behaviour, StockClient
from bench.ledger import Ledger
from bench.scenarios.base import (
    Measured,
    Pool,
    RunContext,
    client_session,
    process_cpu_s,
    watch_loop_lag,
)
from bench.scenarios.fanout import board_names
from bench.scenarios.host_crash import drained, start_writing
from bench.stats import summarize_ms
from clients.provider import BoardClient
from persistence.factory import SQLITE_FILENAME
from tests.cluster.nodes import LocalCluster, NodeProcess
from tests.writers import SteadyWriter, acknowledged_keys, keys_in_sqlite

FAILOVER: dict[str, Any] = {
    "boards": 12,
    "clients_per_board": 3,
    "writers": 1,
    "rate": 5.0,
    "duration": 30.0,
    "warmup": 2.0,
    "kill_after": 10.0,
    "drain": 20.0,
    "awareness": True,
}
# One durable write per board every this many seconds, acknowledged once stored.
ACKED_WRITE_INTERVAL_S = 0.2
READER_TIMEOUT_S = 20.0


class Gateways:
    """The cluster's gateway URLs; after a node is gone, only the survivors'."""

    def __init__(self, servers: list[NodeProcess]) -> None:
        self.servers = list(servers)
        self._turn = 0

    def alive(self) -> list[str]:
        """The URL of every gateway still up, head first."""
        return [server.url for server in self.servers]

    def next(self) -> str:
        """The next live gateway, round robin."""
        urls = self.alive()
        self._turn += 1
        return urls[self._turn % len(urls)]

    def lose(self, server: NodeProcess) -> None:
        """Take a dead node's gateway out of the rotation."""
        self.servers = [s for s in self.servers if s is not server]


@contextlib.contextmanager
def three_nodes(data_dir: Path) -> Iterator[LocalCluster]:
    """A head and two worker nodes, each with Ray and `boardcast serve`; stopped by pid."""
    cluster = LocalCluster(data_dir, cluster_name=f"bench{uuid.uuid4().hex[:6]}")
    try:
        head = cluster.start_head()
        cluster.serve(head)
        cluster.add_node()
        cluster.add_node()
        yield cluster
    finally:
        cluster.stop()


def host_of_each_board(server: NodeProcess, boards: list[str]) -> dict[str, str]:
    """Which node's IP each board's host is on, as placement puts it now."""
    from actors.directory import rendezvous_host

    hosts = list(server.get_json("/readyz")["hosts"])
    names = [h["name"] for h in hosts]
    node_of = {h["name"]: h["node_ip"] for h in hosts}
    return {board: node_of[rendezvous_host(board, names)] for board in boards}


async def bench_keys(url: str, board: str) -> set[str] | None:
    """The ``bench`` map keys a fresh reader of ``board`` receives, or None if it cannot."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(READER_TIMEOUT_S):
            async with BoardClient(url, board, ack=False) as reader:
                await reader.synced(timeout=READER_TIMEOUT_S)
                return set(reader.doc.get("bench", type=pycrdt.Map).keys())
    return None


def recovery_per_board(
    clients: list[StockClient], ledger: Ledger, killed_at: float
) -> dict[str, dict[str, Any]]:
    """Per board with a client cut off by the kill: when it served again, when all resynced.

    ``serving_again_s``: the first delivery of an update made after the kill;
    ``resynced_s``: when the last of the board's cut-off clients had synced again.
    """
    receipts = ledger.receipts or {}
    recovery: dict[str, dict[str, Any]] = {}
    for board in sorted({client.board for client in clients}):
        cut = [
            client
            for client in clients
            if client.board == board and any(t >= killed_at for t in client.disconnected_at)
        ]
        if not cut:
            continue
        after = [got for made, got in receipts.get(board, []) if made >= killed_at]
        again = [
            min((done for started, done in client.syncs if started >= killed_at), default=None)
            for client in cut
        ]
        recovery[board] = {
            "clients_cut_off": len(cut),
            "serving_again_s": round(min(after) - killed_at, 3) if after else None,
            "resynced_s": None
            if None in again
            else round(max(t for t in again if t is not None) - killed_at, 3),
        }
    return recovery


def written_keys(client: StockClient) -> set[str]:
    """The ``bench`` map keys a writing client's document holds."""
    assert client.doc is not None
    return set(client.doc.get("bench", type=pycrdt.Map).keys())


async def failover(ctx: RunContext) -> Measured:
    """Kill a worker node (every process, SIGKILL) in the middle of a fan-out run."""
    with tempfile.TemporaryDirectory(prefix="bench-failover-") as data:
        cluster_cm = three_nodes(Path(data))
        cluster = await asyncio.to_thread(cluster_cm.__enter__)
        try:
            measured = await _run(ctx, cluster)
        finally:
            await asyncio.to_thread(cluster_cm.__exit__, None, None, None)
        # The store outlives the cluster: what it holds now is what a restart would load.
        store_file = Path(data) / SQLITE_FILENAME
        acked = measured.details.pop("_acknowledged")
        stored: set[str] = set()
        for board in measured.details["boards"]:
            stored |= await keys_in_sqlite(store_file, board)
        missing = acked - stored
        measured.details["acknowledged_updates"] = len(acked)
        measured.details["lost_acknowledged"] = len(missing)
        measured.details["lost_acknowledged_examples"] = sorted(missing)[:5]
        return measured


async def _run(ctx: RunContext, cluster: LocalCluster) -> Measured:
    params = ctx.params
    servers = [cluster.servers[ip] for ip in sorted(cluster.servers)]
    head, victim = servers[0], servers[-1]
    gateways = Gateways(servers)
    boards = board_names("failover", int(params["boards"]))
    placed = await asyncio.to_thread(host_of_each_board, head, boards)
    ledger = Ledger(receipts={})
    behaviour = Behaviour(awareness=bool(params["awareness"]))
    per_board = int(params["clients_per_board"])
    async with client_session() as session:
        ctx.url = head.url
        pool = Pool(ctx, session, ledger, behaviour)
        writer_ids = iter(range(1_000_000))
        clients: list[StockClient] = []
        for number, board in enumerate(boards):
            for index in range(per_board):
                client = pool.make(
                    board, next(writer_ids) if index < int(params["writers"]) else None
                )
                # Spread over the gateways: a board's clients on different nodes.
                gateway = servers[(number + index) % len(servers)]
                client.url = ctx.wire.socket_url(gateway.url, board)
                clients.append(client)
        durable = [
            SteadyWriter(f"acked{n}", gateways.next, interval=ACKED_WRITE_INTERVAL_S, board=b)
            for n, b in enumerate(boards)
        ]
        stop_durable = asyncio.Event()
        lags: list[float] = []
        watcher = asyncio.create_task(watch_loop_lag(lags))
        durable_tasks: list[asyncio.Task[None]] = []
        try:
            await pool.open(clients)
            durable_tasks = [asyncio.create_task(w.run(stop_durable)) for w in durable]
            writers = start_writing(clients, ledger, params)
            await asyncio.sleep(max(0.0, ledger.measure_start - time.monotonic()))
            lags.clear()
            cpu_before, window_start = process_cpu_s(), time.monotonic()
            await asyncio.sleep(float(params["kill_after"]))
            # The load balancer takes the node's gateway out at the moment it dies (a
            # real one needs a health check or two): its clients reconnect to the others.
            gateways.lose(victim)
            for client in clients:
                if client.url.startswith(victim.url + "/"):
                    client.url = ctx.wire.socket_url(gateways.next(), client.board)
            killed_at = time.monotonic()
            killed = await asyncio.to_thread(cluster.kill_node, victim.ip)
            await asyncio.gather(*writers)
            await asyncio.sleep(max(0.0, ledger.measure_end - time.monotonic()))
            window = (window_start, time.monotonic())
            loadgen_cpu = process_cpu_s() - cpu_before
            await drained(ledger, float(params["drain"]))
            stop_durable.set()
            await asyncio.gather(*durable_tasks, return_exceptions=True)
            readers = await asyncio.gather(*(bench_keys(gateways.next(), b) for b in boards))
            writing = {c.board: c for c in clients if c.writer_id is not None}
            converged = sum(
                1
                for board, seen in zip(boards, readers, strict=True)
                if seen is not None and seen == written_keys(writing[board])
            )
        finally:
            watcher.cancel()
            stop_durable.set()
            await asyncio.gather(*durable_tasks, return_exceptions=True)
            await pool.close()
    recovery = recovery_per_board(clients, ledger, killed_at)
    serving = [r["serving_again_s"] for r in recovery.values()]
    resynced = [r["resynced_s"] for r in recovery.values()]
    on_victim = [board for board, ip in placed.items() if ip == victim.ip]
    for board, figures in recovery.items():
        figures["host_on_killed_node"] = board in on_victim
    return Measured(
        latencies_s=list(ledger.delivery_latency),
        window=window,
        loadgen_cpu_s=loadgen_cpu,
        lost=ledger.lost,
        loop_lag_s=lags,
        timeline=(list(ledger.delivery_sent_at), list(ledger.delivery_latency)),
        details={
            "nodes": len(servers),
            "killed_node": victim.ip,
            "processes_killed": killed,
            "boards": boards,
            "boards_on_killed_node": len(on_victim),
            "boards_cut_off": len(recovery),
            "boards_whose_host_died_serving_again_ms": summarize_ms(
                [
                    r["serving_again_s"]
                    for r in recovery.values()
                    if r["host_on_killed_node"] and r["serving_again_s"] is not None
                ]
            ),
            "boards_never_serving_again": sum(1 for s in serving if s is None),
            "serving_again_ms": summarize_ms([s for s in serving if s is not None]),
            "all_clients_resynced_ms": summarize_ms([r for r in resynced if r is not None]),
            "per_board": recovery,
            # First opens of every client on the fresh cluster (read model on: each
            # host writes the store's task index when it loads a board).
            "first_open_ms": summarize_ms(
                [c.first_sync_s for c in clients if c.first_sync_s is not None]
            ),
            "converged": converged,
            "durable_writer_reconnects": sum(w.reconnects for w in durable),
            "_acknowledged": acknowledged_keys(durable),
            "sends": ledger.sends,
            "expected_deliveries": ledger.expected,
            "observed_deliveries": ledger.observed,
            "observed_via_resync": ledger.observed_via_resync,
            "duplicates": ledger.duplicates,
            **pool.report(),
        },
    )
