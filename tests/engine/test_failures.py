"""Failures a user can cause or suffer: slow readers, crashed board hosts."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest
import websockets
from pycrdt import Map, Text
from websockets.asyncio.client import connect

from clients.provider import BoardClient
from crdt.close_codes import CloseCode
from tests.conftest import serve, wait_until


async def test_slow_reader_is_closed_with_a_named_code_and_others_keep_up(
    backend: str, tmp_path: Path, cluster_name: str
) -> None:
    chunk = "y" * 100_000
    rounds = 80
    async with serve(
        backend, tmp_path, cluster_name=cluster_name, send_buffer_bytes=256 * 1024
    ) as server:
        # max_queue=1: the library stops reading the socket once one message waits,
        # so this client's TCP window fills like a stalled browser tab's.
        slow = await connect(f"{server.url}/busy", max_queue=1, max_size=None)
        async with (
            BoardClient(server.url, "busy") as writer,
            BoardClient(server.url, "busy") as reader,
        ):
            await writer.synced()
            await reader.synced()
            text = writer.doc.get("notes", type=Text)
            for _ in range(rounds):
                text.insert(0, chunk)
                await asyncio.sleep(0.005)
            expected = len(chunk) * rounds
            await wait_until(
                lambda: len(str(reader.doc.get("notes", type=Text))) == expected,
                timeout=30,
                message="reader receives every update",
            )
        code = None
        try:
            async with asyncio.timeout(30):
                while True:
                    await slow.recv()
        except websockets.ConnectionClosed as closed:
            code = closed.rcvd.code if closed.rcvd is not None else None
        assert code == CloseCode.SLOW_CONSUMER


@pytest.mark.ray
async def test_killed_board_host_comes_back_and_clients_converge(
    ray_session: None, tmp_path: Path, cluster_name: str
) -> None:
    async with serve("ray", tmp_path, cluster_name=cluster_name, hosts=1) as server:
        async with (
            BoardClient(server.url, "crash") as alice,
            BoardClient(server.url, "crash") as bob,
        ):
            await alice.synced()
            await bob.synced()
            alice.doc.get("tasks", type=Map)["before"] = "written before the crash"
            await wait_until(lambda: "before" in bob.doc.get("tasks", type=Map))
            pid = (await server.cluster.stats())[0]["pid"]
            os.kill(pid, signal.SIGKILL)

            await wait_until(lambda: alice.close_code is not None, timeout=20, message="close")
            assert alice.close_code == CloseCode.SERVICE_RESTART
            # Edits made while the host is down are kept by the client and merged back.
            bob.doc.get("tasks", type=Map)["during"] = "written while the host was down"
            for client in (alice, bob):
                await wait_until(lambda c=client: not c.connected, timeout=20)
                await client.reconnect()
                await client.synced(timeout=30)
            alice.doc.get("tasks", type=Map)["after"] = "written after the restart"
            expected = {"before", "during", "after"}
            await wait_until(
                lambda: (
                    set(alice.doc.get("tasks", type=Map).keys())
                    == set(bob.doc.get("tasks", type=Map).keys())
                    == expected
                ),
                timeout=20,
            )
            assert (await server.cluster.stats())[0]["pid"] != pid
