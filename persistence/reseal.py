"""Re-encryption: every stored blob rewritten under the key ring's active key, in place.

A store's records are rewritten one small batch at a time, each record only if it still
holds what was read (compare and swap), so that writers running meanwhile win and a crash
between two batches leaves every record under its old key or its new one: readable either
way, since old keys stay in the ring until an operator removes them. Records already under
the active key are skipped, so running it again resumes where it stopped. Plaintext records
from before encryption was on are sealed too.

This module knows the stores' layouts (``persistence/sqlite.py``, ``persistence/mongo.py``)
because rewriting a blob in place is not part of the store interface.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from persistence.encrypted import KeySource, context
from persistence.keyring import is_encrypted, is_encrypted_text, key_id_of

#: Records read and rewritten per transaction.
BATCH = 200


@dataclass
class ResealReport:
    """Per table or collection: records rewritten, already current, changed meanwhile."""

    rewritten: dict[str, int] = field(default_factory=dict)
    current: dict[str, int] = field(default_factory=dict)
    raced: dict[str, int] = field(default_factory=dict)
    left: dict[str, int] = field(default_factory=dict)  # not rewritable here (Mongo chunks)

    def add(self, kind: str, table: str, count: int = 1) -> None:
        """Count ``count`` records of ``table`` as ``kind`` (rewritten, current...)."""
        counts: dict[str, int] = getattr(self, kind)
        counts[table] = counts.get(table, 0) + count

    @property
    def total_rewritten(self) -> int:
        """Records rewritten, everywhere."""
        return sum(self.rewritten.values())


# A blob column: (table, column, context of a row from its board id and seq, is text).
_Column = tuple[str, str, Callable[[str, int], bytes], bool]

_SQLITE_COLUMNS: tuple[_Column, ...] = (
    ("updates", '"update"', lambda board, seq: context("update", board), False),
    ("update_history", '"update"', lambda board, seq: context("update", board), False),
    ("snapshots", "state", lambda board, seq: context("snapshot", board, seq), False),
    ("snapshot_history", "state", lambda board, seq: context("snapshot", board, seq), False),
    ("update_meta", "events", lambda board, seq: context("events", board), False),
    ("update_meta", "origin", lambda board, seq: context("origin", board), True),
)


def _needs_sealing(value: Any, keys: KeySource, *, text: bool) -> bool:
    if value is None:
        return False
    ring = keys.for_writing()
    if text:
        return not is_encrypted_text(value) or ring.text_key_id(value) != ring.active_key_id
    blob = bytes(value)
    return not is_encrypted(blob) or key_id_of(blob) != ring.active_key_id


def _resealed(keys: KeySource, value: Any, ctx: bytes, *, text: bool) -> Any:
    if text:
        return keys.seal_text(keys.open_text(str(value), ctx), ctx)
    return keys.seal(keys.open_blob(bytes(value), ctx), ctx)


def reseal_sqlite(path: str, keys: KeySource, *, busy_timeout: float = 10.0) -> ResealReport:
    """Rewrite every blob of the embedded store at ``path`` under the active key (blocking)."""
    report = ResealReport()
    connection = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None)
    try:
        connection.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        connection.execute("PRAGMA synchronous = FULL")
        for table, column, ctx_of, text in _SQLITE_COLUMNS:
            _reseal_sqlite_column(connection, keys, report, table, column, ctx_of, text=text)
    finally:
        connection.close()
    return report


def _reseal_sqlite_column(
    connection: sqlite3.Connection,
    keys: KeySource,
    report: ResealReport,
    table: str,
    column: str,
    ctx_of: Callable[[str, int], bytes],
    *,
    text: bool,
) -> None:
    name = f"{table}.{column.strip(chr(34))}"
    last = 0
    while True:
        rows = connection.execute(
            f"SELECT rowid, board_id, seq, {column} FROM {table} WHERE rowid > ?"
            " ORDER BY rowid LIMIT ?",
            (last, BATCH),
        ).fetchall()
        if not rows:
            return
        last = int(rows[-1][0])
        changes = []
        for rowid, board_id, seq, value in rows:
            if not _needs_sealing(value, keys, text=text):
                if value is not None:
                    report.add("current", name)
                continue
            new = _resealed(keys, value, ctx_of(str(board_id), int(seq)), text=text)
            changes.append((new, rowid, value))
        if not changes:
            continue
        connection.execute("BEGIN IMMEDIATE")
        try:
            for new, rowid, old in changes:
                done = connection.execute(
                    f"UPDATE {table} SET {column} = ? WHERE rowid = ? AND {column} = ?",
                    (new, rowid, old),
                ).rowcount
                report.add("rewritten" if done else "raced", name)
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise


async def reseal_mongo(database: Any, keys: KeySource) -> ResealReport:
    """Rewrite every inline blob of the MongoDB store in ``database`` under the active key.

    A value the store split into chunks (over 8 MiB) is counted under ``left``: it is sealed
    again when compaction next writes it.
    """
    report = ResealReport()
    fields = {
        "updates": (("update", "chunks", False), ("events", "events_chunks", False)),
        "update_history": (("update", "chunks", False), ("events", "events_chunks", False)),
        "snapshots": (("state", "chunks", False),),
        "snapshot_history": (("state", "chunks", False),),
    }
    for collection_name, blob_fields in fields.items():
        collection = database[collection_name]
        async for document in collection.find({}):
            board_id = str(document.get("board_id"))
            seq = int(document.get("seq", 0))
            for field_name, chunk_field, _ in blob_fields:
                await _reseal_mongo_field(
                    collection,
                    report,
                    keys,
                    document,
                    collection_name,
                    field_name,
                    chunk_field,
                    board_id,
                    seq,
                )
            if document.get("origin") is not None and collection_name.startswith("update"):
                await _reseal_mongo_value(
                    collection,
                    report,
                    keys,
                    document,
                    f"{collection_name}.origin",
                    "origin",
                    context("origin", board_id),
                    text=True,
                )
    return report


async def _reseal_mongo_field(
    collection: Any,
    report: ResealReport,
    keys: KeySource,
    document: dict[str, Any],
    collection_name: str,
    field_name: str,
    chunk_field: str,
    board_id: str,
    seq: int,
) -> None:
    name = f"{collection_name}.{field_name}"
    if chunk_field in document and field_name not in document:
        report.add("left", name)
        return
    if field_name not in document:
        return
    kind = {"update": "update", "events": "events", "state": "snapshot"}[field_name]
    ctx = context(kind, board_id, seq) if kind == "snapshot" else context(kind, board_id)
    await _reseal_mongo_value(collection, report, keys, document, name, field_name, ctx, text=False)


async def _reseal_mongo_value(
    collection: Any,
    report: ResealReport,
    keys: KeySource,
    document: dict[str, Any],
    name: str,
    field_name: str,
    ctx: bytes,
    *,
    text: bool,
) -> None:
    value = document[field_name]
    if not _needs_sealing(value, keys, text=text):
        report.add("current", name)
        return
    new = _resealed(keys, value, ctx, text=text)
    done = await collection.update_one(
        {"_id": document["_id"], field_name: value}, {"$set": {field_name: new}}
    )
    report.add("rewritten" if done.modified_count else "raced", name)
    await asyncio.sleep(0)
