"""A MongoDB-compatible server for store tests: SecantusDB on a free loopback port.

``BOARDCAST_TEST_MONGO_URL`` points the tests at a server of your own instead (each test
then works in a database of its own, dropped afterwards). Without it, the ``mongo_server``
fixture starts ``secantusd-py`` once per test session, or skips if SecantusDB is not installed
(it comes with the ``test`` extra) -- fails, under ``CI=true``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pymongo
import pytest

from tests.services import TIMEOUT_SCALE, ServiceProcess, service_missing

MONGO_URL_SETTING = "BOARDCAST_TEST_MONGO_URL"


def secantus_command() -> str | None:
    """The ``secantusd-py`` of the interpreter running the tests, or None if not installed."""
    if importlib.util.find_spec("secantus") is None:
        return None
    script = Path(sys.executable).with_name("secantusd-py")
    return str(script) if script.exists() else shutil.which("secantusd-py")


def require_secantus() -> None:
    """Skip the calling test if SecantusDB is not installed (fail it under ``CI=true``)."""
    if secantus_command() is None:
        service_missing("SecantusDB is not installed (pip install -e '.[test]')")


class MongoServer(ServiceProcess):
    """One ``secantusd-py`` process on a loopback port, journaling every commit to ``storage``."""

    name = "secantusd-py"
    start_timeout = 60.0
    stop_timeout = 15.0

    def __init__(self, storage: Path, *, port: int | None = None) -> None:
        super().__init__(port)
        self.storage = storage
        self.url = f"mongodb://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        """The server on our port, flushing its journal on every commit (``j: true``)."""
        command = secantus_command()
        if command is None:
            raise RuntimeError("SecantusDB is not installed: pip install SecantusDB")
        self.storage.mkdir(parents=True, exist_ok=True)
        return [
            *[command, "--host", "127.0.0.1", "--port", str(self.port)],
            *["--storage-path", str(self.storage), "--sync-on-commit"],
            *["--log-level", "WARNING"],
        ]

    def log_path(self) -> Path:
        """Beside the storage directory."""
        return self.storage.with_name(self.storage.name + ".log")

    def answers(self) -> bool:
        """True once the server answers ping."""
        client: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(
            self.url, directConnection=True, serverSelectionTimeoutMS=200
        )
        try:
            client.admin.command("ping")
            return True
        except pymongo.errors.PyMongoError:
            return False
        finally:
            client.close()


class _Shared:
    # The fixture is imported by more than one test directory, and pytest makes one instance
    # per place; counting users keeps a single server for the whole session.
    server: MongoServer | None = None
    users = 0


@contextlib.contextmanager
def shared_mongo_server(storage: Path) -> Iterator[str]:
    """Yield the URL of the session's server, starting it for its first user."""
    if _Shared.server is None:
        server = MongoServer(storage)
        server.start()
        _Shared.server = server
    _Shared.users += 1
    try:
        yield _Shared.server.url
    finally:
        _Shared.users -= 1
        if _Shared.users == 0 and _Shared.server is not None:
            _Shared.server.stop()
            _Shared.server = None


def database_url(server_url: str, database: str) -> str:
    """The server URL with its path naming ``database`` (options kept)."""
    parts = urlsplit(server_url)
    return urlunsplit(parts._replace(path="/" + database))


@pytest.fixture(scope="session")
def mongo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a MongoDB-compatible server for the session (see the module docstring)."""
    external = os.environ.get(MONGO_URL_SETTING)
    if external:
        yield external
        return
    require_secantus()
    with shared_mongo_server(tmp_path_factory.mktemp("secantus") / "data") as url:
        yield url


@pytest.fixture
def mongo_url(mongo_server: str) -> Iterator[str]:
    """A ``mongodb://`` URL naming a database of this test's own, dropped afterwards."""
    name = f"boardcast_test_{uuid.uuid4().hex[:12]}"
    yield database_url(mongo_server, name)
    client: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(
        mongo_server, serverSelectionTimeoutMS=int(10_000 * TIMEOUT_SCALE)
    )
    try:
        client.drop_database(name)
    finally:
        client.close()
