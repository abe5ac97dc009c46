"""The store and read-model contract suites again, on stores wrapped by ``EncryptedStore``
explicitly with a key file of their own: SQLite, memory and MongoDB (SecantusDB).

(``open_store`` wraps SQLite and MongoDB by default, so ``test_store_contract.py`` runs
them encrypted too; here the memory store is covered and the wrapping is certain.)
"""

from __future__ import annotations

import inspect
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import tests.unit.test_read_model_contract as read_model_contract
import tests.unit.test_store_contract as store_contract
from persistence import BoardStore
from persistence.encrypted import EncryptedStore, KeySource
from persistence.encrypted_read_model import EncryptedTaskIndex
from persistence.factory import SQLITE_FILENAME, open_store
from persistence.history import (
    DEFAULT_HISTORY,
    KEEP_EVERYTHING,
    HistoryPolicy,
    parse_history_policy,
)
from persistence.keyring import EncryptionSettings, is_encrypted
from persistence.memory import MemoryStore
from persistence.read_model import IndexWrite, MemoryTaskIndex, TaskRow
from tests.persistence_servers import mongo_server, mongo_url  # noqa: F401 - fixtures
from tests.unit.test_read_model_contract import index  # noqa: F401 - fixture
from tests.unit.test_store_contract import shared_backend, store  # noqa: F401 - fixtures

CONTRACT_FIXTURES = {"backend", "store", "shared_backend", "index"}


@dataclass
class EncryptedBackend(store_contract.Backend):
    """A contract backend whose stores are sealed with a key file under ``data_dir``."""

    memory_index: MemoryTaskIndex | None = None

    def open(self, **options: Any) -> BoardStore:
        settings = EncryptionSettings(key_file=str(self.data_dir / "keys" / "ring.json"))
        if self.url != "memory":
            opened = open_store(
                self.url, data_dir=str(self.data_dir), encryption=settings, **options
            )
            assert isinstance(opened, EncryptedStore)
            return opened
        history: HistoryPolicy = options.get("history") or DEFAULT_HISTORY
        clock: Callable[[], float] = options.get("clock") or time.time
        if self.memory_index is None:
            self.memory_index = MemoryTaskIndex()
        inner = MemoryStore(history=KEEP_EVERYTHING, clock=clock, read_model=self.memory_index)
        keys = KeySource(settings.key_path(str(self.data_dir)))
        return EncryptedStore(inner, keys, history=history, clock=clock)


def _encrypted(url_of: Callable[[pytest.FixtureRequest], str], shared: bool) -> Any:
    def make(request: pytest.FixtureRequest, tmp_path: Path) -> EncryptedBackend:
        return EncryptedBackend(url_of(request), tmp_path / "data", shared=shared)

    return make


BACKENDS = {
    "sqlite": _encrypted(lambda request: "sqlite", True),
    "memory": _encrypted(lambda request: "memory", False),
    "mongo": _encrypted(lambda request: str(request.getfixturevalue("mongo_url")), True),
}


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> store_contract.Backend:
    return BACKENDS[request.param](request, tmp_path)  # type: ignore[no-any-return]


def _contract_tests(module: Any) -> dict[str, Any]:
    """The module's tests that run on the ``backend`` fixture (not those on fixed URLs)."""
    return {
        name: test
        for name, test in vars(module).items()
        if name.startswith("test_")
        and callable(test)
        and CONTRACT_FIXTURES & set(inspect.signature(test).parameters)
    }


globals().update(_contract_tests(store_contract))
globals().update(_contract_tests(read_model_contract))


async def test_what_the_inner_store_holds_is_sealed(backend: store_contract.Backend) -> None:
    async with backend.open() as opened:
        assert isinstance(opened, EncryptedStore)
        record = store_contract.Record(b"\x01update", origin="ann@example.org", events=b"\x90")
        await opened.append({"b": [record]})
        await opened.write_snapshot("b", b"\x02snapshot", 1)
        await opened.append({"b": [b"\x03later"]})
        raw = await opened.inner.load("b")
        assert raw.snapshot is not None and is_encrypted(raw.snapshot)
        assert all(is_encrypted(entry.update) for entry in raw.updates)
        opened_board = await opened.load("b")
        assert opened_board.snapshot == b"\x02snapshot"
        assert [entry.update for entry in opened_board.updates] == [b"\x03later"]

        index = opened.task_index()
        try:
            row = TaskRow(
                "b",
                "t",
                "p",
                "Secret title",
                "c",
                "a0",
                "Secret text",
                ("ann",),
                (),
                None,
                "2026-12-01T00:00:00Z",
                "2026-12-01T00:00:00Z",
                1,
            )
            await index.write([IndexWrite("b", 1, upserts=[row])])
            assert isinstance(index, EncryptedTaskIndex)
            stored = await index.inner.rows(read_model_contract.TaskFilter())
            assert [r.title.startswith("enc1:") for r in stored] == [True]
            assert "Secret" not in stored[0].description
            assert await index.rows(read_model_contract.TaskFilter()) == [row]
        finally:
            await index.close()


async def test_materialised_history_snapshots_are_sealed_too(tmp_path: Path) -> None:
    clock = store_contract.FakeClock(store_contract.T0)
    board = store_contract.TaskBoard()
    backend = EncryptedBackend("sqlite", tmp_path / "data", shared=True)
    policy = parse_history_policy(store_contract.TIERED)
    async with backend.open(clock=clock, history=policy) as opened:
        await store_contract.edit_every_minute(opened, clock, board, range(30), compact_every=7)
        await store_contract.edit_every_minute(opened, clock, board, range(180, 181), 1)
    with sqlite3.connect(tmp_path / "data" / SQLITE_FILENAME) as db:
        # Materialised: seq 10 and 20 fell on no compaction (every 7 edits).
        seqs = [seq for (seq,) in db.execute("SELECT seq FROM snapshot_history ORDER BY seq")]
        assert {10, 20} <= set(seqs)
        for table, column in (
            ("snapshot_history", "state"),
            ("snapshots", "state"),
            ("update_history", '"update"'),
            ("updates", '"update"'),
        ):
            blobs = [bytes(value) for (value,) in db.execute(f"SELECT {column} FROM {table}")]
            assert all(is_encrypted(blob) for blob in blobs), table
            assert blobs or table == "updates", table  # the last compaction emptied the log
