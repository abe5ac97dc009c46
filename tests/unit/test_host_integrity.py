"""What a board host guarantees a client: acks mean stored and integrated; bad input is contained.

Real loopback frame streams and the fake gateway of ``test_host``; stores are in memory,
some of them made to fail the way a real one does.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pycrdt import Doc, Map, Text

import actors.host
from actors.messages import Frame, Open, Persisted
from crdt.close_codes import CloseCode
from crdt.protocol import sync_step1, sync_update
from persistence.memory import MemoryStore
from tests.conftest import wait_until
from tests.unit.test_host import BOARD, MakeHost, make_host, synced, text, type_text

__all__ = ["make_host"]  # the fixture, used by name below


def writer_updates(count: int) -> list[bytes]:
    """``count`` updates of one writer, each depending on the one before."""
    doc: Doc[Any] = Doc()
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(event.update))
    tasks = doc.get("tasks", type=Map)
    for n in range(count):
        tasks[f"k{n % 2}"] = n
    return updates


class FailingStore(MemoryStore):
    """A memory store whose appends fail while ``down`` is set, as an unreachable server's do."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False

    async def append(self, batches: Any) -> dict[str, int]:
        if self.down:
            raise ConnectionError("store unreachable")
        return await super().append(batches)


def persisted_counts(gateway: Any, conn: int) -> list[int]:
    """Every "persisted up to N" the host sent for ``conn``, recorded by a patched pump."""
    return list(gateway.persisted.get(conn, []))


def record_persisted(gateway: Any) -> None:
    gateway.persisted = {}
    original = gateway.link.read_batches

    async def read_batches() -> list[Any] | None:
        batch = await original()
        for message in batch or ():
            if isinstance(message, Persisted):
                gateway.persisted.setdefault(message.conn, []).append(message.count)
        return batch

    gateway.link.read_batches = read_batches


async def test_frames_after_a_rejection_are_ignored(make_host: MakeHost) -> None:
    host, gateway = await make_host()
    alice = gateway.join(1)
    await synced(alice)
    # Connection 2 sends a bad frame, then (already on its way) a good-looking edit.
    gateway.link.send(Open(BOARD, 2))
    gateway.link.send(Frame(BOARD, 2, b"\x00\x02\x03\x01\x02\x03"))
    edit: Doc[Any] = Doc()
    edit.get("t", type=Text).insert(0, "sneaked in")
    gateway.link.send(Frame(BOARD, 2, sync_update(edit.get_update())))
    await wait_until(lambda: 2 in gateway.rejected, message="rejected")
    await host.flush()
    type_text(alice, "ok")
    await host.flush()
    stored = await host.store.load(BOARD)
    assert "sneaked" not in text(alice)
    assert all(b"sneaked" not in entry.update for entry in stored.updates)


async def test_an_update_missing_its_dependency_is_acknowledged_only_once_integrated(
    make_host: MakeHost,
) -> None:
    host, gateway = await make_host()
    record_persisted(gateway)
    updates = writer_updates(3)
    gateway.link.send(Open(BOARD, 5, True))
    gateway.link.send(Frame(BOARD, 5, sync_update(updates[1])))
    gateway.link.send(Frame(BOARD, 5, sync_update(updates[2])))
    await asyncio.sleep(0.2)
    await host.flush()
    # Nothing of messages 1 and 2 is in the document: no acknowledgement may cover them.
    assert all(count < 1 for count in persisted_counts(gateway, 5))
    gateway.link.send(Frame(BOARD, 5, sync_update(updates[0])))
    await wait_until(lambda: 3 in persisted_counts(gateway, 5), message="ack of all three")
    stored = await host.store.load(BOARD)
    doc: Doc[Any] = Doc()
    for entry in stored.updates:
        doc.apply_update(entry.update)
    assert doc.get("tasks", type=Map).to_py() == {"k0": 2, "k1": 1}


