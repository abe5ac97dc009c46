"""Writers that keep count of what the server acknowledged, and checks of what survived.

An update counts as acknowledged once the server's "persisted up to N" message covers it on
the connection it was sent on. The checks read what is left after a failure without any
writer's help: the store itself (``keys_in_store``, ``keys_in_sqlite``) or a brand-new client
with a fresh document (``keys_seen_by_newcomer``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from pycrdt import Doc, Map

from clients.provider import BoardClient
from persistence.factory import open_store
from persistence.history import merge_state
from persistence.store import BoardStore
from tests.conftest import TIMEOUT_SCALE

BOARD = "steady-board"
# How long a disconnected writer waits for the test to let it reconnect.
PAUSE_LIMIT_S = 120.0


class SteadyWriter:
    """Writes one new key every ``interval`` s; after a disconnect, reconnects once let go.

    Every connection starts from a fresh document, so a reconnect never re-sends what the
    server lost: only the server's own copy of an acknowledged key can keep it alive.
    While disconnected the writer waits for ``gate`` (bounded by ``PAUSE_LIMIT_S``), so a
    test can inspect what survived before any client resyncs.
    """

    def __init__(
        self,
        name: str,
        url: Callable[[], str],
        *,
        interval: float = 0.02,
        board: str = BOARD,
        gate: asyncio.Event | None = None,
    ) -> None:
        self.name = name
        self._url = url
        self._interval = interval
        self._board = board
        self._gate = gate
        self.written = 0
        self.acknowledged: set[str] = set()
        self.reconnects = 0
        self.paused = False
        self.close_codes: list[int | None] = []
        # (update count on the current connection, key) awaiting acknowledgement
        self._unacked: list[tuple[int, str]] = []
        self._client: BoardClient | None = None

    @property
    def doc(self) -> Doc[Any] | None:
        """The current connection's document, if connected."""
        return self._client.doc if self._client is not None else None

    async def run(self, stop: asyncio.Event) -> None:
        """Write until ``stop`` is set; then wait for the last acknowledgements."""
        while not stop.is_set():
            client = await self._connected()
            before = client.updates_sent
            key = f"{self.name}-{self.written}"
            client.doc.get("tasks", type=Map)[key] = self.written
            self.written += 1
            if client.updates_sent > before:
                # Not sent (the socket went down first): it can never be acknowledged.
                self._unacked.append((client.updates_sent, key))
            self._collect(client)
            await asyncio.sleep(self._interval)
        client = await self._connected()
        with contextlib.suppress(Exception):
            await client.persisted(timeout=20 * TIMEOUT_SCALE)
        self._collect(client)
        await client.close()
        self._client = None

    def _collect(self, client: BoardClient) -> None:
        done = client.persisted_seq
        still: list[tuple[int, str]] = []
        for count, key in self._unacked:
            if count <= done:
                self.acknowledged.add(key)
            else:
                still.append((count, key))
        self._unacked = still

    async def _connected(self) -> BoardClient:
        client = self._client
        if client is not None and client.connected:
            return client
        if client is not None:
            self._collect(client)
            self.close_codes.append(client.close_code)
            # Not acknowledged on that connection: never counted, and gone with its document.
            self._unacked.clear()
            self._client = None
            await client.close()
            await self._wait_for_gate()
            self.reconnects += 1
        deadline = asyncio.get_running_loop().time() + 60 * TIMEOUT_SCALE
        while True:
            client = BoardClient(self._url(), self._board)
            try:
                await client.connect()
                await client.synced(timeout=10 * TIMEOUT_SCALE)
                self._client = client
                return client
            except Exception:
                await client.close()
                if asyncio.get_running_loop().time() > deadline:
                    raise
                await asyncio.sleep(0.2)

    async def _wait_for_gate(self) -> None:
        if self._gate is None or self._gate.is_set():
            return
        self.paused = True
        try:
            async with asyncio.timeout(PAUSE_LIMIT_S * TIMEOUT_SCALE):
                await self._gate.wait()
        except TimeoutError:
            raise AssertionError(
                f"writer {self.name} waited {PAUSE_LIMIT_S * TIMEOUT_SCALE:.0f} s"
                " to reconnect: the test never let it go on"
            ) from None
        finally:
            self.paused = False


def acknowledged_keys(writers: Iterable[SteadyWriter]) -> set[str]:
    """Every key the server acknowledged to any of the writers."""
    return {key for writer in writers for key in writer.acknowledged}


def task_keys(state: bytes) -> set[str]:
    """The task keys of a board given as one Yjs update."""
    doc: Doc[Any] = Doc()
    doc.apply_update(state)
    return set(doc.get("tasks", type=Map).keys())


async def keys_in_store(store: BoardStore, board: str = BOARD) -> set[str]:
    """The task keys a board host would load from ``store``: snapshot, then the log."""
    stored = await store.load(board)
    updates = [entry.update for entry in stored.updates]
    return task_keys(await asyncio.to_thread(merge_state, stored.snapshot, updates))


async def keys_in_sqlite(path: Path, board: str = BOARD) -> set[str]:
    """The task keys stored in an embedded store's file; none if there is no file."""
    if not path.exists():
        return set()
    # Sealed at rest: the key ring is found in the file's directory (keys/at-rest.json).
    async with open_store(f"sqlite://{path.resolve()}", data_dir=str(path.parent)) as store:
        return await keys_in_store(store, board)


async def keys_seen_by_newcomer(url: str, board: str = BOARD, *, timeout: float = 60.0) -> set[str]:
    """The task keys a brand-new client, with a fresh document, receives from the server.

    Retries (for up to ``timeout`` scaled seconds) while the board cannot be opened yet, as
    when its host is being restarted.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout * TIMEOUT_SCALE
    while True:
        try:
            async with BoardClient(url, board, ack=False) as reader:
                await reader.synced(timeout=30 * TIMEOUT_SCALE)
                return set(reader.doc.get("tasks", type=Map).keys())
        except Exception:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.2)


def assert_nothing_lost(acknowledged: set[str], present: set[str], where: str) -> None:
    """Fail, naming a few, if an acknowledged key is not ``present``."""
    lost = acknowledged - present
    assert not lost, (
        f"{len(lost)} of {len(acknowledged)} acknowledged updates missing {where},"
        f" e.g. {sorted(lost)[:5]}"
    )
