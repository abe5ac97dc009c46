"""Open the mail store beside the board store a URL names (SQLite by default, MongoDB)."""

from __future__ import annotations

import os

from persistence.encrypted import EncryptedStore
from persistence.mail_store import MailStore
from persistence.mail_store_sqlite import FILENAME, SqliteMailStore
from persistence.sqlite import SqliteStore
from persistence.store import BoardStore


def open_mail_store(url: str, *, data_dir: str) -> MailStore:
    """The mail store for the board store ``url``: MongoDB's database for a ``mongodb://``
    URL, else ``<data_dir>/mail.sqlite3`` (also for ``memory``: pending e-mail must survive a
    restart)."""
    url = url.strip()
    if url.startswith(("mongodb://", "mongodb+srv://")):
        # pymongo is imported only by deployments that use MongoDB.
        from persistence.mail_store_mongo import MongoMailStore

        return MongoMailStore(url)
    directory = data_dir
    if url.startswith("sqlite://") and url.removeprefix("sqlite://"):
        # Beside the board store's own file, where the worker finds it too.
        directory = os.path.dirname(os.path.abspath(os.path.join(data_dir, url[9:])))
    return SqliteMailStore(os.path.join(directory, FILENAME))


def mail_store_beside(store: BoardStore, *, data_dir: str) -> MailStore:
    """The mail store next to an opened board store: SQLite beside its file, MongoDB in its
    database, SQLite in ``data_dir`` for the memory store."""
    inner = store.inner if isinstance(store, EncryptedStore) else store
    if isinstance(inner, SqliteStore):
        directory = os.path.dirname(os.path.abspath(inner.path))
        return SqliteMailStore(os.path.join(directory, FILENAME))
    from persistence.mongo import MongoStore

    if isinstance(inner, MongoStore):
        from persistence.mail_store_mongo import MongoMailStore

        return MongoMailStore(inner.url)
    return SqliteMailStore(os.path.join(data_dir, FILENAME))