async def test_during_a_store_outage_only_writes_are_refused(make_host: MakeHost) -> None:
    store = FailingStore()
    host, gateway = await make_host(store, max_unsaved_bytes=100, store_retry_seconds=0.05)
    alice = gateway.join(1)
    await synced(alice)
    type_text(alice, "before the outage")
    await host.flush()
    store.down = True
    type_text(alice, " " + "x" * 200)  # fills the backlog past its bound
    await wait_until(lambda: host.stats()["unsaved_bytes"] > 100, message="backlog full")
    # A newcomer reads the board and is shown who is here.
    bob = gateway.join(2)
    await synced(bob)
    assert text(bob).startswith("before the outage")
    bob.set_awareness({"user": "bob"})
    await wait_until(lambda: bool(alice.awareness_states), message="alice sees bob")
    await asyncio.sleep(0.1)
    assert 2 not in gateway.rejected
    # Bob's first edit is refused with 4503; alice's board is untouched by it.
    type_text(bob, "!")
    await wait_until(lambda: 2 in gateway.rejected, message="bob's write refused")
    assert gateway.rejected[2][0] == CloseCode.STORE_UNAVAILABLE
    assert not text(alice).endswith("!")
    store.down = False
    await host.flush()
    assert text(alice) == text(bob).removesuffix("!")


