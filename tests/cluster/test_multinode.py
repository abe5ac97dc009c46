"""Boardcast on a multi-node Ray cluster: placement, a node joining, draining, and dying.

One Ray cluster for the module (tests/cluster/nodes.py): a head and two worker nodes on
their own loopback addresses, each running `boardcast serve --address HEAD` with one board
host pinned to it and a gateway on the node's address. The tests run in file order and
share it: boards spread over the nodes; a node added takes boards; a node drained with
SIGTERM hands its boards over; the worker nodes restarted one after the other under load
lose nothing; a node killed with SIGKILL while clients write has its boards served again by
the others, with nothing acknowledged lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from pycrdt import Map

from actors.directory import rendezvous_host
from clients.provider import BoardClient
from persistence.factory import SQLITE_FILENAME
from tests.cluster.nodes import LocalCluster, NodeProcess
from tests.conftest import wait_until
from tests.services import TIMEOUT_SCALE
from tests.writers import (
    SteadyWriter,
    acknowledged_keys,
    assert_nothing_lost,
    keys_in_sqlite,
    keys_seen_by_newcomer,
)

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]

ACKS_BEFORE = 20
ACKS_AFTER = 20


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """Head plus two worker nodes, each with Ray and `boardcast serve`."""
    data_dir = tmp_path_factory.mktemp("multinode-data")
    nodes = LocalCluster(data_dir, cluster_name=f"mn{uuid.uuid4().hex[:6]}")
    try:
        head = nodes.start_head()
        nodes.serve(head)
        nodes.add_node()
        nodes.add_node()
        yield nodes
    finally:
        nodes.stop()


def hosts(server: NodeProcess) -> list[dict[str, Any]]:
    """The board hosts a gateway sees, with their node, endpoint and boards."""
    return list(server.get_json("/readyz")["hosts"])


def host_on(server: NodeProcess, ip: str) -> str:
    """The name of the (one) board host on node ``ip``."""
    names = [h["name"] for h in hosts(server) if h["node_ip"] == ip]
    assert len(names) == 1, hosts(server)
    return str(names[0])


def boards_owned_by(host_name: str, host_names: list[str], count: int, prefix: str) -> list[str]:
    """``count`` board ids that placement puts on ``host_name``."""
    found: list[str] = []
    index = 0
    while len(found) < count:
        board = f"{prefix}-{index}"
        if rendezvous_host(board, host_names) == host_name:
            found.append(board)
        index += 1
    return found


async def write_and_read(writer_url: str, reader_url: str, board: str, key: str) -> None:
    """Write ``key`` through one gateway; a client on another gateway must see it."""
    async with BoardClient(writer_url, board) as writer, BoardClient(reader_url, board) as reader:
        await writer.synced(timeout=30 * TIMEOUT_SCALE)
        await reader.synced(timeout=30 * TIMEOUT_SCALE)
        writer.doc.get("tasks", type=Map)[key] = 1
        await writer.persisted(timeout=30 * TIMEOUT_SCALE)
        tasks = reader.doc.get("tasks", type=Map)
        await wait_until(lambda: key in tasks, timeout=30, message=f"{key} seen on {reader_url}")


async def write_and_read_on(cluster: LocalCluster, writer: str, reader: str, board: str) -> None:
    """:func:`write_and_read`, with every node's output in the failure."""
    try:
        await write_and_read(writer, reader, board, f"{board}-key")
    except Exception as exc:
        tails = "\n".join(f"--- {ip}\n{s.output_tail(25)}" for ip, s in cluster.servers.items())
        raise AssertionError(f"{board} through {writer} and {reader}: {exc!r}\n{tails}") from exc


def first_server(cluster: LocalCluster) -> NodeProcess:
    """Any running gateway."""
    return next(iter(cluster.servers.values()))


async def test_hosts_advertise_their_node_and_boards_spread_over_the_nodes(
    cluster: LocalCluster,
) -> None:
    server = first_server(cluster)
    seen = hosts(server)
    ips = sorted(cluster.servers)
    # One host per node, each reachable at its own node's address, never 127.0.0.1.
    assert sorted(h["node_ip"] for h in seen) == ips
    for host in seen:
        assert host["endpoint"][0] == host["node_ip"], host
    # Every gateway serves every board: a client on each gateway sees the others' edits,
    # whichever node the board lives on.
    servers = list(cluster.servers.values())
    boards = [f"spread-{index}" for index in range(9)]
    for index, board in enumerate(boards):
        writer, reader = servers[index % 3], servers[(index + 1) % 3]
        await write_and_read_on(cluster, writer.url, reader.url, board)
    placed = {h["name"]: set(h["board_ids"]) & set(boards) for h in hosts(server)}
    assert sum(len(b) for b in placed.values()) == len(boards), placed
    assert sum(1 for b in placed.values() if b) >= 2, f"boards did not spread: {placed}"


async def test_a_joining_node_takes_boards(cluster: LocalCluster) -> None:
    ip = await asyncio.to_thread(cluster.add_node)
    server = cluster.servers[ip]
    new_host = host_on(server, ip)
    names = [h["name"] for h in hosts(server)]
    # Boards the new membership places on the new node open there, from any gateway.
    boards = boards_owned_by(new_host, names, 3, "joined")
    other = next(s for s in cluster.servers.values() if s is not server)
    for board in boards:
        await write_and_read_on(cluster, other.url, server.url, board)
    on_new = next(h for h in hosts(other) if h["name"] == new_host)
    assert set(boards) <= set(on_new["board_ids"]), on_new


