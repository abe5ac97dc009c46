"""A load-generating client that behaves on the wire like the stock y-websocket provider.

What the stock provider (y-websocket 3 with y-protocols' ``Awareness``) does, and
so what this client does:

- on open: send sync step 1 (its state vector), then its own awareness state;
- answer the server's step 1 with the missing part of its document;
- awareness: apply every received update; every entry that is new, newer or
  removed is sent straight back to the server (the provider broadcasts every
  awareness change, its own or not); renew its own state when it is 15 s old
  (checked every 3 s); drop peers silent for 30 s and announce their removal;
- close the socket when nothing arrived for 30 s, and reconnect after
  100 ms (doubling after failed attempts, up to 2.5 s), then resync;
- while disconnected, edits stay in the document and leave with the resync.

Receivers never apply updates: they scan the bytes for the markers (see
:mod:`bench.ledger`), which keeps the load generator cheap.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pycrdt

from bench.ledger import Ledger
from bench.wire import Wire, WireError
from crdt.awareness import NULL_STATE, AwarenessEntry, decode_awareness, encode_awareness
from crdt.errors import ProtocolError
from crdt.protocol import (
    AwarenessUpdate,
    PermissionDenied,
    QueryAwareness,
    SyncStep1,
    SyncStep2,
    SyncUpdate,
    awareness_frame,
    iter_frame,
    sync_step1,
    sync_step2,
)

EMPTY_STATE_VECTOR = b"\x00"
EMPTY_UPDATE = b"\x00\x00"
_COLORS = ("#30bced", "#6eeb83", "#ffbc42", "#ecd444", "#ee6352", "#9ac2c9", "#8acb88")


@dataclass(frozen=True)
class Behaviour:
    """Timings of the stock provider; ``awareness``/``reconnect`` switch those parts off."""

    awareness: bool = True
    reconnect: bool = True
    renew_s: float = 15.0
    check_s: float = 3.0
    outdated_s: float = 30.0
    silence_timeout_s: float = 30.0
    max_backoff_s: float = 2.5
    connect_timeout_s: float = 30.0


@dataclass
class Counters:
    """Totals over every client of a run."""

    frames_in: int = 0
    bytes_in: int = 0
    awareness_in: int = 0
    awareness_out: int = 0
    connects: int = 0
    connect_failures: int = 0
    disconnects: int = 0
    silence_closes: int = 0
    # How sockets ended: WebSocket close code (None: the connection dropped without one).
    close_codes: Counter[int | None] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)

    def error(self, text: str) -> None:
        """Keep the first few error messages."""
        if len(self.errors) < 20:
            self.errors.append(text)


def is_single_update(data: bytes) -> bool:
    """True if the frame is exactly one sync update (the hot path: no full decode)."""
    if len(data) < 3 or data[0] != 0 or data[1] != 2:
        return False
    length = shift = 0
    for pos in range(2, min(len(data), 12)):
        byte = data[pos]
        length |= (byte & 0x7F) << shift
        if byte < 0x80:
            return pos + 1 + length == len(data)
        shift += 7
    return False


class StockClient:
    """One emulated browser tab on one board.

    Args:
        session: the aiohttp session to connect with.
        wire: how the target frames messages.
        base_url: the target's WebSocket URL.
        board: the board (room, document) name.
        ledger: where deliveries are counted.
        counters: totals shared by every client of the run.
        behaviour: which parts of the stock provider to emulate.
        writer_id: set for a client that writes (it then keeps a pycrdt document).
    """

    def __init__(
        self,
        *,
        session: aiohttp.ClientSession,
        wire: Wire,
        base_url: str,
        board: str,
        ledger: Ledger,
        counters: Counters,
        behaviour: Behaviour,
        writer_id: int | None = None,
    ) -> None:
        self.session = session
        self.wire = wire
        self.url = wire.socket_url(base_url, board)
        self.board = board
        self.ledger = ledger
        self.counters = counters
        self.behaviour = behaviour
        self.writer_id = writer_id
        self.doc: pycrdt.Doc[Any] | None = pycrdt.Doc() if writer_id is not None else None
        self.client_id = random.getrandbits(32)
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.opened = asyncio.Event()
        self.synced = asyncio.Event()
        self.failed = False
        # Set once the first sync is done, or the client gave up connecting.
        self.settled = asyncio.Event()
        # (connect started, synced) of every sync, first one included.
        self.syncs: list[tuple[float, float]] = []
        self.disconnected_at: list[float] = []
        self.seen: set[bytes] = set()
        # A key to time: when it was first seen (cold opens: the board's content arrived).
        self.watch: bytes | None = None
        self.watch_seen_at: float | None = None
        self._connect_started = 0.0
        self._first_attempt_at: float | None = None
        self._awaiting_sync = False
        self._stopping = False
        self._last_message_at = time.monotonic()
        self._own_clock = 1  # the app sets its user field once: clock 0 -> 1
        self._own_state = (
            f'{{"user":{{"name":"User {self.client_id % 1000}",'
            f'"color":"{_COLORS[self.client_id % len(_COLORS)]}"}}}}'
        )
        self._own_updated = time.monotonic()
        self._meta: dict[int, list[float]] = {}  # client id -> [clock, last updated]
        self._states: dict[int, str] = {}

    @property
    def first_sync_s(self) -> float | None:
        """Seconds from the first connection attempt to the first completed sync."""
        if not self.syncs or self._first_attempt_at is None:
            return None
        return self.syncs[0][1] - self._first_attempt_at

    @property
    def watch_seen_s(self) -> float | None:
        """Seconds from the first connection attempt until ``watch`` was first seen."""
        if self.watch_seen_at is None or self._first_attempt_at is None:
            return None
        return self.watch_seen_at - self._first_attempt_at

    def _note_watch(self) -> None:
        if self.watch is not None and self.watch_seen_at is None and self.watch in self.seen:
            self.watch_seen_at = time.monotonic()

    @property
    def connected(self) -> bool:
        """True while the socket is open."""
        return self.ws is not None and not self.ws.closed

    async def run(self) -> None:
        """Connect, serve the socket, reconnect as the stock provider does, until closed."""
        ticker = asyncio.create_task(self._tick()) if self.behaviour.awareness else None
        failures = 0
        try:
            while not self._stopping:
                if not await self._session_once():
                    failures += 1
                    if not self.behaviour.reconnect:
                        self.failed = True
                        self.opened.set()
                        self.settled.set()
                        return
                else:
                    failures = 0
                if self._stopping or not self.behaviour.reconnect:
                    return
                backoff = min(0.1 * 2**failures, self.behaviour.max_backoff_s)
                await asyncio.sleep(backoff)
        finally:
            if ticker is not None:
                ticker.cancel()

    async def close(self) -> None:
        """Stop reconnecting and close the socket."""
        self._stopping = True
        if self.ws is not None:
            await self.ws.close()

    async def send(self, frame: bytes) -> bool:
        """Send one y-protocol frame if connected; False if it could not leave."""
        ws = self.ws
        if ws is None or ws.closed:
            return False
        try:
            await ws.send_bytes(self.wire.wrap(self.board, frame))
        except (ConnectionError, aiohttp.ClientError, RuntimeError):
            return False
        return True

    async def _session_once(self) -> bool:
        self._connect_started = time.monotonic()
        if self._first_attempt_at is None:
            self._first_attempt_at = self._connect_started
        try:
            async with asyncio.timeout(self.behaviour.connect_timeout_s):
                ws = await self.session.ws_connect(self.url, max_msg_size=0, autoping=True)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            self.counters.connect_failures += 1
            self.counters.error(f"{self.board}: connect: {exc!r}")
            return False
        self.counters.connects += 1
        self.ws = ws
        self._last_message_at = time.monotonic()
        self._awaiting_sync = True
        try:
            for message in self.wire.opening(self.board):
                await ws.send_bytes(message)
            state = EMPTY_STATE_VECTOR if self.doc is None else self.doc.get_state()
            await ws.send_bytes(self.wire.wrap(self.board, sync_step1(state)))
            if self.behaviour.awareness:
                await self._send_awareness([self.client_id])
            self.opened.set()
            await self._read(ws)
        except (ProtocolError, ValueError, WireError) as exc:
            self.counters.error(f"{self.board}: {exc!r}")
            await ws.close()
        except (ConnectionError, aiohttp.ClientError) as exc:
            self.counters.error(f"{self.board}: {exc!r}")
        finally:
            self.ws = None
            self.opened.set()
            if not self._stopping:
                self.counters.close_codes[ws.close_code] += 1
                self.counters.disconnects += 1
                self.disconnected_at.append(time.monotonic())
            self._drop_peers()
        return True

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        counters = self.counters
        async for message in ws:
            if message.type is not aiohttp.WSMsgType.BINARY:
                continue
            data: bytes = message.data
            self._last_message_at = time.monotonic()
            counters.frames_in += 1
            counters.bytes_in += len(data)
            frame, answer = self.wire.unwrap(self.board, data)
            if answer is not None:
                await ws.send_bytes(answer)
            if frame is None:
                continue
            if is_single_update(frame):
                self.ledger.deliver(frame, self.seen, self.writer_id)
                self._note_watch()
                continue
            for item in iter_frame(frame):
                await self._handle(item)

    async def _handle(self, item: object) -> None:
        if isinstance(item, SyncUpdate):
            self.ledger.deliver(item.update, self.seen, self.writer_id)
            self._note_watch()
        elif isinstance(item, AwarenessUpdate):
            self.counters.awareness_in += 1
            await self._on_awareness(item.payload)
        elif isinstance(item, SyncStep1):
            missing = EMPTY_UPDATE if self.doc is None else self.doc.get_update(item.state_vector)
            await self.send(sync_step2(missing))
        elif isinstance(item, SyncStep2):
            if self.doc is not None:
                self.doc.apply_update(item.update)
            self.ledger.deliver(item.update, self.seen, self.writer_id, resync=True)
            self._note_watch()
            if self._awaiting_sync:
                self._awaiting_sync = False
                self.syncs.append((self._connect_started, time.monotonic()))
                self.synced.set()
                self.settled.set()
        elif isinstance(item, QueryAwareness):
            await self._send_awareness([self.client_id, *self._states])
        elif isinstance(item, PermissionDenied):
            raise WireError(f"permission denied: {item.reason}")

    async def _on_awareness(self, payload: bytes) -> None:
        """Apply an update as y-protocols does; send back every entry that changed."""
        now = time.monotonic()
        changed: list[int] = []
        for entry in decode_awareness(payload):
            client = entry.client_id
            if client == self.client_id:
                if entry.state == NULL_STATE and entry.clock >= self._own_clock:
                    # Someone announced our removal: the provider insists it is still here.
                    self._own_clock = entry.clock + 1
                    changed.append(client)
                continue
            meta = self._meta.get(client)
            present = client in self._states
            newer = meta is None or meta[0] < entry.clock
            removal_of_present = (
                meta is not None
                and meta[0] == entry.clock
                and entry.state == NULL_STATE
                and present
            )
            if newer or removal_of_present:
                self._meta[client] = [entry.clock, now]
                if entry.state == NULL_STATE:
                    if present:
                        del self._states[client]
                        changed.append(client)
                else:
                    self._states[client] = entry.state
                    changed.append(client)
        if changed and self.behaviour.awareness:
            await self._send_awareness(changed)

    async def _send_awareness(self, clients: list[int]) -> None:
        entries = []
        for client in clients:
            if client == self.client_id:
                entries.append(AwarenessEntry(client, self._own_clock, self._own_state))
            else:
                clock = int(self._meta[client][0]) if client in self._meta else 0
                entries.append(AwarenessEntry(client, clock, self._states.get(client, NULL_STATE)))
        if await self.send(awareness_frame(encode_awareness(entries))):
            self.counters.awareness_out += 1

    def _drop_peers(self) -> None:
        # The provider removes every peer's state when its socket closes.
        for client in list(self._states):
            del self._states[client]
            self._meta[client][0] += 1

    async def _tick(self) -> None:
        behaviour = self.behaviour
        await asyncio.sleep(random.uniform(0, behaviour.check_s))
        while not self._stopping:
            now = time.monotonic()
            if now - self._own_updated >= behaviour.renew_s:
                self._own_clock += 1
                self._own_updated = now
                await self._send_awareness([self.client_id])
            outdated = [
                client
                for client, (_, updated) in self._meta.items()
                if now - updated >= behaviour.outdated_s and client in self._states
            ]
            for client in outdated:
                del self._states[client]
                self._meta[client] = [self._meta[client][0] + 1, now]
            if outdated:
                await self._send_awareness(outdated)
            ws = self.ws
            if ws is not None and now - self._last_message_at > behaviour.silence_timeout_s:
                self.counters.silence_closes += 1
                await ws.close()
            await asyncio.sleep(behaviour.check_s)
