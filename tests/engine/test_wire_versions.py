"""Today's host and gateway against a peer of the previous release, frame for frame.

The previous release's frames are recorded in ``tests/fixtures/wire/<commit>.json`` by
``tests/fixtures/wire/record_frames.py`` (run with that commit's code), so these tests
need neither git history nor the old code. They check, in order: the stream handshake
is the same bytes; every message kind decodes from, and encodes to, the old bytes; a live
host of today serves the old gateway's recorded session (and answers only in layouts the
old gateway decodes); a live gateway of today serves a real WebSocket client through a
host that answers with the old host's recorded frames. The policy they hold is in
docs/operations.md (*Upgrades*).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import msgpack
import pytest
from aiohttp import web
from pycrdt import Doc, Map

from actors.cluster import Cluster
from actors.handshake import Handshake, Role
from actors.host import BoardHost, HostSettings
from actors.messages import (
    BROADCAST,
    FRAME,
    OPEN,
    PERSISTED,
    PROTOCOL_VERSION,
    SEND,
    decode,
    encode,
)
from actors.stream import authenticate
from actors.transactions import Outcome
from clients.provider import BoardClient
from crdt.board import Board
from crdt.protocol import SyncStep2, SyncUpdate, decode_frame
from gateway.app import create_app
from gateway.settings import Settings
from persistence.memory import MemoryStore
from tests.services import TIMEOUT_SCALE

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "wire"
T = TypeVar("T")

#: The previous release, whose peers today's code must serve.
PREVIOUS_RELEASE = "7f02314"


def golden() -> dict[str, Any]:
    path = FIXTURES / f"{PREVIOUS_RELEASE}.json"
    # Committed with the tests: missing, it is a broken checkout, never a reason to skip.
    recorded: dict[str, Any] = json.loads(path.read_text())
    assert recorded["commit"] == PREVIOUS_RELEASE
    return recorded


def unb64(text: str) -> bytes:
    return base64.b64decode(text)


def field_value(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"b64"}:
        return unb64(value["b64"])
    return value


def raw_messages(frames: list[str]) -> list[list[Any]]:
    return [msgpack.unpackb(unb64(frame), raw=False) for frame in frames]


def old_layouts() -> set[tuple[int, int]]:
    """(kind, array length) of every message the old release writes: what it decodes."""
    return {
        (raw[0], len(raw))
        for raw in raw_messages([m["bytes"] for m in golden()["messages"]])
        + raw_messages(golden()["conversation"]["host_sent"])
        + raw_messages(golden()["conversation"]["gateway_sent"])
    }


def test_the_previous_release_is_at_most_one_protocol_version_behind() -> None:
    assert PROTOCOL_VERSION - golden()["protocol_version"] in (0, 1)


def test_the_stream_handshake_is_the_previous_releases_byte_for_byte() -> None:
    recorded = golden()["handshake"]
    secret = unb64(recorded["secret"])
    gateway = Handshake(secret, Role.GATEWAY, nonce=unb64(recorded["gateway_nonce"]))
    host = Handshake(secret, Role.HOST, nonce=unb64(recorded["host_nonce"]))
    assert gateway.data_to_send() == unb64(recorded["gateway_opening"])
    assert host.data_to_send() == unb64(recorded["host_opening"])
    # Each side of today accepts what the old other side sent, and answers as it did.
    gateway.receive_data(unb64(recorded["host_opening"]))
    assert gateway.data_to_send() == unb64(recorded["gateway_proof"])
    host.receive_data(unb64(recorded["gateway_opening"]))
    host.receive_data(unb64(recorded["gateway_proof"]))
    assert host.data_to_send() == unb64(recorded["host_proof"])
    gateway.receive_data(unb64(recorded["host_proof"]))
    assert gateway.established and host.established


@pytest.mark.parametrize("index", range(10))
def test_every_message_kind_reads_and_writes_the_previous_releases_bytes(index: int) -> None:
    sample = golden()["messages"][index]
    data = unb64(sample["bytes"])
    message = decode(msgpack.unpackb(data, raw=False))
    assert type(message).__name__ == sample["kind"]
    fields = {name: field_value(value) for name, value in sample["fields"].items()}
    assert {name: getattr(message, name) for name in fields} == fields
    # Today's encoding of the same message is what the old peer decodes: the same bytes.
    assert msgpack.packb(encode(message), use_bin_type=True) == data


def test_trailing_fields_a_newer_release_appends_are_ignored() -> None:
    for sample in golden()["messages"]:
        raw = msgpack.unpackb(unb64(sample["bytes"]), raw=False)
        assert decode([*raw, "a field from a newer release", 7]) == decode(raw)


# -- today's host, an old gateway ----------------------------------------------------------


class Peer:
    """One end of a frame stream, after the handshake: raw msgpack arrays in and out."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.unpacker = msgpack.Unpacker(raw=False)
        self.received: list[list[Any]] = []

    def write(self, frames: list[str]) -> None:
        self.writer.write(b"".join(unb64(frame) for frame in frames))

    def write_raw(self, *arrays: list[Any]) -> None:
        self.writer.write(b"".join(msgpack.packb(a, use_bin_type=True) for a in arrays))

    async def until(self, done: Callable[[list[Any]], bool], timeout: float = 10.0) -> list[Any]:
        async with asyncio.timeout(timeout * TIMEOUT_SCALE):
            while True:
                for raw in self.received:
                    if done(raw):
                        return raw
                data = await self.reader.read(65536)
                if not data:
                    raise AssertionError(f"the stream closed; got {self.received}")
                self.unpacker.feed(data)
                self.received.extend(self.unpacker)


