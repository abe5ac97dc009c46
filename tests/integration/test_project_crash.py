"""A project document survives a SIGKILL of its host with every acknowledged change.

Real processes: ``boardcast serve`` as a child. A writer adds members to one project
and renames it through REST, one request at a time; a change counts as acknowledged
once its 2xx answer arrived (the answer comes once the change is durable). The
project's host is then killed with SIGKILL mid-stream: with in-process hosts that is
the whole server (restarted on the same data directory), on Ray the one board host
that serves the project's document (Ray restarts it). Afterwards the project must
hold every acknowledged member, and a name no older than the last acknowledged one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from actors.directory import rendezvous_host
from crdt.project_doc import project_doc_id
from tests.conftest import wait_until
from tests.integration.test_crash import host_pids, kill_process_tree
from tests.interop.servers import BoardcastProcess, serve_process

ACKS_BEFORE = 30
ACKS_AFTER = 10


@dataclass
class ProjectWriter:
    """Adds members ``u0``, ``u1``... and renames the project every fifth change."""

    base: str
    project: str
    members: list[str] = field(default_factory=list)  # acknowledged
    names: list[str] = field(default_factory=list)  # renames sent, in order
    acknowledged_name: int = -1  # index in ``names`` of the last acknowledged rename
    failures: int = 0

    async def run(self, stop: asyncio.Event) -> None:
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            step = 0
            while not stop.is_set():
                try:
                    if step % 5 == 4:
                        self.names.append(f"Launch {step}")
                        sent = len(self.names) - 1
                        path = f"{self.base}/v1/projects/{self.project}"
                        async with http.patch(path, json={"name": self.names[sent]}) as answer:
                            if answer.status == 200:
                                self.acknowledged_name = sent
                    else:
                        user = f"u{step}"
                        path = f"{self.base}/v1/projects/{self.project}/members/{user}"
                        async with http.put(path, json={"role": "editor"}) as answer:
                            if answer.status == 200:
                                self.members.append(user)
                    step += 1
                except (aiohttp.ClientError, TimeoutError):
                    self.failures += 1  # the server is down: try the same change again
                    await asyncio.sleep(0.1)


async def _write_through_a_crash(
    server: BoardcastProcess, crash: Callable[[str], Awaitable[None]]
) -> ProjectWriter:
    base = f"http://127.0.0.1:{server.port}"
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base}/v1/projects", json={"name": "Launch"}) as answer:
            assert answer.status == 201, await answer.text()
            project = (await answer.json())["id"]
    writer = ProjectWriter(base, project)
    stop = asyncio.Event()
    task = asyncio.create_task(writer.run(stop))
    try:
        await wait_until(lambda: len(writer.members) >= ACKS_BEFORE, timeout=60, message="acks")
        await crash(project)
        before = len(writer.members)
        await wait_until(
            lambda: len(writer.members) >= before + ACKS_AFTER,
            timeout=120,
            message="acknowledged changes after the crash",
        )
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 30)
    return writer


async def _assert_nothing_acknowledged_lost(
    server: BoardcastProcess, writer: ProjectWriter
) -> None:
    base = f"http://127.0.0.1:{server.port}/v1/projects/{writer.project}"
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/members") as answer:
            assert answer.status == 200
            stored = {m["user"] for m in (await answer.json())["items"]}
        async with http.get(base) as answer:
            name = (await answer.json())["name"]
    missing = set(writer.members) - stored
    assert not missing, f"acknowledged members lost: {sorted(missing)}"
    assert writer.acknowledged_name >= 0
    assert name in writer.names[writer.acknowledged_name :], (name, writer.names)


async def test_a_project_survives_a_kill_of_its_in_process_host(tmp_path: Path) -> None:
    server = serve_process(tmp_path / "data", "--backend", "local", "--auth", "none")
    await server.astart()

    async def crash(_project: str) -> None:
        await asyncio.to_thread(kill_process_tree, server)
        await server.astart()

    try:
        writer = await _write_through_a_crash(server, crash)
        await _assert_nothing_acknowledged_lost(server, writer)
        assert writer.failures > 0  # the crash really cut the writer off
    finally:
        await server.astop()


@pytest.mark.ray
async def test_a_project_survives_a_kill_of_its_ray_host(tmp_path: Path) -> None:
    server = serve_process(tmp_path / "data", "--auth", "none")
    await server.astart()

    async def crash(project: str) -> None:
        hosts = await asyncio.to_thread(host_pids, server)
        name = rendezvous_host(project_doc_id(project), [host["name"] for host in hosts])
        pid = next(host["pid"] for host in hosts if host["name"] == name)
        os.kill(pid, signal.SIGKILL)

    try:
        writer = await _write_through_a_crash(server, crash)
        await _assert_nothing_acknowledged_lost(server, writer)
    finally:
        await server.astop()