async def writers_through_a_crash(
    cluster: LocalCluster, boards: list[str], survivor: NodeProcess, event: Any
) -> tuple[list[SteadyWriter], set[str]]:
    """Writers on ``boards`` (each through the survivor's gateway) across ``event()``.

    Returns the writers and the keys acknowledged before the event.
    """
    writers = [
        SteadyWriter(f"{board}-w", lambda: survivor.url, board=board, interval=0.05)
        for board in boards
    ]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(writer.run(stop)) for writer in writers]
    try:
        await wait_until(
            lambda: all(len(w.acknowledged) >= ACKS_BEFORE for w in writers),
            timeout=60,
            message="acknowledged updates before the event",
        )
        before = acknowledged_keys(writers)
        await event()
        more = {w.name: len(w.acknowledged) + ACKS_AFTER for w in writers}
        await wait_until(
            lambda: all(len(w.acknowledged) >= more[w.name] for w in writers),
            timeout=90,
            message="acknowledged updates after the event",
        )
        stop.set()
        await asyncio.gather(*tasks)
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return writers, before


async def assert_boards_kept_everything(
    cluster: LocalCluster, writers: list[SteadyWriter], url: str
) -> None:
    """Every acknowledged key is in the store and reaches a newcomer, for every board."""
    store = cluster.data_dir / SQLITE_FILENAME
    for writer in writers:
        board = writer._board
        assert writer.reconnects >= 1, f"{writer.name} was never moved"
        acknowledged = set(writer.acknowledged)
        assert_nothing_lost(acknowledged, await keys_in_sqlite(store, board), f"in {board}")
        seen = await keys_seen_by_newcomer(url, board)
        assert_nothing_lost(acknowledged, seen, f"for a newcomer on {board}")


async def test_a_drained_node_hands_its_boards_over_without_loss(cluster: LocalCluster) -> None:
    ips = sorted(cluster.servers)
    head = cluster.head
    assert head is not None
    leaving_ip = next(ip for ip in reversed(ips) if ip != head.ip)
    leaving = cluster.servers[leaving_ip]
    survivor = cluster.servers[head.ip]
    leaving_host = host_on(survivor, leaving_ip)
    names = [h["name"] for h in hosts(survivor)]
    boards = boards_owned_by(leaving_host, names, 2, "drained")

    async def drain() -> None:
        started = time.monotonic()
        code = await asyncio.to_thread(leaving.stop)
        assert code == 0, leaving.output_tail()
        del cluster.servers[leaving_ip]
        print(f"drained in {time.monotonic() - started:.1f} s")

    writers, _ = await writers_through_a_crash(cluster, boards, survivor, drain)
    await assert_boards_kept_everything(cluster, writers, survivor.url)
    assert all(h["name"] != leaving_host for h in hosts(survivor))
    assert any("handed" in line for line in leaving.output), leaving.output_tail()


async def test_a_rolling_restart_of_the_worker_nodes_loses_nothing(cluster: LocalCluster) -> None:
    head = cluster.head
    assert head is not None
    survivor = cluster.servers[head.ip]
    workers = [ip for ip in sorted(cluster.servers) if ip != head.ip]
    names = [h["name"] for h in hosts(survivor)]
    # One board on each worker node's host.
    boards = [boards_owned_by(host_on(survivor, ip), names, 1, f"rolled-{ip}")[0] for ip in workers]

    async def roll() -> None:
        for ip in workers:
            server = cluster.servers[ip]
            code = await asyncio.to_thread(server.stop)
            assert code == 0, server.output_tail()
            await asyncio.to_thread(server.start)

    writers, _ = await writers_through_a_crash(cluster, boards, survivor, roll)
    await assert_boards_kept_everything(cluster, writers, survivor.url)
    assert sorted(h["node_ip"] for h in hosts(survivor)) == sorted(cluster.servers)


async def test_a_killed_node_boards_serve_again_and_nothing_acknowledged_is_lost(
    cluster: LocalCluster,
) -> None:
    head = cluster.head
    assert head is not None
    victim_ip = next(ip for ip in sorted(cluster.servers) if ip != head.ip)
    survivor = cluster.servers[head.ip]
    victim_host = host_on(survivor, victim_ip)
    names = [h["name"] for h in hosts(survivor)]
    boards = boards_owned_by(victim_host, names, 2, "killed")

    async def kill() -> None:
        killed = cluster.kill_node(victim_ip)
        assert killed >= 3, "the node's processes were not all found"

    writers, _ = await writers_through_a_crash(cluster, boards, survivor, kill)
    await assert_boards_kept_everything(cluster, writers, survivor.url)
    assert all(h["name"] != victim_host for h in hosts(survivor))


def test_sigterm_to_every_process_of_a_node_stops_it(cluster: LocalCluster) -> None:
    """systemd's KillMode=control-group: the serve process and Ray's get SIGTERM at once."""
    ip = cluster.add_node()
    server = cluster.servers.pop(ip)
    node = cluster.ray_nodes.pop(ip)
    roots = [server.pid(), node._process.pid if node._process is not None else None]
    tree = []
    for pid in roots:
        assert pid is not None
        root = psutil.Process(pid)
        tree += [root, *root.children(recursive=True)]
    started = time.monotonic()
    for member in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.send_signal(signal.SIGTERM)
    code = server._process.wait(60 * TIMEOUT_SCALE) if server._process is not None else None
    print(f"stopped in {time.monotonic() - started:.1f} s")
    node.kill()
    assert code == 0, server.output_tail()


def data_file(cluster: LocalCluster) -> Path:
    """The shared embedded store of the test cluster."""
    return cluster.data_dir / SQLITE_FILENAME
