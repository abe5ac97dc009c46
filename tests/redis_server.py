"""A real Redis for tests: Debian's ``redis-server`` on a free loopback port, nothing on disk.

``BOARDCAST_TEST_REDIS_URL`` points the tests at a server of your own instead (each test then
works under a key prefix of its own, deleted afterwards). Without it, the ``redis_server``
fixture starts ``redis-server`` once per test session, or skips if it is not installed
(``apt-get install -y redis-server``; ``./scripts/test`` does it) -- fails, under ``CI=true``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.services import ServiceProcess, service_missing

REDIS_URL_SETTING = "BOARDCAST_TEST_REDIS_URL"


class RedisServer(ServiceProcess):
    """One ``redis-server`` process on a loopback port, with persistence off.

    ``stop`` then ``start`` is a server restart that loses every key, as in production
    without persistence; the port stays the same, so clients reconnect to it.
    """

    name = "redis-server"
    start_timeout = 20.0
    stop_timeout = 10.0

    def __init__(self, *, port: int | None = None, log_dir: Path | None = None) -> None:
        super().__init__(port)
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log_dir = log_dir if log_dir is not None else Path(tempfile.gettempdir())

    def command(self) -> list[str]:
        """``redis-server`` on our port, saving nothing."""
        command = shutil.which("redis-server")
        if command is None:
            raise RuntimeError("redis-server is not installed: apt-get install -y redis-server")
        return [
            *[command, "--port", str(self.port), "--bind", "127.0.0.1"],
            *["--save", "", "--appendonly", "no", "--dir", str(self.log_dir)],
        ]

    def log_path(self) -> Path:
        """``redis-PORT.log`` in the log directory."""
        return self.log_dir / f"redis-{self.port}.log"

    def answers(self) -> bool:
        """True once the server answers PING."""
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.2, socket_timeout=0.2)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()


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
        service_missing("redis-server is not installed (apt-get install -y redis-server)")
    with running_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server.url