async def test_a_snapshot_that_does_not_load_back_trims_nothing(
    make_host: MakeHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(actors.host, "snapshot_loads", lambda state, state_vector: False)
    host, gateway = await make_host(snapshot_every=3)
    alice, watcher = gateway.join(1), gateway.join(2)
    await synced(alice, watcher)
    for n in range(7):
        type_text(alice, str(n))
        await wait_until(lambda: text(watcher) == text(alice), message="host applied it")
        await host.flush()
    stored = await host.store.load(BOARD)
    assert stored.snapshot is None
    assert len(stored.updates) >= 7


async def test_a_snapshot_is_written_when_it_loads_back(make_host: MakeHost) -> None:
    # The same run as above with the real check: the log is compacted.
    host, gateway = await make_host(snapshot_every=3)
    alice, watcher = gateway.join(1), gateway.join(2)
    await synced(alice, watcher)
    for n in range(7):
        type_text(alice, str(n))
        await wait_until(lambda: text(watcher) == text(alice), message="host applied it")
        await host.flush()
    stored = await host.store.load(BOARD)
    assert stored.snapshot is not None
    assert len(stored.updates) < 3


async def test_a_loading_boards_inbox_is_bounded(make_host: MakeHost) -> None:
    class SlowStore(MemoryStore):
        def __init__(self) -> None:
            super().__init__()
            self.release = asyncio.Event()

        async def load(self, board_id: str) -> Any:
            await self.release.wait()
            return await super().load(board_id)

    store = SlowStore()
    _host, gateway = await make_host(store, max_inbox_bytes=10_000)
    gateway.link.send(Open(BOARD, 1))
    for _ in range(20):
        gateway.link.send(Frame(BOARD, 1, sync_step1(b"\x00") + b"\x00" * 1000))
    await wait_until(lambda: 1 in gateway.rejected, message="flooding client refused")
    assert gateway.rejected[1][0] == CloseCode.TRY_AGAIN_LATER
    store.release.set()
    bob = gateway.join(2)
    await synced(bob)


async def test_a_store_call_that_hangs_times_out_and_is_retried(make_host: MakeHost) -> None:
    class HangingStore(MemoryStore):
        """The first append never returns, as with a server that stopped answering."""

        def __init__(self) -> None:
            super().__init__()
            self.calls = 0

        async def append(self, batches: Any) -> dict[str, int]:
            self.calls += 1
            if self.calls == 1:
                await asyncio.Event().wait()
            return await super().append(batches)

    store = HangingStore()
    _host, gateway = await make_host(store, store_timeout_seconds=0.2, store_retry_seconds=0.05)
    record_persisted(gateway)
    updates = writer_updates(1)
    gateway.link.send(Open(BOARD, 9, True))
    gateway.link.send(Frame(BOARD, 9, sync_update(updates[0])))
    await wait_until(lambda: 1 in persisted_counts(gateway, 9), message="acknowledged")
    assert store.calls >= 2
    assert len((await store.load(BOARD)).updates) == 1


async def test_a_board_that_cannot_be_rebuilt_is_reloaded_from_the_store(
    make_host: MakeHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json
    from pathlib import Path

    from crdt.document import BoardDocument
    from crdt.errors import InvalidUpdate

    host, gateway = await make_host()
    alice, watcher = gateway.join(1), gateway.join(2)
    await synced(alice, watcher)
    type_text(alice, "kept")
    await wait_until(lambda: text(watcher) == "kept", message="edit applied")
    await host.flush()

    def cannot_rebuild(self: BoardDocument) -> None:
        raise InvalidUpdate("simulated: base and journal do not load")

    monkeypatch.setattr(BoardDocument, "rebuild", cannot_rebuild)
    corpus = Path(__file__).parents[1] / "corpus" / "panic-partial-apply-b7137c29ce.json"
    [frame] = json.loads(corpus.read_text())["frames"]
    gateway.link.send(Open(BOARD, 3))
    gateway.link.send(Frame(BOARD, 3, bytes.fromhex(frame)))
    # Every client of the board is told to reconnect; the board leaves memory.
    await wait_until(lambda: {1, 2, 3} <= set(gateway.rejected), message="all rejected")
    assert gateway.rejected[1][0] == CloseCode.SERVICE_RESTART
    await wait_until(lambda: BOARD not in host.board_ids(), message="board unloaded")
    monkeypatch.undo()
    bob = gateway.join(4)
    await synced(bob)
    assert text(bob) == "kept"


async def test_domain_events_are_delivered_only_once_their_update_is_durable() -> None:
    from actors.host import BoardHost, HostSettings
    from tests.unit.test_host import FakeGateway, GatedStore

    store = GatedStore()
    seen: list[Any] = []
    host = BoardHost(
        "host-events",
        store,
        HostSettings(drain_seconds=0.5, idle_seconds=3600.0, sweep_seconds=3600.0),
        event_sink=seen.extend,
    )
    gateway = await FakeGateway.connect(host)
    try:
        alice = gateway.join(1)
        await synced(alice)
        store.append_gate.close()
        alice.doc.get("tasks", type=Map)["t1"] = Map({"title": "write the docs"})
        await wait_until(lambda: store.append_gate.entered.is_set(), message="append started")
        await asyncio.sleep(0.2)
        assert seen == [], "an event was delivered before its update was durable"
        store.append_gate.open()
        await wait_until(lambda: bool(seen), message="event after commit")
        assert any(type(event).__name__ == "TaskCreated" for event in seen)
        assert (await store.load(BOARD)).updates, "the update is in the store"
    finally:
        store.append_gate.open()
        await gateway.close()
        await host.stop()


async def test_no_snapshot_is_written_while_an_update_is_held(make_host: MakeHost) -> None:
    # pycrdt's encoding of a board carries the pending parts of held updates: a
    # snapshot then would store what nobody acknowledged. It waits for the hold.
    host, gateway = await make_host(snapshot_every=1)
    updates = writer_updates(3)
    gateway.link.send(Open(BOARD, 5, True))
    gateway.link.send(Frame(BOARD, 5, sync_update(updates[2])))  # waits for 0 and 1
    alice, watcher = gateway.join(1), gateway.join(2)
    await synced(alice, watcher)
    type_text(alice, "an innocent edit, committed")
    await wait_until(lambda: text(watcher) == text(alice), message="edit applied")
    await host.flush()
    assert (await host.store.load(BOARD)).snapshot is None
    gateway.link.send(Frame(BOARD, 5, sync_update(updates[0])))
    gateway.link.send(Frame(BOARD, 5, sync_update(updates[1])))
    type_text(alice, " and one more")
    await wait_until(lambda: text(watcher) == text(alice), message="second edit applied")

    async def snapshot_written() -> bool:
        await host.flush()
        return (await host.store.load(BOARD)).snapshot is not None

    for _ in range(100):
        if await snapshot_written():
            break
        await asyncio.sleep(0.05)
    assert await snapshot_written(), "once nothing is held, the board is snapshotted again"
