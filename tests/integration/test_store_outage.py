"""The MongoDB server goes away mid-stream and comes back.

Real SecantusDB (MongoDB wire protocol) on a loopback port, stopped while
clients write. Nothing acknowledged may be lost; updates received during the
outage are kept in memory up to the bound and written once the store is back;
past the bound, writers are refused with 4503 and lose nothing either.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from pycrdt import Map

from clients.provider import BoardClient
from crdt.close_codes import CloseCode
from tests.conftest import serve, wait_until
from tests.persistence_servers import MongoServer, secantus_command
from tests.writers import BOARD, SteadyWriter

pytestmark = pytest.mark.skipif(secantus_command() is None, reason="SecantusDB not installed")


async def read_keys(url: str) -> set[str]:
    async with BoardClient(url, BOARD, ack=False) as reader:
        await reader.synced()
        return set(reader.doc.get("tasks", type=Map).keys())


async def test_a_store_outage_loses_nothing(tmp_path: Path) -> None:
    mongo = MongoServer(tmp_path / "mongo")
    await asyncio.to_thread(mongo.start)
    try:
        async with serve("local", tmp_path, store=f"{mongo.url}/outage") as server:
            writers = [SteadyWriter(f"w{i}", lambda: server.url) for i in range(2)]
            stop = asyncio.Event()
            tasks = [asyncio.create_task(w.run(stop)) for w in writers]
            await asyncio.sleep(1.0)
            await asyncio.to_thread(mongo.stop)
            acked_before = {key for w in writers for key in w.acknowledged}
            await asyncio.sleep(3.0)
            # Nothing can be acknowledged while the store is down...
            assert {key for w in writers for key in w.acknowledged} - acked_before == set()
            await asyncio.to_thread(mongo.start)
            await asyncio.sleep(2.0)
            stop.set()
            await asyncio.gather(*tasks)
            # ...but writers were never refused under the default bound, and once the
            # store is back everything they wrote is acknowledged and stored.
            assert all(not w.close_codes for w in writers)
            written = {f"{w.name}-{n}" for w in writers for n in range(w.written)}
            acknowledged = {key for w in writers for key in w.acknowledged}
            assert written == acknowledged
            assert len(written) > 100
        # A fresh server on the same database finds every one of them.
        async with serve("local", tmp_path, store=f"{mongo.url}/outage") as server:
            assert written <= await read_keys(server.url)
    finally:
        await asyncio.to_thread(mongo.stop)


async def test_past_the_bound_writes_are_refused_with_4503_and_nothing_is_lost(
    tmp_path: Path,
) -> None:
    mongo = MongoServer(tmp_path / "mongo")
    await asyncio.to_thread(mongo.start)
    try:
        async with serve(
            "local", tmp_path, store=f"{mongo.url}/bound", max_unsaved_bytes=4096
        ) as server:
            async with BoardClient(server.url, BOARD) as client:
                await client.synced()
                tasks = client.doc.get("tasks", type=Map)
                tasks["before"] = "stored"
                await client.persisted()
                await asyncio.to_thread(mongo.stop)
                for index in range(200):
                    if client.close_code is not None:
                        break
                    tasks[f"during-{index}"] = "x" * 100
                    await asyncio.sleep(0.01)
                await wait_until(lambda: client.close_code is not None, message="refusal")
                assert client.close_code == CloseCode.STORE_UNAVAILABLE
                await asyncio.to_thread(mongo.start)
                # The client still holds its refused edits; reconnecting sends them.
                for _ in range(50):
                    try:
                        await client.reconnect()
                        await client.synced()
                        await client.persisted()
                        break
                    except Exception:
                        await asyncio.sleep(0.2)
                expected = set(tasks.keys())
            assert expected <= await read_keys(server.url)
            assert len(expected) > 2
    finally:
        await asyncio.to_thread(mongo.stop)
