"""Open the board store a URL names: the one module that knows every implementation.

The interface (``persistence/store.py``) imports no implementation, and the implementations
import the interface; choosing one by URL therefore lives here, above both.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from persistence.encrypted import EncryptedStore, KeySource
from persistence.history import DEFAULT_HISTORY, KEEP_EVERYTHING, HistoryPolicy
from persistence.keyring import EncryptionSettings
from persistence.memory import MemoryStore
from persistence.read_model import MemoryTaskIndex
from persistence.sqlite import SqliteStore
from persistence.store import BoardStore

#: The setting that carries the store URL given to :func:`open_store`.
STORE_SETTING = "BOARDCAST_STORE"

#: The file the embedded store uses inside the data directory.
SQLITE_FILENAME = "boardcast.sqlite3"

# Memory stores opened for one data dir in this process, and the read model they share.
_MEMORY_READ_MODELS: dict[str, MemoryTaskIndex] = {}


def open_store(
    url: str,
    *,
    data_dir: str,
    history: HistoryPolicy | None = None,
    clock: Callable[[], float] = time.time,
    encryption: EncryptionSettings | None = None,
) -> BoardStore:
    """Open the store a URL names; nothing is created until the first write.

    Args:
        url: ``"sqlite"`` (``<data_dir>/boardcast.sqlite3``), ``"sqlite:///abs/file.sqlite3"``,
            ``"sqlite://relative/file.sqlite3"`` (under ``data_dir``), ``"memory"``, or a
            MongoDB URL ``"mongodb://host:port/database"`` (database ``boardcast`` if omitted).
        data_dir: directory for the embedded store's file; created when the store is first used.
        history: which past snapshots to keep (see ``persistence/history.py``).
        clock: the source of the times stamped on updates and snapshots.
        encryption: encryption at rest (``persistence/keyring.py``); None reads
            ``BOARDCAST_ENCRYPTION`` and ``BOARDCAST_ENCRYPTION_KEY_FILE`` (on by default).
            The memory store keeps nothing at rest and is never wrapped.
    """
    policy = history if history is not None else DEFAULT_HISTORY
    url = url.strip()
    if url == "memory":
        # The stores of one process (its board hosts and its gateway) share a read model.
        shared = _MEMORY_READ_MODELS.setdefault(os.path.abspath(data_dir), MemoryTaskIndex())
        return MemoryStore(history=policy, clock=clock, read_model=shared)
    settings = encryption if encryption is not None else EncryptionSettings.from_environment()
    keys = KeySource(
        key_file_of(url, data_dir, settings),
        refresh_seconds=settings.refresh_seconds,
        refuse_plaintext=settings.refuse_plaintext,
    )
    # Off, a store sealed before stays readable as long as its key file is there.
    wrapped = settings.enabled or keys.exists()
    inner_policy = KEEP_EVERYTHING if wrapped else policy
    inner = _open_inner(url, data_dir=data_dir, history=inner_policy, clock=clock)
    if not wrapped:
        return inner
    return EncryptedStore(inner, keys, encrypt=settings.enabled, history=policy, clock=clock)


def key_file_of(url: str, data_dir: str, settings: EncryptionSettings) -> str:
    """The key file of the store ``url`` names: the setting if given, else ``keys/at-rest.json``
    in the embedded store's directory (``data_dir`` for the default ``sqlite``), or in
    ``data_dir`` for MongoDB."""
    url = url.strip()
    if url.startswith("sqlite://") and url.removeprefix("sqlite://"):
        store_file = os.path.join(data_dir, url.removeprefix("sqlite://"))
        return settings.key_path(os.path.dirname(os.path.abspath(store_file)))
    return settings.key_path(data_dir)


def _open_inner(
    url: str, *, data_dir: str, history: HistoryPolicy, clock: Callable[[], float]
) -> BoardStore:
    if url == "sqlite":
        return SqliteStore(os.path.join(data_dir, SQLITE_FILENAME), history=history, clock=clock)
    if url.startswith("sqlite://"):
        path = url.removeprefix("sqlite://")
        if not path:
            raise ValueError(f"{STORE_SETTING}={url!r}: the sqlite URL names no file")
        # An absolute path ignores data_dir.
        return SqliteStore(os.path.join(data_dir, path), history=history, clock=clock)
    if url.startswith(("mongodb://", "mongodb+srv://")):
        # pymongo is imported only by deployments that use MongoDB.
        from persistence.mongo import MongoStore

        return MongoStore(url, history=history, clock=clock)
    raise ValueError(
        f"{STORE_SETTING}={url!r} is not a store URL;"
        " expected 'sqlite', 'sqlite:///path', 'memory' or 'mongodb://host/database'"
    )