def tasks_from(payloads: list[bytes]) -> dict[str, Any]:
    doc: Doc[Any] = Doc()
    for payload in payloads:
        for item in decode_frame(payload):
            if isinstance(item, SyncStep2 | SyncUpdate):
                doc.apply_update(item.update)
    return dict(doc.get("tasks", type=Map).to_py() or {})


async def test_todays_host_serves_the_previous_releases_gateway_frame_for_frame() -> None:
    recorded = golden()
    secret = unb64(recorded["handshake"]["secret"])
    conversation = recorded["conversation"]
    sent = conversation["gateway_sent"]
    host = BoardHost("today", MemoryStore(), HostSettings(cluster_secret=secret))
    address, port = await host.start()
    try:
        reader, writer = await asyncio.open_connection(address, port)
        await authenticate(reader, writer, secret=secret, role=Role.GATEWAY, timeout=5)
        old = Peer(reader, writer)
        # The recorded session, in its two phases: each client waits for its acknowledgement.
        old.write(sent[:4])
        await old.until(lambda raw: raw[0] == PERSISTED and raw[1:] == [1, 1])
        old.write(sent[4:7])
        await old.until(lambda raw: raw[0] == PERSISTED and raw[1:] == [2, 1])
        old.write(sent[7:])
        writer.close()
        layouts = old_layouts()
        for raw in old.received:
            assert (raw[0], len(raw)) in layouts, f"the old gateway cannot decode {raw!r}"[:300]
        hello = old.received[0]
        assert hello[:1] == [0] and hello[2] == "host"
        # What each old client was sent holds the other's task (Broadcast skips its author).
        to: dict[int, list[bytes]] = {1: [], 2: []}
        for raw in old.received:
            if raw[0] == SEND:
                to[raw[1]].append(raw[2])
            elif raw[0] == BROADCAST:
                for conn in to:
                    if conn != raw[2]:
                        to[conn].append(raw[3])
        tasks = conversation["tasks"]
        assert tasks_from(to[2]).get("first") == tasks["first"]
        assert tasks_from(to[1]).get("second") == tasks["second"]
        stored = await host.store.load(conversation["board"])
        assert tasks_from([_as_step2(entry.update) for entry in stored.updates]) == tasks
    finally:
        await host.stop()


def _as_step2(update: bytes) -> bytes:
    from crdt.protocol import sync_step2

    return sync_step2(update)


# -- today's gateway, an old host ----------------------------------------------------------


