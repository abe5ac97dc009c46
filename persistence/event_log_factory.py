"""The event log that goes with a board store: the same place, sealed the same way.

The embedded store's log is ``events.sqlite3`` beside its file; MongoDB's is the ``events``
collection of the same database; the memory store's is one list per process. When the store
seals what it keeps (``persistence/encrypted.py``), each event's ``data`` is sealed with the
same key ring, bound to its board and event id.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from persistence.encrypted import EncryptedStore, KeySource, context
from persistence.event_log import DataCodec, ManagedEventLog, NewEvent, PlainCodec
from persistence.event_log_memory import MemoryEventLog
from persistence.event_log_sqlite import EVENT_LOG_FILENAME, SqliteEventLog
from persistence.memory import MemoryStore
from persistence.sqlite import SqliteStore
from persistence.store import BoardStore

# The memory stores of one process share a read model; their hosts share one log the same way.
_MEMORY_LOGS: dict[int, MemoryEventLog] = {}


class SealedCodec:
    """``data`` as JSON sealed with the store's key ring (context ``["event", board, id]``).

    Args:
        keys: the store's key source.
        encrypt: False reads sealed data but writes plaintext (encryption turned off).
    """

    def __init__(self, keys: KeySource, *, encrypt: bool = True) -> None:
        self._keys = keys
        self._encrypt = encrypt
        self._plain = PlainCodec()

    def encode(self, event: NewEvent) -> bytes:
        """See :meth:`DataCodec.encode`."""
        data = self._plain.encode(event)
        if not self._encrypt:
            return data
        return self._keys.seal(data, context("event", event.board_id, event.id))

    def decode(self, blob: bytes, board_id: str, event_id: str) -> dict[str, Any]:
        """See :meth:`DataCodec.decode`; DecryptionFailed for a blob that will not open."""
        opened = self._keys.open_blob(blob, context("event", board_id, event_id))
        return self._plain.decode(opened, board_id, event_id)


def event_log_for(store: BoardStore, *, clock: Callable[[], float] = time.time) -> ManagedEventLog:
    """The event log beside ``store``; ``NotImplementedError`` for a store without one."""
    codec: DataCodec = PlainCodec()
    inner = store
    if isinstance(store, EncryptedStore):
        codec = SealedCodec(store.keys, encrypt=store.encrypt)
        inner = store.inner
    if isinstance(inner, SqliteStore):
        directory = os.path.dirname(os.path.abspath(inner.path))
        return SqliteEventLog(os.path.join(directory, EVENT_LOG_FILENAME), codec=codec, clock=clock)
    if isinstance(inner, MemoryStore):
        return _MEMORY_LOGS.setdefault(id(inner.task_index()), MemoryEventLog(clock=clock))
    # pymongo is imported only by deployments that use MongoDB.
    from persistence.mongo import MongoStore

    if isinstance(inner, MongoStore):
        from persistence.event_log_mongo import MongoEventLog

        return MongoEventLog(inner.url, codec=codec, clock=clock)
    raise NotImplementedError(f"no event log goes with {type(inner).__name__}")
