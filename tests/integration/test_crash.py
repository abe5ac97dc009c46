"""Crashes while clients write: no acknowledged update may be lost.

Real processes on a real local Ray cluster: `boardcast serve` (and a second
`boardcast gateway`) as children, killed with SIGKILL mid-stream. Writers are
Python clients that ask for acknowledgements; an update counts as acknowledged
once the server said "persisted up to here" for it on the connection it was
sent on. After each crash every client reconnects, and a fresh reader must find
every acknowledged update.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest
from pycrdt import Map

from clients.provider import BoardClient
from tests.conftest import TIMEOUT_SCALE, wait_until
from tests.interop.servers import BoardcastProcess, gateway_process, serve_process
from tests.writers import BOARD, SteadyWriter

pytestmark = pytest.mark.ray


def host_pids(server: BoardcastProcess) -> list[dict[str, Any]]:
    """The board hosts behind a gateway, from its readiness endpoint."""
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/readyz", timeout=30) as reply:
        return list(json.load(reply)["hosts"])


def kill_process_tree(server: BoardcastProcess) -> int:
    """SIGKILL a server and every process it started (Ray's included); return the count."""
    process = server._process
    assert process is not None
    root = psutil.Process(process.pid)
    tree = [root, *root.children(recursive=True)]
    for member in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.send_signal(signal.SIGKILL)
    psutil.wait_procs(tree, timeout=10)
    server.kill()
    return len(tree)


async def read_board(url: str) -> set[str]:
    """Every task key a newcomer sees on the board."""
    async with BoardClient(url, BOARD, ack=False) as reader:
        await reader.synced(timeout=30 * TIMEOUT_SCALE)
        return set(reader.doc.get("tasks", type=Map).keys())


async def write_through(
    crash: Callable[[], Any], urls: Callable[[], str], *, seconds: float = 2.0
) -> list[SteadyWriter]:
    """Run three writers, crash something mid-stream, keep writing, then stop."""
    writers = [SteadyWriter(f"w{index}", urls) for index in range(3)]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(writer.run(stop)) for writer in writers]
    await asyncio.sleep(seconds)
    await crash()
    await wait_until(
        lambda: all(w.reconnects >= 1 for w in writers), timeout=60, message="reconnects"
    )
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.gather(*tasks)
    return writers


def assert_nothing_acknowledged_lost(writers: list[SteadyWriter], present: set[str]) -> None:
    acknowledged = set().union(*(w.acknowledged for w in writers))
    lost = acknowledged - present
    assert len(acknowledged) > 50, "the writers barely wrote: the test proves nothing"
    assert not lost, f"{len(lost)} acknowledged updates lost, e.g. {sorted(lost)[:5]}"


@pytest.fixture
def server(tmp_path: Path) -> Any:
    process = serve_process(tmp_path, "--hosts", "2")
    process.start()
    yield process
    with contextlib.suppress(Exception):
        kill_process_tree(process) if process.running else None


async def test_killing_a_board_host_loses_nothing_acknowledged(server: BoardcastProcess) -> None:
    async def crash() -> None:
        hosts = await asyncio.to_thread(host_pids, server)
        busy = [host for host in hosts if host["boards"]]
        assert busy, hosts
        os.kill(busy[0]["pid"], signal.SIGKILL)

    writers = await write_through(crash, lambda: server.url)
    assert_nothing_acknowledged_lost(writers, await read_board(server.url))


async def test_killing_a_gateway_loses_nothing_acknowledged(server: BoardcastProcess) -> None:
    assert server.ray_address is not None
    second = gateway_process(server.ray_address)
    await second.astart()
    use_second = True

    def url() -> str:
        return second.url if use_second else server.url

    async def crash() -> None:
        nonlocal use_second
        use_second = False
        await asyncio.to_thread(second.kill)

    writers = await write_through(crash, url)
    assert_nothing_acknowledged_lost(writers, await read_board(server.url))


async def test_killing_every_process_loses_nothing_acknowledged(
    server: BoardcastProcess,
) -> None:
    killed = 0

    async def crash() -> None:
        nonlocal killed
        killed = await asyncio.to_thread(kill_process_tree, server)
        await server.astart()

    writers = await write_through(crash, lambda: server.url)
    assert killed > 3  # the driver and Ray's own processes
    assert_nothing_acknowledged_lost(writers, await read_board(server.url))
