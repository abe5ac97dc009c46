"""The servers the bench compares, and how it starts and stops each on a free loopback port.

Every target runs as a child process in a session of its own, listening on
127.0.0.1. ``start`` waits (bounded) for the server's ready line; ``stop`` sends
SIGTERM, then SIGKILLs the process group and every process found with
:class:`bench.processes.ServerTree` (Ray workers have their own groups). The
bench never runs ``ray stop``: that would stop other people's clusters too.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.paths import PEERS, ROOT
from bench.processes import ServerTree

READY_TIMEOUT_S = float(os.environ.get("BENCH_READY_TIMEOUT", "120"))
STOP_TIMEOUT_S = 30.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _boardcast(extra: list[str]) -> Callable[[int, str], list[str]]:
    def command(port: int, data_dir: str) -> list[str]:
        script = Path(sys.executable).with_name("boardcast")
        head = [str(script)] if script.exists() else [sys.executable, "-m", "boardcast"]
        return [
            *head,
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--data-dir",
            data_dir,
            # The peers check nobody either: the same work is measured.
            *("--auth", "none"),
            *extra,
        ]

    return command


def _node(script: str) -> Callable[[int, str], list[str]]:
    return lambda port, data_dir: ["node", script]


def _node_leveldb(script: str) -> Callable[[int, str], list[str]]:
    # y-websocket-server keeps every document in y-leveldb under $YPERSISTENCE when it is set.
    return lambda port, data_dir: ["env", f"YPERSISTENCE={data_dir}/leveldb", "node", script]


def _pycrdt(port: int, data_dir: str) -> list[str]:
    return [sys.executable, str(PEERS / "pycrdt_server.py"), "--port", str(port)]


@dataclass(frozen=True)
class Target:
    """One server under test.

    Attributes:
        name: the name used on the command line and in reports.
        wire: ``y-websocket`` or ``hocuspocus`` (see :mod:`bench.wire`).
        persistent: boards survive a restart as configured here.
        ray: runs board hosts on Ray (failover applies).
        ready: a regular expression matched against the server's output.
        url_path: the WebSocket base path (``/ws`` for Boardcast).
    """

    name: str
    wire: str
    persistent: bool
    ray: bool
    ready: str
    url_path: str
    command: Callable[[int, str], list[str]]
    cwd: Path = ROOT
    env: dict[str, str] = field(default_factory=dict)


TARGETS: dict[str, Target] = {
    target.name: target
    for target in (
        Target("boardcast", "y-websocket", True, True, r"Boardcast serve ready", "/ws",
               _boardcast([])),
        Target("boardcast-memory", "y-websocket", False, True, r"Boardcast serve ready", "/ws",
               _boardcast(["--store", "memory"])),
        Target("boardcast-local", "y-websocket", True, False, r"Boardcast serve ready", "/ws",
               _boardcast(["--backend", "local"])),
        # On Ray, with this node's board hosts in the gateway's process: no failover scenario
        # (killing a host kills the gateway too).
        Target("boardcast-in-gateway", "y-websocket", True, False, r"Boardcast serve ready",
               "/ws", _boardcast(["--hosts-in-gateway"])),
        Target("y-websocket", "y-websocket", False, False, r"running at", "",
               _node("node_modules/@y/websocket-server/src/server.js"), cwd=PEERS,
               env={"HOST": "127.0.0.1"}),
        # The reference server with its own persistence: y-leveldb in the run's data dir.
        Target("y-websocket-leveldb", "y-websocket", True, False, r"running at", "",
               _node_leveldb("node_modules/@y/websocket-server/src/server.js"), cwd=PEERS,
               env={"HOST": "127.0.0.1"}),
        Target("hocuspocus", "hocuspocus", False, False, r"hocuspocus ready", "",
               _node("hocuspocus.mjs"), cwd=PEERS),
        Target("pycrdt-websocket", "y-websocket", False, False, r"pycrdt-websocket ready", "",
               _pycrdt),
    )
}  # fmt: skip


class ServerProcess:
    """A running target: its process, port, data directory and log file."""

    def __init__(
        self,
        target: Target,
        log_path: Path,
        *,
        data_dir: str | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.target = target
        self.extra_env = dict(extra_env or {})
        self.port = free_port()
        self.log_path = log_path
        self._own_data_dir = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix=f"bench-{target.name}-")
        self.process: subprocess.Popen[bytes] | None = None
        self.tree: ServerTree | None = None
        self.started_at = 0.0
        self.ready_s = 0.0

    @property
    def url(self) -> str:
        """The WebSocket base URL."""
        return f"ws://127.0.0.1:{self.port}{self.target.url_path}"

    @property
    def http_url(self) -> str:
        """The HTTP base URL (Boardcast's ``/readyz``)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        """The root process id."""
        assert self.process is not None
        return self.process.pid

    def start(self) -> None:
        """Launch the server and wait for its ready line (bounded)."""
        target = self.target
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        env = {
            **os.environ,
            **target.env,
            **self.extra_env,
            "PORT": str(self.port),
            "PYTHONUNBUFFERED": "1",
        }
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        with open(self.log_path, "ab") as log:
            log.write(f"$ {' '.join(target.command(self.port, self.data_dir))}\n".encode())
            log.flush()
            self.started_at = time.monotonic()
            self.process = subprocess.Popen(
                target.command(self.port, self.data_dir),
                cwd=target.cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.tree = ServerTree(self.process.pid)
        pattern = re.compile(target.ready.encode())
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            with open(self.log_path, "rb") as log:
                log.seek(offset)
                if pattern.search(log.read()):
                    break
            if self.process.poll() is not None:
                raise RuntimeError(f"{target.name} exited early; see {self.log_path}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{target.name} not ready in {READY_TIMEOUT_S} s")
            time.sleep(0.1)
        self.ready_s = time.monotonic() - self.started_at

    def stop(self, *, timeout: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM, wait, then SIGKILL the group and every process of the server."""
        process, tree = self.process, self.tree
        if process is None or tree is None:
            return
        tree.refresh(session_scan_every=0.0)  # know the Ray processes before the root goes
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        tree.kill_all()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(10)
        self.process = None

    def kill(self) -> None:
        """SIGKILL the server at once (a crash), every process of it."""
        if self.process is not None and self.tree is not None:
            self.tree.refresh(session_scan_every=0.0)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.tree.kill_all()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(10)
            self.process = None

    def cleanup(self) -> None:
        """Remove the data directory if the bench made it."""
        if self._own_data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)


class Sampler:
    """The sampler child process watching one server (see :mod:`bench.sampler`)."""

    def __init__(self, root_pid: int, out_path: Path, *, interval: float = 1.0) -> None:
        self.out_path = out_path
        out_path.parent.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "bench.sampler",
                "--pid", str(root_pid), "--out", str(out_path), "--interval", str(interval),
            ],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip

    def stop(self) -> None:
        """Stop sampling (bounded wait)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
