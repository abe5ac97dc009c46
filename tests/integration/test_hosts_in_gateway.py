"""Board hosts in the gateway's own process (``--hosts-in-gateway``), on a real Ray cluster.

Real processes: `boardcast serve --hosts-in-gateway` and a second `boardcast gateway`
joining its Ray cluster. The hosts must really run in the serving process, serve a
second gateway's clients over frame streams and its REST transactions and stats over
control links, and lose nothing acknowledged when the process holding them is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from pycrdt import Map

from clients.provider import BoardClient
from tests.conftest import wait_until
from tests.integration.test_crash import (
    assert_nothing_acknowledged_lost,
    assert_the_check_sees_lost_commits,
    crash_while_writing,
    host_pids,
    kill_process_tree,
)
from tests.interop.servers import BoardcastProcess, gateway_process, serve_process


def http_url(server: BoardcastProcess) -> str:
    return f"http://127.0.0.1:{server.port}"


async def link_gauges(server: BoardcastProcess) -> tuple[float, float]:
    """The gateway's host links, and how many of them are in-process (no socket)."""
    async with aiohttp.ClientSession() as http, http.get(f"{http_url(server)}/metrics") as got:
        text = await got.text()
    values = {
        line.split()[0]: float(line.split()[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    return (
        values["boardcast_gateway_host_links"],
        values["boardcast_gateway_in_process_links"],
    )


def serving_pid(server: BoardcastProcess) -> int:
    assert server._process is not None
    return server._process.pid


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[BoardcastProcess]:
    # No compaction: the test of the crash check deletes the newest log rows.
    monkeypatch.setenv("BOARDCAST_SNAPSHOT_EVERY", "1000000")
    process = serve_process(tmp_path / "data", "--hosts", "2", "--hosts-in-gateway")
    process.start()
    yield process
    with contextlib.suppress(Exception):
        kill_process_tree(process) if process.running else None


@pytest.mark.ray
async def test_the_hosts_run_in_the_serving_process_and_serve_its_clients(
    server: BoardcastProcess,
) -> None:
    hosts = await asyncio.to_thread(host_pids, server)
    assert len(hosts) == 2
    assert {host["pid"] for host in hosts} == {serving_pid(server)}
    async with BoardClient(server.url, "local") as writer:
        await writer.synced()
        writer.doc.get("tasks", type=Map)["t1"] = 1
        await writer.persisted()
        # The gateway reached its own hosts without a socket.
        links, in_process = await link_gauges(server)
        assert links >= 1 and in_process == links
    async with BoardClient(server.url, "local") as reader:
        await wait_until(lambda: "t1" in reader.doc.get("tasks", type=Map))


@pytest.mark.ray
async def test_a_second_gateway_reaches_in_gateway_hosts_for_frames_rest_and_stats(
    server: BoardcastProcess,
) -> None:
    assert server.ray_address is not None
    second = gateway_process(server.ray_address)
    await second.astart()
    try:
        # Stats of hosts without a Ray actor: asked over control links.
        hosts = await asyncio.to_thread(host_pids, second)
        assert {host["pid"] for host in hosts} == {serving_pid(server)}
        async with BoardClient(server.url, "shared") as watcher:
            await watcher.synced()
            async with aiohttp.ClientSession(http_url(second)) as http:
                # A REST transaction from the second gateway runs on the first one's host.
                async with http.post(
                    "/v1/boards/shared/tasks", json={"title": "from REST", "column": "c"}
                ) as response:
                    assert response.status == 201, await response.text()
                    task = await response.json()
                async with http.get(f"/v1/boards/shared/tasks/{task['id']}") as response:
                    assert (await response.json())["title"] == "from REST"
            await wait_until(lambda: task["id"] in watcher.doc.get("tasks", type=Map))
            # A WebSocket client of the second gateway edits over a frame stream.
            async with BoardClient(second.url, "shared") as remote:
                await wait_until(lambda: task["id"] in remote.doc.get("tasks", type=Map))
                remote.doc.get("tasks", type=Map)["t2"] = 2
                await remote.persisted()
                # Hosts of another process: over the socket.
                links, in_process = await link_gauges(second)
                assert links >= 1 and in_process == 0
            await wait_until(lambda: "t2" in watcher.doc.get("tasks", type=Map))
    finally:
        await second.astop()


@pytest.mark.ray
async def test_killing_the_process_that_holds_the_hosts_loses_nothing_acknowledged(
    server: BoardcastProcess, tmp_path: Path
) -> None:
    pid = serving_pid(server)
    hosts = await asyncio.to_thread(host_pids, server)
    assert {host["pid"] for host in hosts} == {pid}

    async def crash() -> None:
        await asyncio.to_thread(kill_process_tree, server)

    run = await crash_while_writing(
        crash, lambda: server.url, tmp_path / "data", recover=server.astart
    )
    assert_nothing_acknowledged_lost(run)
    await assert_the_check_sees_lost_commits(run)
