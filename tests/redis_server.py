"""A real Redis for tests: Debian's ``redis-server`` on a free loopback port, nothing on disk.

``BOARDCAST_TEST_REDIS_URL`` points the tests at a server of your own instead (each test then
works under a key prefix of its own, deleted afterwards). Without it, the ``redis_server``
fixture starts ``redis-server`` once per test session, or skips if it is not installed
(``apt-get install -y redis-server``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

REDIS_URL_SETTING = "BOARDCAST_TEST_REDIS_URL"
# Slow machines can stretch every bounded wait in the suite.
TIMEOUT_SCALE = float(os.environ.get("BOARDCAST_TEST_TIMEOUT_SCALE", "1"))
START_TIMEOUT = 20.0 * TIMEOUT_SCALE
STOP_TIMEOUT = 10.0 * TIMEOUT_SCALE


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class RedisServer:
    """One ``redis-server`` process on a loopback port, with persistence off.

    ``stop`` then ``start`` is a server restart that loses every key, as in production
    without persistence; the port stays the same, so clients reconnect to it.
    """

    def __init__(self, *, port: int | None = None, log_dir: Path | None = None) -> None:
        self.port = port if port is not None else free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log_dir = log_dir if log_dir is not None else Path(tempfile.gettempdir())
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """The running server's pid, or None."""
        return self._process.pid if self._process is not None else None

    def start(self) -> None:
        """Launch the server and return once it answers PING (bounded wait)."""
        command = shutil.which("redis-server")
        if command is None:
            raise RuntimeError("redis-server is not installed: apt-get install -y redis-server")
        log = open(self.log_dir / f"redis-{self.port}.log", "ab")  # noqa: SIM115
        with log:
            self._process = subprocess.Popen(
                [
                    *[command, "--port", str(self.port), "--bind", "127.0.0.1"],
                    *["--save", "", "--appendonly", "no", "--dir", str(self.log_dir)],
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while not self._answers_ping():
            if self._process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self._process.returncode}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"redis-server not answering after {START_TIMEOUT} s")
            time.sleep(0.05)

    def _answers_ping(self) -> bool:
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.2, socket_timeout=0.2)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def stop(self) -> None:
        """SIGTERM the server by its pid, SIGKILL it if it has not exited after a bounded wait."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.kill()
        self._process = None

    def kill(self) -> None:
        """SIGKILL the server at once, as a crash would."""
        process = self._process
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)
        process.wait(STOP_TIMEOUT)
        self._process = None


@contextlib.contextmanager
def running_redis(log_dir: Path | None = None) -> Iterator[RedisServer]:
    """A server of the caller's own, stopped on exit."""
    server = RedisServer(log_dir=log_dir)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def redis_installed() -> bool:
    """Whether ``redis-server`` is on the PATH."""
    return shutil.which("redis-server") is not None


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a Redis server for the session (see the module docstring)."""
    external = os.environ.get(REDIS_URL_SETTING)
    if external:
        yield external
        return
    if not redis_installed():
        pytest.skip("redis-server is not installed (apt-get install -y redis-server)")
    with running_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server.url
