"""Locust users for Boardcast (or any y-websocket server): open boards and edit them.

Headless, against any Boardcast URL::

    .venv/bin/locust -f bench/locustfile.py --headless -u 50 -r 10 -t 60s \
        --host ws://127.0.0.1:8000/ws --csv /tmp/locust

Each user opens one board (``BENCH_LOCUST_BOARDS`` boards are shared by all users,
default 10), syncs it, then edits: it sets a key of the ``bench`` map and sends a
sync step 1 right behind the update. A server handles one socket's messages in
order, so the step 2 that answers proves the edit was applied: "edit" times that
round trip. Users also renew their awareness state as the stock client does.
Locust reports "open board" (connect to synced) and "edit" in its usual tables.

REST users are future work: Boardcast has no REST API yet (only ``/healthz`` and
``/readyz``).
"""

from __future__ import annotations

import os
import random
import time
from typing import Any

import pycrdt
import websocket  # websocket-client, installed with locust
from locust import User, between, task

from crdt.awareness import AwarenessEntry, encode_awareness
from crdt.protocol import (
    SyncStep1,
    SyncStep2,
    awareness_frame,
    iter_frame,
    sync_step1,
    sync_step2,
    sync_update,
)

BOARDS = int(os.environ.get("BENCH_LOCUST_BOARDS", "10"))
RECEIVE_TIMEOUT_S = 10.0


class BoardUser(User):
    """One person with a board open in a browser tab, editing now and then."""

    wait_time = between(0.5, 2.0)
    host = "ws://127.0.0.1:8000/ws"

    def on_start(self) -> None:
        """Open a board and sync it."""
        self.board = f"locust-board-{random.randrange(BOARDS)}"
        self.doc: pycrdt.Doc[Any] = pycrdt.Doc()
        self.entries = self.doc.get("bench", type=pycrdt.Map)
        self.pending: list[bytes] = []
        self.doc.observe(lambda event: self.pending.append(event.update))
        self.client_id = random.getrandbits(32)
        self.clock = 1
        self.seq = 0
        self.ws: websocket.WebSocket | None = None
        self._timed("open board", self._open)

    def on_stop(self) -> None:
        """Close the socket."""
        if self.ws is not None:
            self.ws.close()

    @task(10)
    def edit(self) -> None:
        """Set one key; time until the server has applied it."""
        self._timed("edit", self._edit)

    @task(1)
    def renew_presence(self) -> None:
        """Re-send the awareness state, as the stock client does every 15 s."""
        if self.ws is None:
            return
        self.clock += 1
        self.ws.send_binary(self._awareness())

    def _open(self) -> None:
        url = f"{self.host.rstrip('/')}/{self.board}"
        self.ws = websocket.create_connection(url, timeout=RECEIVE_TIMEOUT_S)
        self.ws.send_binary(sync_step1(self.doc.get_state()))
        self.ws.send_binary(self._awareness())
        self._until_step2()

    def _edit(self) -> None:
        if self.ws is None:
            self._open()
        assert self.ws is not None
        self.seq += 1
        self.entries[f"u{self.client_id}.{self.seq}"] = f"edited at {time.time():.3f}"
        for update in self.pending:
            self.ws.send_binary(sync_update(update))
        self.pending.clear()
        self.ws.send_binary(sync_step1(self.doc.get_state()))
        self._until_step2()

    def _until_step2(self) -> None:
        """Read frames (answering the server's step 1) until a step 2 arrives."""
        assert self.ws is not None
        deadline = time.monotonic() + RECEIVE_TIMEOUT_S
        while time.monotonic() < deadline:
            data = self.ws.recv()
            if not isinstance(data, bytes) or not data:
                continue
            for message in iter_frame(data):
                if isinstance(message, SyncStep1):
                    self.ws.send_binary(sync_step2(self.doc.get_update(message.state_vector)))
                elif isinstance(message, SyncStep2):
                    return
        raise TimeoutError(f"no sync step 2 within {RECEIVE_TIMEOUT_S} s")

    def _awareness(self) -> bytes:
        state = f'{{"user":{{"name":"locust {self.client_id % 1000}"}}}}'
        return awareness_frame(
            encode_awareness([AwarenessEntry(self.client_id, self.clock, state)])
        )

    def _timed(self, name: str, action: Any) -> None:
        started = time.perf_counter()
        error: Exception | None = None
        try:
            action()
        except Exception as exc:  # reported to locust, which counts failures
            error = exc
            if self.ws is not None:
                self.ws.close()
            self.ws = None
        self.environment.events.request.fire(
            request_type="WS",
            name=name,
            response_time=(time.perf_counter() - started) * 1000,
            response_length=0,
            exception=error,
            context={},
        )
