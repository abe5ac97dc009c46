"""`boardcast serve` and `boardcast gateway` as child processes on loopback ports."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.services import TIMEOUT_SCALE, free_port

# "Boardcast serve ready: ws://127.0.0.1:8000/ws (ray 127.0.0.1:6379)"
READY_LINE = re.compile(r"wss?://(?P<host>[\w.\-\[\]:]+?):(?P<port>\d+)/ws")
RAY_ADDRESS = re.compile(r"\(ray (?P<address>[^)\s]+)\)")
# Starting Ray locally takes 5-15 s on a 2-core machine; leave room for a loaded CI run.
READY_TIMEOUT = 120.0 * TIMEOUT_SCALE
STOP_TIMEOUT = 30.0 * TIMEOUT_SCALE
# Extra `boardcast serve` flags, e.g. "--backend local" to run the suite without Ray.
SERVE_ARGS = os.environ.get("BOARDCAST_INTEROP_SERVE_ARGS", "").split()
_OUTPUT_KEPT = 400


def boardcast_command() -> list[str]:
    """How to run the `boardcast` command of the interpreter running the tests."""
    script = Path(sys.executable).with_name("boardcast")
    if script.exists():
        return [str(script)]
    found = shutil.which("boardcast")
    if found is not None:
        return [found]
    return [sys.executable, "-m", "boardcast"]


class BoardcastProcess:
    """One `boardcast serve` or `boardcast gateway` process on a fixed loopback port.

    `start()` returns once the process printed its ready line; `stop()` sends SIGTERM and
    falls back to SIGKILL of the process group; `restart()` does both on the same port.
    """

    def __init__(self, command: str, *, port: int, extra_args: list[str] | None = None) -> None:
        self.command = command
        self.port = port
        self.extra_args = list(extra_args or [])
        self.ray_address: str | None = None
        self.output: list[str] = []
        self._process: subprocess.Popen[str] | None = None
        self._ready = threading.Event()
        self._reader: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The y-websocket base URL: a board's socket is `{url}/{board_id}`."""
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def pid(self) -> int:
        """The process's id (it leads its own process group)."""
        assert self._process is not None, "not started"
        return self._process.pid

    @property
    def running(self) -> bool:
        """True while the process is alive."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Launch the process and wait (bounded) for its ready line."""
        if self.running:
            raise RuntimeError(f"boardcast {self.command} already running")
        args = [
            *boardcast_command(),
            self.command,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            *self.extra_args,
        ]
        self._ready.clear()
        self.output.append(f"$ {' '.join(args)}")
        self._process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            # Its own process group, so a stuck server and everything it spawned can be killed.
            start_new_session=True,
            # Tests of auth pass --auth required; the others act as the local administrator.
            env={"BOARDCAST_AUTH": "none", **os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self._reader = threading.Thread(
            target=self._read_output, args=(self._process,), daemon=True
        )
        self._reader.start()
        deadline = time.monotonic() + READY_TIMEOUT
        while not self._ready.wait(0.1):
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"boardcast {self.command} exited with {self._process.returncode} before "
                    f"it was ready:\n{self.output_tail()}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"boardcast {self.command} not ready after {READY_TIMEOUT} s:\n"
                    f"{self.output_tail()}"
                )

    def stop(self, *, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM, then SIGKILL to the whole process group after `timeout`; the exit code."""
        process = self._process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.output.append(f"(no exit {timeout} s after SIGTERM: killing the group)")
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)
        # Children left behind by a clean exit would hold ports and memory.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        if self._reader is not None:
            self._reader.join(5)
        self._process = None
        return process.returncode

    def kill(self) -> None:
        """SIGKILL the process group at once, as a crash would."""
        process = self._process
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
        if self._reader is not None:
            self._reader.join(5)
        self._process = None

    def restart(self) -> None:
        """Stop, then start again on the same port with the same arguments."""
        self.stop()
        self.start()

    async def arestart(self) -> None:
        """`restart()` off the event loop, so the loop's own clients keep running."""
        await asyncio.to_thread(self.restart)

    async def astart(self) -> None:
        """`start()` off the event loop."""
        await asyncio.to_thread(self.start)

    async def astop(self) -> None:
        """`stop()` off the event loop."""
        await asyncio.to_thread(self.stop)

    def output_tail(self, lines: int = 40) -> str:
        """The last lines the process printed."""
        return "\n".join(self.output[-lines:])

    def _read_output(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self.output.append(line.rstrip())
            del self.output[:-_OUTPUT_KEPT]
            if not self._ready.is_set() and READY_LINE.search(line):
                ray = RAY_ADDRESS.search(line)
                if ray is not None:
                    self.ray_address = ray.group("address")
                self._ready.set()


def serve_process(data_dir: Path, *extra_args: str) -> BoardcastProcess:
    """A `boardcast serve` process (not yet started) on a free port."""
    return BoardcastProcess(
        "serve",
        port=free_port(),
        extra_args=["--data-dir", str(data_dir), *SERVE_ARGS, *extra_args],
    )


def gateway_process(ray_address: str) -> BoardcastProcess:
    """A second gateway (not yet started) on a free port, joining the given Ray cluster."""
    return BoardcastProcess("gateway", port=free_port(), extra_args=["--address", ray_address])