class OldHost:
    """A host that answers with the previous release's recorded frames, and keeps what it got.

    Its answers are the recorded ones with two changes: the connection id, which each
    gateway picks for itself, is the one this gateway gave the client; and the count
    an acknowledgement carries is this client's, as the old host counts it.
    """

    def __init__(self, recorded: dict[str, Any]) -> None:
        self.secret = unb64(recorded["handshake"]["secret"])
        conversation = recorded["conversation"]
        replies = raw_messages(conversation["host_sent"])
        self.hello = replies[0]
        # The second client's: it joined a board holding the first client's task.
        self.on_open = [raw for raw in replies if raw[0] == SEND and raw[1] == 2]
        self.on_update = next(raw for raw in replies if raw[0] == PERSISTED and raw[1] == 2)
        self.broadcast = next(raw for raw in replies if raw[0] == BROADCAST)
        self.got: list[list[Any]] = []
        self.updates: dict[int, int] = {}  # update messages received, by connection
        self.peers: list[Peer] = []

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await authenticate(reader, writer, secret=self.secret, role=Role.HOST, timeout=5)
        peer = Peer(reader, writer)
        self.peers.append(peer)
        with contextlib.suppress(ConnectionError, AssertionError, TimeoutError):
            while data := await reader.read(65536):
                peer.unpacker.feed(data)
                for raw in peer.unpacker:
                    self.got.append(raw)
                    self._answer(peer, raw)

    def _answer(self, peer: Peer, raw: list[Any]) -> None:
        if raw[0] == 0:
            peer.write_raw(self.hello)
        elif raw[0] == OPEN:
            conn = raw[2]
            peer.write_raw(*([SEND, conn, *reply[2:]] for reply in self.on_open))
        elif raw[0] == FRAME:
            conn, items = raw[2], decode_frame(raw[3])
            updates = sum(isinstance(item, SyncStep2 | SyncUpdate) for item in items)
            self.updates[conn] = self.updates.get(conn, 0) + updates
            if any(isinstance(item, SyncUpdate) for item in items):
                # The recorded acknowledgement, counting this client's update messages.
                peer.write_raw([PERSISTED, conn, self.updates[conn], *self.on_update[3:]])
                # Another client of the old host's, on another gateway's connection id.
                peer.write_raw([BROADCAST, raw[1], conn + 1000, *self.broadcast[3:]])


class PinnedCluster(Cluster):
    """Every board on one host at a fixed address: the control plane of this test."""

    def __init__(self, address: tuple[str, int], secret: bytes) -> None:
        self.address, self.secret = address, secret

    async def locate(self, board_id: str) -> str:
        return "old-host"

    async def endpoint(self, host_name: str) -> tuple[str, int]:
        return self.address

    def forget(self, host_name: str) -> None:
        pass

    @property
    def stream_secret(self) -> bytes:
        return self.secret

    async def transact(
        self,
        board_id: str,
        change: Callable[[Board], object],
        *,
        idempotency_key: str | None = None,
    ) -> int:
        raise NotImplementedError("no REST in this test")

    async def run(
        self,
        board_id: str,
        function: Callable[[Board], T],
        *,
        idempotency_key: str | None = None,
        origin: str | None = None,
    ) -> Outcome[T]:
        # What a gateway runs on boards at start (the project directory) finds nothing to do.
        return Outcome(0, None)

    async def stats(self) -> list[dict[str, Any]]:
        return []

    async def close(self) -> None:
        pass


@contextlib.asynccontextmanager
async def gateway_before(old: OldHost, data_dir: Path) -> AsyncIterator[str]:
    server = await asyncio.start_server(old.serve, "127.0.0.1", 0)
    address = server.sockets[0].getsockname()[:2]
    settings = Settings(port=0, data_dir=str(data_dir), backend="local", auth="none")
    app = create_app(settings, PinnedCluster(address, old.secret))
    runner = web.AppRunner(app, shutdown_timeout=2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"ws://127.0.0.1:{runner.addresses[0][1]}/ws"
    finally:
        await runner.cleanup()
        server.close()
        for peer in old.peers:
            peer.writer.close()
        await server.wait_closed()


async def test_todays_gateway_serves_a_client_through_the_previous_releases_host(
    tmp_path: Path,
) -> None:
    recorded = golden()
    old = OldHost(recorded)
    tasks = recorded["conversation"]["tasks"]
    async with (
        gateway_before(old, tmp_path) as url,
        BoardClient(url, recorded["conversation"]["board"]) as client,
    ):
        await client.synced(timeout=10 * TIMEOUT_SCALE)
        board = client.doc.get("tasks", type=Map)
        assert board.get("first") == tasks["first"]  # the old host's step 2 reached the client
        board["mine"] = "written through today's gateway"
        await client.persisted(timeout=10 * TIMEOUT_SCALE)  # its acknowledgement too

        async def broadcast_arrived() -> None:
            while board.get("second") != tasks["second"]:
                await asyncio.sleep(0.02)

        await asyncio.wait_for(broadcast_arrived(), 10 * TIMEOUT_SCALE)
    # Everything today's gateway sent is in a layout the old host decodes.
    layouts = old_layouts()
    assert old.got and old.got[0][:2] == [0, PROTOCOL_VERSION]
    for raw in old.got:
        assert (raw[0], len(raw)) in layouts, f"the old host cannot decode {raw!r}"[:300]
    assert {raw[0] for raw in old.got} >= {0, OPEN, FRAME}
