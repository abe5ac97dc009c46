"""A rolling replacement on one machine: every gateway, then every board host, replaced in turn.

The cluster of ``tests/cluster/nodes.py`` (a head and two worker nodes on loopback
addresses, each running ``boardcast serve``), plus one ``boardcast gateway`` process on
each worker node. Writers write through those gateways the whole time. First each
gateway is stopped (SIGTERM) and a new one started in its place, one after the other;
then each worker node's ``boardcast serve`` (its board host and its gateway), as an
upgrade replaces processes. Nothing acknowledged may be lost, and every writer must have
been moved at least once. The node-level rolling restart under load, with writers on the
head's gateway, is ``test_multinode.py``'s; this one adds the gateways the writers use.
"""

from __future__ import annotations

import asyncio
import urllib.error
import uuid
from collections.abc import Callable, Iterator

import pytest

from tests.cluster.nodes import LocalCluster, NodeProcess
from tests.cluster.test_multinode import (
    ACKS_AFTER,
    ACKS_BEFORE,
    assert_boards_kept_everything,
    boards_owned_by,
    host_on,
    hosts,
    write_and_read_on,
)
from tests.conftest import wait_until
from tests.services import TIMEOUT_SCALE
from tests.writers import SteadyWriter

pytestmark = [pytest.mark.ray, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """Head plus two worker nodes, each with Ray and `boardcast serve`."""
    data_dir = tmp_path_factory.mktemp("rolling-data")
    nodes = LocalCluster(data_dir, cluster_name=f"rr{uuid.uuid4().hex[:6]}")
    try:
        head = nodes.start_head()
        nodes.serve(head)
        nodes.add_node()
        nodes.add_node()
        yield nodes
    finally:
        nodes.stop()


async def until_ready(server: NodeProcess, timeout: float = 60.0) -> None:
    """Wait (bounded) until the gateway's /readyz answers 200; fail with its last reason."""
    deadline = asyncio.get_running_loop().time() + timeout * TIMEOUT_SCALE
    while True:
        try:
            await asyncio.to_thread(server.get_json, "/readyz")
            return
        except urllib.error.HTTPError as error:
            reason = error.read().decode(errors="replace")[:300]
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{server.url} not ready: {reason}") from None
        await asyncio.sleep(0.5)


def gateway_on(cluster: LocalCluster, ip: str) -> NodeProcess:
    """A `boardcast gateway` on node ``ip``, joined to the cluster (not started)."""
    assert cluster.head is not None
    env = {**cluster.env, "BOARDCAST_DATA_DIR": str(cluster.data_dir)}
    args = ["--address", cluster.head.address, "--node-ip", ip]
    return NodeProcess("gateway", ip, env, [*args, "--cluster-name", cluster.cluster_name])


def first_running(gateways: dict[str, NodeProcess], order: list[str]) -> Callable[[], str]:
    """The URL of the first gateway in ``order`` that runs now (a load balancer's pick).

    ``gateways`` is read at each pick, so a gateway replaced meanwhile is found.
    """

    def pick() -> str:
        for ip in order:
            if gateways[ip].running:
                return gateways[ip].url
        return gateways[order[0]].url

    return pick


async def test_gateways_then_hosts_replaced_one_at_a_time_lose_nothing(
    cluster: LocalCluster,
) -> None:
    head = cluster.head
    assert head is not None
    survivor = cluster.servers[head.ip]
    workers = [ip for ip in sorted(cluster.servers) if ip != head.ip]
    gateways = {ip: gateway_on(cluster, ip) for ip in workers}
    for gateway in gateways.values():
        await asyncio.to_thread(gateway.start)
    try:
        await until_ready(survivor)
        names = [h["name"] for h in hosts(survivor)]
        # A board on each worker's host, each written through the other worker's gateway.
        boards = [
            boards_owned_by(host_on(survivor, ip), names, 1, f"replaced-{ip}")[0] for ip in workers
        ]
        writers = []
        for board, ip in zip(boards, reversed(workers), strict=True):
            route = first_running(gateways, [ip, *(w for w in workers if w != ip)])
            writers.append(SteadyWriter(f"{board}-w", route, board=board, interval=0.05))
        stop = asyncio.Event()
        tasks = [asyncio.create_task(writer.run(stop)) for writer in writers]

        async def acknowledged_more(count: int, what: str) -> None:
            goal = {w.name: len(w.acknowledged) + count for w in writers}
            await wait_until(
                lambda: all(len(w.acknowledged) >= goal[w.name] for w in writers),
                timeout=90,
                message=f"acknowledged updates {what}",
            )

        try:
            await acknowledged_more(ACKS_BEFORE, "before the replacements")
            for ip in workers:
                old = gateways[ip]
                assert await asyncio.to_thread(old.stop) == 0, old.output_tail()
                gateways[ip] = gateway_on(cluster, ip)
                await asyncio.to_thread(gateways[ip].start)
                await acknowledged_more(ACKS_AFTER, f"after the gateway on {ip} was replaced")
            for ip in workers:
                server = cluster.servers[ip]
                assert await asyncio.to_thread(server.stop) == 0, server.output_tail()
                await asyncio.to_thread(server.start)
                await acknowledged_more(ACKS_AFTER, f"after the host on {ip} was replaced")
            stop.set()
            await asyncio.gather(*tasks)
        finally:
            stop.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        # Each writer went through a gateway that was replaced: moved at least once.
        assert all(writer.reconnects >= 1 for writer in writers)
        await assert_boards_kept_everything(cluster, writers, survivor.url)
        # Through every replaced gateway, a new board is written and read on another.
        for ip in workers:
            await write_and_read_on(cluster, gateways[ip].url, survivor.url, f"after-{ip}")
        # Every gateway that stayed up reports the replaced hosts ready again (a load
        # balancer would otherwise take it out of service).
        await until_ready(survivor)
        for ip in workers:
            await until_ready(gateways[ip])
    finally:
        for gateway in gateways.values():
            await asyncio.to_thread(gateway.stop)
