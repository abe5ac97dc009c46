"""The MongoDB server goes away mid-stream and comes back.

Real SecantusDB (MongoDB wire protocol) on a loopback port, stopped or killed while clients
write. Nothing acknowledged may be lost: the store itself is read from this process, before
any client could send anything again, and at the end a brand-new client reads the board.
Updates received during the outage are kept in memory up to the bound and written once the
store is back; past the bound, writes are refused with 4503 while readers still read.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pycrdt import Map

from clients.provider import BoardClient, ConnectionLost
from crdt.close_codes import CloseCode
from persistence.factory import open_store
from tests.conftest import serve, wait_until
from tests.persistence_servers import MongoServer, require_secantus
from tests.writers import (
    BOARD,
    SteadyWriter,
    acknowledged_keys,
    assert_nothing_lost,
    keys_in_store,
    keys_seen_by_newcomer,
)


@pytest.fixture(autouse=True)
def secantus() -> None:
    """Every test here needs SecantusDB."""
    require_secantus()


@pytest.fixture
async def mongo(tmp_path: Path) -> AsyncIterator[MongoServer]:
    """A SecantusDB of this test's own, so it can be stopped and killed."""
    server = MongoServer(tmp_path / "mongo")
    await asyncio.to_thread(server.start)
    yield server
    await asyncio.to_thread(server.stop)


@contextlib.asynccontextmanager
async def store_down(mongo: MongoServer) -> AsyncIterator[None]:
    """Stop the store; start it again on exit unless the block already did."""
    await asyncio.to_thread(mongo.stop)
    try:
        yield
    finally:
        if mongo.pid is None:
            # Before the server stops: its last flush needs the store.
            await asyncio.to_thread(mongo.start)


async def keys_in_mongo(url: str, data_dir: Path) -> set[str]:
    """The task keys the store at ``url`` holds, read from this process (with the key ring
    the server made under ``data_dir``)."""
    async with open_store(url, data_dir=str(data_dir)) as store:
        return await keys_in_store(store)


async def test_a_store_outage_loses_nothing(tmp_path: Path, mongo: MongoServer) -> None:
    store_url = f"{mongo.url}/outage"
    async with serve("local", tmp_path, store=store_url) as server:
        writers = [SteadyWriter(f"w{i}", lambda: server.url) for i in range(2)]
        stop = asyncio.Event()
        tasks = [asyncio.create_task(w.run(stop)) for w in writers]
        await wait_until(
            lambda: all(len(w.acknowledged) >= 20 for w in writers), message="acknowledgements"
        )
        # The store crashes: SIGKILL, no clean shutdown.
        await asyncio.to_thread(mongo.kill)
        written_before = {w.name: w.written for w in writers}
        await wait_until(
            lambda: all(w.written >= written_before[w.name] + 50 for w in writers),
            message="writes during the outage",
        )
        # Nothing written while the store is down can be acknowledged (acknowledgements
        # of appends committed before the crash may still arrive)...
        acked_before = acknowledged_keys(writers)
        written_during = {
            f"{w.name}-{n}" for w in writers for n in range(written_before[w.name], w.written)
        }
        assert not acked_before & written_during
        await asyncio.to_thread(mongo.start)
        # ...and what was acknowledged survived the store's crash.
        assert_nothing_lost(
            acked_before, await keys_in_mongo(store_url, tmp_path), "from the store"
        )
        written_by = {w.name: w.written for w in writers}
        await wait_until(
            lambda: all(
                {f"{w.name}-{n}" for n in range(written_by[w.name])} <= w.acknowledged
                for w in writers
            ),
            timeout=30,
            message="the backlog acknowledged once the store is back",
        )
        stop.set()
        await asyncio.gather(*tasks)
        # Writers were never refused under the default bound; once the store is back
        # everything they wrote is acknowledged, and it is in the store.
        assert all(not w.close_codes for w in writers)
        written = {f"{w.name}-{n}" for w in writers for n in range(w.written)}
        assert acknowledged_keys(writers) == written
        assert len(written) > 100
        assert_nothing_lost(
            written, await keys_in_mongo(store_url, tmp_path), "from the store at the end"
        )
    # A fresh server on the same database gives every one of them to a brand-new client.
    async with serve("local", tmp_path, store=store_url) as server:
        assert_nothing_lost(written, await keys_seen_by_newcomer(server.url), "for a newcomer")


