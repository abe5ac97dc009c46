"""A board host without Ray: real loopback frame streams, a fake gateway, an in-memory store.

The fake gateway speaks the msgpack stream of :mod:`actors.stream` and runs a sans-I/O
y-websocket client (:class:`crdt.session.ClientProtocol`) per connection, so every
assertion is about what a client sees or what the store holds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from pycrdt import Doc, Map, Text

from actors.host import BoardHost, HostSettings
from actors.messages import PROTOCOL_VERSION, Broadcast, Close, Frame, Hello, Open, Reject, Send
from actors.stream import StreamLink, open_stream
from crdt.awareness import AwarenessEntry, encode_awareness
from crdt.close_codes import CloseCode
from crdt.protocol import SyncStep2, awareness_frame, decode_frame, sync_step1, sync_update
from crdt.session import ClientProtocol
from persistence.coverage import Coverage
from persistence.memory import MemoryStore
from persistence.sqlite import SqliteStore
from persistence.store import BoardStore, StoredBoard
from tests.conftest import wait_until

BOARD = "board-1"


class FakeGateway:
    """One stream link to a host, carrying any number of client connections."""

    def __init__(self, link: StreamLink) -> None:
        self.link = link
        self.clients: dict[int, tuple[str, ClientProtocol]] = {}
        self.rejected: dict[int, tuple[int, str]] = {}
        self.host_version: int | None = None
        link.send(Hello(PROTOCOL_VERSION, "gateway"))
        self._pump = asyncio.create_task(self._deliver())

    @classmethod
    async def connect(cls, host: BoardHost) -> FakeGateway:
        address, port = await host.start()
        secret = host.settings.cluster_secret
        assert secret is not None
        return cls(await open_stream(address, port, secret=secret))

    def join(self, conn: int, board_id: str = BOARD) -> ClientProtocol:
        """Open a client session: OPEN, then the client's step 1."""

        def send(frame: bytes) -> None:
            self.link.send(Frame(board_id, conn, frame))

        client = ClientProtocol(Doc(), send)
        self.clients[conn] = (board_id, client)
        self.link.send(Open(board_id, conn))
        client.start()
        return client

    def leave(self, conn: int) -> None:
        board_id, client = self.clients.pop(conn)
        client.stop()
        self.link.send(Close(board_id, conn))

    async def close(self) -> None:
        await self.link.close()
        await asyncio.wait_for(self._pump, timeout=10)

    async def _deliver(self) -> None:
        while (batch := await self.link.read_batches()) is not None:
            for message in batch:
                if isinstance(message, Send) and message.conn in self.clients:
                    self.clients[message.conn][1].receive(message.data)
                elif isinstance(message, Broadcast):
                    for conn, (board_id, client) in list(self.clients.items()):
                        if board_id == message.board_id and conn != message.exclude:
                            client.receive(message.data)
                elif isinstance(message, Reject):
                    self.rejected[message.conn] = (message.code, message.reason)
                    entry = self.clients.pop(message.conn, None)
                    if entry is not None:
                        entry[1].stop()
                elif isinstance(message, Hello):
                    self.host_version = message.version


class GatedStore(MemoryStore):
    """A memory store whose writes can be held open, to interleave with a release."""

    def __init__(self) -> None:
        super().__init__()
        self.snapshot_gate = _Gate()
        self.append_gate = _Gate()

    async def write_snapshot(
        self, board_id: str, state: bytes, upto_seq: int, *, covers: Coverage | None = None
    ) -> bool:
        await self.snapshot_gate.pass_through()
        return await super().write_snapshot(board_id, state, upto_seq, covers=covers)

    async def append(self, batches: Any) -> dict[str, int]:
        await self.append_gate.pass_through()
        return await super().append(batches)


