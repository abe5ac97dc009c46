"""A board host's frame port lets in only peers that know the cluster secret.

Each test runs a real gateway and real board hosts (in-process, and as Ray actors),
dials a host's frame port as an attacker would, and reads the board back through a
real WebSocket client session.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import msgpack
import pytest
from pycrdt import Doc, Map

from actors.direct import DirectConnection
from actors.handshake import Handshake, Role
from actors.messages import PROTOCOL_VERSION, Frame, Hello, Message, Open, encode
from actors.stream import DEFAULT_HANDSHAKE_SECONDS, open_stream
from clients.provider import BoardClient
from crdt.protocol import sync_update
from tests.conftest import RunningServer, serve
from tests.services import TIMEOUT_SCALE

WRONG_SECRET = b"\x42" * 32


def injection_messages(board_id: str, key: str) -> list[Message]:
    """What a gateway sends to open a session on ``board_id`` and write the task ``key``."""
    doc: Doc[Any] = Doc()
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(event.update))
    doc.get("tasks", type=Map)[key] = "written by whoever reached the port"
    conn = 9_000 + len(key)
    return [
        Hello(PROTOCOL_VERSION, "gateway"),
        Open(board_id, conn, False, origin="admin"),
        Frame(board_id, conn, sync_update(updates[0])),
    ]


def injection(board_id: str, key: str) -> bytes:
    """Those messages as bytes on the wire, encoded as a gateway encodes them."""
    messages = injection_messages(board_id, key)
    return b"".join(msgpack.packb(encode(message), use_bin_type=True) for message in messages)


async def frame_port(server: RunningServer, board_id: str) -> tuple[str, tuple[str, int]]:
    host_name = await server.cluster.locate(board_id)
    return host_name, await server.cluster.endpoint(host_name)


async def closed_by_host(reader: asyncio.StreamReader, timeout: float) -> bool:
    """True once the host closed the connection (EOF or reset) within ``timeout``."""
    try:
        async with asyncio.timeout(timeout * TIMEOUT_SCALE):
            while await reader.read(64 * 1024):
                pass
    except ConnectionError:
        return True
    except TimeoutError:
        return False
    return True


async def board_tasks(server: RunningServer, board_id: str) -> dict[str, Any]:
    """The board's tasks as a fresh client sees them (through the gateway)."""
    async with BoardClient(server.url, board_id, ack=False) as reader:
        await reader.synced()
        return dict(reader.doc.get("tasks", type=Map).to_py() or {})


async def host_stats(server: RunningServer, host_name: str) -> dict[str, Any]:
    return next(s for s in await server.cluster.stats() if s["name"] == host_name)


async def test_an_update_sent_without_the_secret_never_reaches_the_board(
    backend: str, tmp_path: Path, cluster_name: str
) -> None:
    board = f"guarded-{uuid.uuid4().hex[:6]}"
    async with serve(backend, tmp_path, cluster_name=cluster_name) as server:
        async with BoardClient(server.url, board) as owner:
            await owner.synced()
            owner.doc.get("tasks", type=Map)["by-owner"] = "through the gateway"
            await owner.persisted()
        host_name, (address, port) = await frame_port(server, board)

        # 1. No secret at all: frames straight away, as any process that reaches the port can.
        reader, writer = await asyncio.open_connection(address, port)
        writer.write(injection(board, "no-secret"))
        closed = await closed_by_host(reader, 10.0)
        assert "no-secret" not in await board_tasks(server, board)
        assert closed
        writer.close()

        # 2. A wrong secret: a well-formed handshake with a proof the host cannot accept,
        # followed at once by the frames.
        reader, writer = await asyncio.open_connection(address, port)
        attacker = Handshake(WRONG_SECRET, Role.GATEWAY)
        writer.write(attacker.data_to_send())
        attacker.receive_data(await reader.readexactly(attacker.bytes_expected))
        writer.write(attacker.data_to_send() + injection(board, "wrong-secret"))
        closed = await closed_by_host(reader, 10.0)
        assert "wrong-secret" not in await board_tasks(server, board)
        assert closed
        writer.close()

        # The board has the owner's task and nothing else, for a client and after a reload.
        assert await board_tasks(server, board) == {"by-owner": "through the gateway"}
        stats = await host_stats(server, host_name)
        assert stats["handshakes_refused"] >= 2 and stats["handshakes_pending"] == 0

        # 3. The right secret (what a gateway of this cluster does): the same frames count.
        link = await open_stream(address, port, secret=server.cluster.stream_secret)
        for message in injection_messages(board, "right-secret"):
            link.send(message)
        await link.drain()

        async def written() -> bool:
            return "right-secret" in await board_tasks(server, board)

        deadline = asyncio.get_running_loop().time() + 10 * TIMEOUT_SCALE
        while not await written():
            assert asyncio.get_running_loop().time() < deadline, "the authenticated write landed"
            await asyncio.sleep(0.1)
        await link.close()


async def test_a_peer_that_connects_and_says_nothing_is_dropped_at_the_deadline(
    backend: str, tmp_path: Path, cluster_name: str
) -> None:
    board = f"silent-{uuid.uuid4().hex[:6]}"
    async with serve(backend, tmp_path, cluster_name=cluster_name) as server:
        host_name, (address, port) = await frame_port(server, board)
        before = await host_stats(server, host_name)
        silent = [await asyncio.open_connection(address, port) for _ in range(5)]
        during = await host_stats(server, host_name)
        for _ in range(100):  # the host takes them in as its loop gets to them
            if during["handshakes_pending"] == 5:
                break
            await asyncio.sleep(0.02)
            during = await host_stats(server, host_name)
        # Held as handshakes (unless a slow machine let the deadline pass already),
        # never as gateway links.
        dropped_already = during["handshakes_refused"] - before["handshakes_refused"]
        assert during["handshakes_pending"] + dropped_already == 5 and during["gateways"] == 0
        for reader, _ in silent:
            assert await closed_by_host(reader, DEFAULT_HANDSHAKE_SECONDS + 10.0)
        after = await host_stats(server, host_name)
        assert after["handshakes_pending"] == 0 and after["gateways"] == 0
        assert after["handshakes_refused"] - before["handshakes_refused"] == 5
        for _, writer in silent:
            writer.close()
        # The host still serves the cluster's own gateway.
        async with BoardClient(server.url, board) as client:
            await client.synced()
            client.doc.get("tasks", type=Map)["after"] = "silence"
            await client.persisted()
        assert await board_tasks(server, board) == {"after": "silence"}


@pytest.mark.ray
async def test_a_gateway_that_joins_a_running_deployment_gets_its_secret(
    ray_session: None, tmp_path: Path, cluster_name: str
) -> None:
    from actors.ray_backend import RayCluster

    board = f"joined-{uuid.uuid4().hex[:6]}"
    async with serve("ray", tmp_path, cluster_name=cluster_name) as server:
        # What `boardcast gateway --address ...` does: find the deployment through Ray.
        joined = await RayCluster.join(cluster_name=cluster_name)
        try:
            assert joined.stream_secret == server.cluster.stream_secret
            async with DirectConnection(joined, board, origin="joined") as session:
                session.doc.get("tasks", type=Map)["from-joined"] = "over its own link"
                await session.persisted()
        finally:
            await joined.close()
        assert await board_tasks(server, board) == {"from-joined": "over its own link"}
        with pytest.raises(ValueError, match="differs"):
            await RayCluster.join(cluster_name=cluster_name, cluster_secret=WRONG_SECRET)
