"""Open the notification store beside the board store a URL names (SQLite by default, MongoDB)."""

from __future__ import annotations

import os

from persistence.encrypted import EncryptedStore, KeySource
from persistence.factory import key_file_of
from persistence.keyring import EncryptionSettings
from persistence.notification_state import WorkerNotificationStore
from persistence.notification_store_sqlite import FILENAME, SqliteNotificationStore
from persistence.sqlite import SqliteStore
from persistence.store import BoardStore
from persistence.webhook_store import Sealer


def open_notification_store(
    url: str, *, data_dir: str, encryption: EncryptionSettings | None = None
) -> WorkerNotificationStore:
    """The notification store for the board store ``url``: MongoDB's database for a
    ``mongodb://`` URL, else ``<data_dir>/notifications.sqlite3`` (also for ``memory``: the
    worker and every gateway must share it). ``title`` and ``data`` are sealed with the
    store's key ring when encryption at rest is on (docs/encryption.md)."""
    settings = encryption if encryption is not None else EncryptionSettings.from_environment()
    url = url.strip()
    keys = KeySource(
        key_file_of(url, data_dir, settings),
        refresh_seconds=settings.refresh_seconds,
        refuse_plaintext=settings.refuse_plaintext,
    )
    sealer = Sealer(keys if settings.enabled or keys.exists() else None, encrypt=settings.enabled)
    if url.startswith(("mongodb://", "mongodb+srv://")):
        # pymongo is imported only by deployments that use MongoDB.
        from persistence.notification_store_mongo import MongoNotificationStore

        return MongoNotificationStore(url, sealer=sealer)
    directory = data_dir
    if url.startswith("sqlite://") and url.removeprefix("sqlite://"):
        # Beside the board store's own file, where the worker finds it too.
        directory = os.path.dirname(os.path.abspath(os.path.join(data_dir, url[9:])))
    return SqliteNotificationStore(os.path.join(directory, FILENAME), sealer=sealer)


def notification_store_beside(
    store: BoardStore, *, data_dir: str
) -> tuple[WorkerNotificationStore, str]:
    """The notification store next to an opened board store, and the data directory it is in.

    Sealed with the board store's keys when it is encrypted; SQLite beside its file;
    MongoDB in its database; for the memory store, SQLite in ``data_dir``.
    """
    sealer = Sealer()
    inner = store
    if isinstance(store, EncryptedStore):
        sealer = Sealer(store.keys, encrypt=store.encrypt)
        inner = store.inner
    if isinstance(inner, SqliteStore):
        directory = os.path.dirname(os.path.abspath(inner.path))
        return SqliteNotificationStore(os.path.join(directory, FILENAME), sealer=sealer), directory
    from persistence.mongo import MongoStore

    if isinstance(inner, MongoStore):
        from persistence.notification_store_mongo import MongoNotificationStore

        return MongoNotificationStore(inner.url, sealer=sealer), data_dir
    return SqliteNotificationStore(os.path.join(data_dir, FILENAME), sealer=sealer), data_dir
