"""Direct connections: a server-side session on a board, without a socket."""

from __future__ import annotations

from pathlib import Path

from pycrdt import Map

from actors.direct import DirectConnection
from clients.provider import BoardClient
from tests.conftest import serve, wait_until


async def test_a_direct_connection_reads_observes_and_writes_like_a_client(
    backend: str, tmp_path: Path, cluster_name: str
) -> None:
    async with serve(backend, tmp_path, cluster_name=cluster_name) as server:
        async with BoardClient(server.url, "direct") as alice:
            await alice.synced()
            alice.doc.get("tasks", type=Map)["from-alice"] = "written over a WebSocket"
            await alice.persisted()
            async with DirectConnection(server.cluster, "direct") as worker:
                # Reads what is there, and observes what comes next.
                tasks = worker.doc.get("tasks", type=Map)
                assert tasks["from-alice"] == "written over a WebSocket"
                alice.doc.get("tasks", type=Map)["later"] = "seen live"
                await wait_until(lambda: "later" in tasks, message="the worker observes")
                # Writes are broadcast and acknowledged like anyone's.
                tasks["from-worker"] = "written without a socket"
                await worker.persisted()
                await wait_until(lambda: "from-worker" in alice.doc.get("tasks", type=Map))
    async with serve(backend, tmp_path, cluster_name=f"{cluster_name}b") as server:
        async with BoardClient(server.url, "direct", ack=False) as reader:
            await reader.synced()
            assert set(reader.doc.get("tasks", type=Map).keys()) == {
                "from-alice",
                "later",
                "from-worker",
            }