async def fill_the_backlog(client: BoardClient) -> None:
    """Write through ``client`` until the server refuses it (bounded)."""
    tasks = client.doc.get("tasks", type=Map)
    for index in range(500):
        if client.close_code is not None:
            break
        tasks[f"during-{index}"] = "x" * 100
        await asyncio.sleep(0.01)
    await wait_until(lambda: client.close_code is not None, message="refusal")


async def test_past_the_bound_writes_are_refused_with_4503_and_nothing_is_lost(
    tmp_path: Path, mongo: MongoServer
) -> None:
    store_url = f"{mongo.url}/bound"
    async with serve("local", tmp_path, store=store_url, max_unsaved_bytes=4096) as server:
        async with BoardClient(server.url, BOARD) as client:
            await client.synced()
            tasks = client.doc.get("tasks", type=Map)
            tasks["before"] = "stored"
            await client.persisted()
            async with store_down(mongo):
                await fill_the_backlog(client)
                assert client.close_code == CloseCode.STORE_UNAVAILABLE
            # The store is back. Before the client sends anything again, it holds what
            # the client had acknowledged.
            assert_nothing_lost(
                {"before"}, await keys_in_mongo(store_url, tmp_path), "from the store"
            )
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
        assert len(expected) > 2
        # Acknowledged on the new connection: in the store, and given to a newcomer.
        assert_nothing_lost(expected, await keys_in_mongo(store_url, tmp_path), "from the store")
        assert_nothing_lost(expected, await keys_seen_by_newcomer(server.url), "for a newcomer")


async def test_past_the_bound_a_newcomer_still_reads_the_board_and_sees_who_is_there(
    tmp_path: Path, mongo: MongoServer
) -> None:
    """4503 refuses writes only: opening the board and presence still work in an outage."""
    store_url = f"{mongo.url}/readers"
    async with serve("local", tmp_path, store=store_url, max_unsaved_bytes=4096) as server:
        async with (
            BoardClient(server.url, BOARD) as present,
            BoardClient(server.url, BOARD) as filler,
        ):
            await present.synced()
            await filler.synced()
            present.set_awareness({"user": "ann"})
            tasks = present.doc.get("tasks", type=Map)
            for index in range(5):
                tasks[f"before-{index}"] = "stored"
            await present.persisted()
            before = set(tasks.keys())
            async with store_down(mongo):
                # Another client's writes fill the unsaved backlog past its bound.
                await fill_the_backlog(filler)
                assert filler.close_code == CloseCode.STORE_UNAVAILABLE

                async with BoardClient(server.url, BOARD, ack=False) as newcomer:
                    try:
                        await newcomer.synced()
                    except ConnectionLost:
                        pytest.fail(
                            f"the newcomer was closed ({newcomer.close_code}) before it"
                            " could read the board"
                        )
                    assert before <= set(newcomer.doc.get("tasks", type=Map).keys())
                    await wait_until(
                        lambda: newcomer.awareness_states.get(present.client_id) == {"user": "ann"},
                        message="the newcomer seeing who is on the board",
                    )
                    assert present.connected, f"a reader was closed ({present.close_code})"
                    # The newcomer's own write is refused.
                    newcomer.doc.get("tasks", type=Map)["during-newcomer"] = "refused"
                    await wait_until(lambda: newcomer.close_code is not None, message="refusal")
                    assert newcomer.close_code == CloseCode.STORE_UNAVAILABLE
