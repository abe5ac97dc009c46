"""A client that writes steadily and keeps count of what the server acknowledged."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from pycrdt import Doc, Map

from clients.provider import BoardClient
from tests.conftest import TIMEOUT_SCALE

BOARD = "steady-board"


class SteadyWriter:
    """Writes one new key every ``interval`` s, reconnecting after any disconnect."""

    def __init__(
        self,
        name: str,
        url: Callable[[], str],
        *,
        interval: float = 0.02,
        board: str = BOARD,
    ) -> None:
        self.name = name
        self._url = url
        self._interval = interval
        self.doc: Doc[Any] = Doc()
        self.written = 0
        self.acknowledged: set[str] = set()
        self.reconnects = 0
        # (update count on the current connection, key) awaiting acknowledgement
        self._unacked: list[tuple[int, str]] = []
        self._client: BoardClient | None = None
        self._board = board
        self.close_codes: list[int | None] = []

    async def run(self, stop: asyncio.Event) -> None:
        """Write until ``stop`` is set; then wait for the last acknowledgements."""
        while not stop.is_set():
            client = await self._connected()
            if not client.connected:
                continue
            key = f"{self.name}-{self.written}"
            self.doc.get("tasks", type=Map)[key] = self.written
            self.written += 1
            self._unacked.append((client.updates_sent, key))
            self._collect(client)
            await asyncio.sleep(self._interval)
        client = await self._connected()
        with contextlib.suppress(Exception):
            await client.persisted(timeout=20 * TIMEOUT_SCALE)
        self._collect(client)
        await client.close()

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
            # Not acknowledged on that connection: still in our document, and
            # re-sent in the next sync, but not counted as acknowledged.
            self._unacked.clear()
            await client.close()
            self.reconnects += 1
        deadline = asyncio.get_running_loop().time() + 60 * TIMEOUT_SCALE
        while True:
            client = BoardClient(self._url(), self._board, doc=self.doc)
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
