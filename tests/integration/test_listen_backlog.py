"""A burst of connects reaches the gateway's accept queue whole: nobody waits for a SYN retry.

Every client of a deployment comes back at once after a restart. A connect that finds the
listen queue full is dropped by the kernel and retried by the client's TCP a second later
(then three), which is what the stock provider's users see as a slow reconnect. The
gateway is stopped (SIGSTOP) so that nothing is accepted, then connected to at once: the
connects the kernel completes are the ones the queue holds.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import time
from pathlib import Path

import pytest

from tests.interop.servers import serve_process

BURST = 600


def connects_completed(port: int, count: int, wait_s: float = 0.5) -> int:
    """Start ``count`` connects at once; how many complete within ``wait_s``."""
    sockets = []
    try:
        for _ in range(count):
            client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            client.setblocking(False)
            client.connect_ex(("127.0.0.1", port))
            sockets.append(client)
        completed: set[int] = set()
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and len(completed) < count:
            pending = [s for s in sockets if s.fileno() not in completed]
            _, writable, _ = select.select([], pending, [], 0.05)
            for client in writable:
                if client.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                    completed.add(client.fileno())
        return len(completed)
    finally:
        for client in sockets:
            client.close()


@pytest.mark.parametrize("backlog", [None, 128])
def test_a_burst_of_connects_is_queued_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backlog: int | None
) -> None:
    if backlog is not None:
        # The check's own test: aiohttp's default queue drops most of the burst.
        monkeypatch.setenv("BOARDCAST_LISTEN_BACKLOG", str(backlog))
    server = serve_process(tmp_path, "--backend", "local")
    server.start()
    try:
        pid = server.pid
        os.kill(pid, signal.SIGSTOP)
        try:
            completed = connects_completed(server.port, BURST)
        finally:
            os.kill(pid, signal.SIGCONT)
    finally:
        server.stop()
    if backlog is None:
        assert completed == BURST
    else:
        assert completed <= backlog + 1