class _Gate:
    """Open by default; when closed, callers wait in ``pass_through`` until it opens."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self._open = asyncio.Event()
        self._open.set()

    def close(self) -> None:
        self.entered.clear()
        self._open.clear()

    def open(self) -> None:
        self._open.set()

    async def pass_through(self) -> None:
        self.entered.set()
        await self._open.wait()


def presence(client_id: int, state: str, clock: int = 1) -> bytes:
    return awareness_frame(encode_awareness([AwarenessEntry(client_id, clock, state)]))


def text(client: ClientProtocol | Doc[Any]) -> str:
    doc = client.doc if isinstance(client, ClientProtocol) else client
    return str(doc.get("t", type=Text))


def type_text(client: ClientProtocol, words: str) -> None:
    """Append ``words`` in one edit (one Yjs update)."""
    field = client.doc.get("t", type=Text)
    field.insert(len(field), words)


def rebuild(stored: StoredBoard) -> str:
    doc: Doc[Any] = Doc()
    if stored.snapshot is not None:
        doc.apply_update(stored.snapshot)
    for entry in stored.updates:
        doc.apply_update(entry.update)
    return text(doc)


async def synced(*clients: ClientProtocol) -> None:
    await wait_until(lambda: all(c.synced for c in clients), message="clients synced")


MakeHost = Callable[..., Awaitable[tuple[BoardHost, FakeGateway]]]


@pytest.fixture
async def make_host() -> AsyncIterator[MakeHost]:
    """Start a host on loopback (with any settings and store) and a gateway linked to it."""
    started: list[tuple[BoardHost, FakeGateway]] = []

    async def make(
        store: BoardStore | None = None, clock: Callable[[], float] | None = None, **settings: Any
    ) -> tuple[BoardHost, FakeGateway]:
        options: dict[str, Any] = {"idle_seconds": 3600.0, "sweep_seconds": 3600.0}
        options.update(settings)
        host = BoardHost(
            "host-test",
            store if store is not None else MemoryStore(),
            HostSettings(drain_seconds=1.0, **options),
            clock=clock if clock is not None else time.monotonic,
        )
        gateway = await FakeGateway.connect(host)
        started.append((host, gateway))
        return host, gateway

    yield make
    for host, gateway in started:
        await gateway.close()
        await host.stop()


async def second_gateway(host: BoardHost) -> FakeGateway:
    return await FakeGateway.connect(host)


async def test_clients_sync_edits_through_the_host(make_host: MakeHost) -> None:
    host, gateway = await make_host()
    alice = gateway.join(1)
    await synced(alice)
    type_text(alice, "hello")
    bob = gateway.join(2)
    await synced(bob)
    await wait_until(lambda: text(bob) == "hello", message="late joiner has the text")
    type_text(bob, " world")
    await wait_until(lambda: text(alice) == "hello world", message="broadcast to alice")
    assert host.stats()["connections"] == 2
    gateway.leave(1)
    gateway.leave(2)
    await wait_until(lambda: host.stats()["connections"] == 0, message="both closed")


async def test_edits_cross_gateways(make_host: MakeHost) -> None:
    host, first = await make_host()
    other = await second_gateway(host)
    try:
        alice, bob = first.join(1), other.join(1)
        await synced(alice, bob)
        type_text(alice, "from A")
        await wait_until(lambda: text(bob) == "from A", message="edit on the other gateway")
        assert host.stats()["gateways"] == 2
    finally:
        await other.close()


async def test_updates_are_in_the_store_after_flush(make_host: MakeHost) -> None:
    store = MemoryStore()
    host, gateway = await make_host(store)
    alice, watcher = gateway.join(1), gateway.join(2)
    await synced(alice, watcher)
    for word in ("one ", "two ", "three"):
        type_text(alice, word)
    await wait_until(lambda: text(watcher) == "one two three", message="host applied the edits")
    await host.flush()
    stored = await store.load(BOARD)
    assert [entry.seq for entry in stored.updates] == [1, 2, 3]
    assert rebuild(stored) == "one two three"


async def test_a_snapshot_compacts_the_log_every_n_updates(make_host: MakeHost) -> None:
    store = MemoryStore()
    host, gateway = await make_host(store, snapshot_every=5)
    alice, watcher = gateway.join(1), gateway.join(2)
    await synced(alice, watcher)
    for index in range(12):
        type_text(alice, f"{index},")
    expected = "".join(f"{index}," for index in range(12))
    await wait_until(lambda: text(watcher) == expected, message="host applied the edits")
    await host.flush()
    stored = await store.load(BOARD)
    assert stored.snapshot is not None
    assert stored.snapshot_seq >= 5
    assert stored.last_seq == 12
    assert len(stored.updates) < 5
    assert all(entry.seq > stored.snapshot_seq for entry in stored.updates)
    assert rebuild(stored) == expected


async def test_a_board_survives_a_host_restart_on_sqlite(tmp_path: Path) -> None:
    path = tmp_path / "boards.sqlite3"
    host = BoardHost("host-test", SqliteStore(path), HostSettings(drain_seconds=1.0))
    gateway = await FakeGateway.connect(host)
    alice, watcher = gateway.join(1), gateway.join(2)
    await synced(alice, watcher)
    type_text(alice, "written to disk")
    await wait_until(lambda: text(watcher) == "written to disk", message="edit applied")
    await gateway.close()
    await host.stop()

    host = BoardHost("host-test", SqliteStore(path), HostSettings(drain_seconds=1.0))
    gateway = await FakeGateway.connect(host)
    try:
        bob = gateway.join(1)
        await synced(bob)
        assert text(bob) == "written to disk"
    finally:
        await gateway.close()
        await host.stop()


async def test_an_idle_board_is_released_and_comes_back_whole(make_host: MakeHost) -> None:
    store = MemoryStore()
    host, gateway = await make_host(store)
    alice = gateway.join(1)
    await synced(alice)
    type_text(alice, "keep me")
    # A client cannot tell when the host applied its edit; a second client can.
    watcher = gateway.join(2)
    await wait_until(lambda: text(watcher) == "keep me", message="edit applied")
    gateway.leave(1)
    gateway.leave(2)
    await wait_until(lambda: host.stats()["connections"] == 0, message="clients gone")

    assert await host.release(BOARD) is True
    assert host.board_ids() == []
    stored = await store.load(BOARD)
    assert stored.snapshot is not None and stored.updates == []
    assert rebuild(stored) == "keep me"

    carol = gateway.join(3)
    await synced(carol)
    assert text(carol) == "keep me"
    assert host.board_ids() == [BOARD]


async def test_a_board_with_clients_is_not_released(make_host: MakeHost) -> None:
    host, gateway = await make_host()
    alice = gateway.join(1)
    await synced(alice)
    assert await host.release(BOARD) is False
    assert host.board_ids() == [BOARD]
    assert await host.release("not-loaded") is False


async def test_a_client_arriving_during_release_keeps_the_board(make_host: MakeHost) -> None:
    store = GatedStore()
    host, gateway = await make_host(store)
    alice = gateway.join(1)
    await synced(alice)
    type_text(alice, "before release")
    watcher = gateway.join(2)
    await wait_until(lambda: text(watcher) == "before release", message="edit applied")
    gateway.leave(1)
    gateway.leave(2)
    await wait_until(lambda: host.stats()["connections"] == 0, message="clients gone")

    store.snapshot_gate.close()
    release = asyncio.create_task(host.release(BOARD))
    await asyncio.wait_for(store.snapshot_gate.entered.wait(), timeout=10)
    bob = gateway.join(3)
    await synced(bob)
    assert text(bob) == "before release"
    store.snapshot_gate.open()
    assert await asyncio.wait_for(release, timeout=10) is False
    assert host.board_ids() == [BOARD]

    # The board is still live: bob's edit reaches a newcomer and the store.
    type_text(bob, ", after")
    carol = gateway.join(4)
    await wait_until(lambda: text(carol) == "before release, after", message="newcomer synced")
    await host.flush()
    assert rebuild(await store.load(BOARD)) == "before release, after"


async def test_an_edit_committed_during_release_survives(make_host: MakeHost) -> None:
    store = GatedStore()
    host, gateway = await make_host(store)
    alice = gateway.join(1)
    await synced(alice)
    type_text(alice, "a")
    watcher = gateway.join(2)
    await wait_until(lambda: text(watcher) == "a", message="edit applied")
    gateway.leave(1)
    gateway.leave(2)
    await host.flush()
    await wait_until(lambda: host.stats()["connections"] == 0, message="clients gone")

    store.snapshot_gate.close()
    release = asyncio.create_task(host.release(BOARD))
    await asyncio.wait_for(store.snapshot_gate.entered.wait(), timeout=10)
    # Bob drops by while the snapshot is written: his edit's commit is still in flight
    # when the release decides.
    store.append_gate.close()
    bob = gateway.join(3)
    await synced(bob)
    type_text(bob, "b")
    await asyncio.wait_for(store.append_gate.entered.wait(), timeout=10)
    gateway.leave(3)
    await wait_until(lambda: host.stats()["connections"] == 0, message="bob gone")
    store.snapshot_gate.open()
    # The release must wait for Bob's commit, then keep the board: the snapshot
    # it wrote does not hold his edit.
    await asyncio.sleep(0.2)
    assert not release.done()
    store.append_gate.open()
    assert await asyncio.wait_for(release, timeout=10) is False

    carol = gateway.join(4)
    await synced(carol)
    await host.flush()
    gateway.leave(4)
    await wait_until(lambda: host.stats()["connections"] == 0, message="carol gone")
    await host.release(BOARD)
    # What a client opening the board now would get.
    assert rebuild(await store.load(BOARD)) == "ab"


async def test_a_dropped_gateway_link_removes_its_clients_presence(make_host: MakeHost) -> None:
    host, first = await make_host()
    other = await second_gateway(host)
    try:
        alice, bob = first.join(1), other.join(1)
        alice.set_awareness({"user": "alice"})
        bob.set_awareness({"user": "bob"})
        await wait_until(lambda: alice.client_id in bob.awareness_states, message="bob sees alice")
        # The gateway process dies: no CLOSE, no awareness "null", just a cut stream.
        first.link.abort()
        await wait_until(
            lambda: alice.client_id not in bob.awareness_states, message="alice removed for bob"
        )
        await wait_until(lambda: host.stats()["connections"] == 1, message="one client left")
    finally:
        await other.close()


async def test_a_bad_frame_closes_only_its_sender(make_host: MakeHost) -> None:
    host, gateway = await make_host()
    alice, bob = gateway.join(1), gateway.join(2)
    await synced(alice, bob)
    gateway.link.send(Frame(BOARD, 2, b"\x07"))
    await wait_until(lambda: 2 in gateway.rejected, message="bob rejected")
    assert gateway.rejected[2][0] == CloseCode.BAD_MESSAGE
    gateway.link.send(Frame(BOARD, 1, b"\x00\x02\x03\x01\x02\x03"))
    await wait_until(lambda: 1 in gateway.rejected, message="alice rejected")
    assert gateway.rejected[1][0] == CloseCode.INVALID_UPDATE
    carol = gateway.join(3)
    await synced(carol)
    assert host.stats()["connections"] == 1


async def test_a_frame_for_a_board_no_longer_loaded_asks_for_a_reconnect(
    make_host: MakeHost,
) -> None:
    host, gateway = await make_host()
    gateway.link.send(Frame("gone", 7, b"\x00\x00\x01\x00"))
    await wait_until(lambda: 7 in gateway.rejected, message="rejected")
    assert gateway.rejected[7][0] == CloseCode.SERVICE_RESTART
    assert host.board_ids() == []


async def test_the_sweep_releases_idle_boards_and_expires_silent_presence(
    make_host: MakeHost,
) -> None:
    now = [1000.0]
    store = MemoryStore()
    host, gateway = await make_host(
        store, clock=lambda: now[0], sweep_seconds=0.01, idle_seconds=30.0
    )
    bob = gateway.join(2)
    # A client that announced itself once and then hung: its connection stays open, it
    # never renews its presence nor answers anything.
    gateway.link.send(Open(BOARD, 1))
    gateway.link.send(Frame(BOARD, 1, presence(42, '{"user":"stuck"}')))
    await wait_until(lambda: 42 in bob.awareness_states, message="bob sees the stuck client")
    type_text(bob, "idle soon")
    now[0] += 31.0
    await wait_until(lambda: 42 not in bob.awareness_states, message="expired")
    assert host.board_ids() == [BOARD]
    gateway.link.send(Close(BOARD, 1))
    gateway.leave(2)
    await wait_until(lambda: host.stats()["connections"] == 0, message="clients gone")
    now[0] += 31.0
    await wait_until(lambda: host.board_ids() == [], message="board released")
    assert rebuild(await store.load(BOARD)) == "idle soon"


async def test_a_step1_queued_behind_an_update_is_answered_with_that_update(
    make_host: MakeHost,
) -> None:
    # A new board is still loading when these arrive together: the answer to the
    # step 1 must include the update the same client sent before it.
    host, _ = await make_host()
    address, port = await host.start()
    link = await open_stream(address, port, secret=host.settings.cluster_secret or b"")
    doc: Doc[Any] = Doc()
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(event.update))
    doc.get("tasks", type=Map)["seeded"] = "yes"
    link.send(Open("fresh-board", 7, False))
    link.send(Frame("fresh-board", 7, sync_update(updates[0])))
    link.send(Frame("fresh-board", 7, sync_step1(b"\x00")))
    answer: Doc[Any] = Doc()
    try:
        async with asyncio.timeout(10):
            while "seeded" not in answer.get("tasks", type=Map):
                batch = await link.read_batches()
                assert batch is not None
                for message in batch:
                    if isinstance(message, Send) and message.conn == 7:
                        for item in decode_frame(message.data):
                            if isinstance(item, SyncStep2):
                                answer.apply_update(item.update)
    finally:
        await link.close()
    assert answer.get("tasks", type=Map).to_py() == {"seeded": "yes"}


class SlowLoadStore(MemoryStore):
    """A memory store whose loads can be held, to act while a board is loading."""

    def __init__(self) -> None:
        super().__init__()
        self.load_gate = _Gate()

    async def load(self, board_id: str) -> StoredBoard:
        await self.load_gate.pass_through()
        return await super().load(board_id)


async def test_a_server_side_call_during_a_loading_open_sees_the_loaded_board(
    make_host: MakeHost,
) -> None:
    store = SlowLoadStore()
    stored: Doc[Any] = Doc()
    stored.get("t", type=Text).insert(0, "stored words")
    await store.append({BOARD: [stored.get_update()]})
    host, gateway = await make_host(store)
    store.load_gate.close()
    gateway.join(1)  # a socket's open starts loading the board; the load waits
    await asyncio.wait_for(store.load_gate.entered.wait(), 10)
    # A REST read arrives meanwhile: it must wait for the board, not read an empty one.
    call = asyncio.create_task(host.run(BOARD, lambda board: str(board.doc.get("t", type=Text))))
    await asyncio.sleep(0.1)
    assert not call.done()
    store.load_gate.open()
    outcome = await asyncio.wait_for(call, 10)
    assert outcome.value == "stored words"
