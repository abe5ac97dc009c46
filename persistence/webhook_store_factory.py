"""Open the webhook store beside the board store a URL names (SQLite by default, MongoDB)."""

from __future__ import annotations

import os

from persistence.encrypted import KeySource
from persistence.factory import key_file_of
from persistence.keyring import EncryptionSettings
from persistence.webhook_store import Sealer, WebhookStore
from persistence.webhook_store_sqlite import FILENAME, SqliteWebhookStore


def open_webhook_store(
    url: str, *, data_dir: str, encryption: EncryptionSettings | None = None
) -> WebhookStore:
    """The webhook store for the board store ``url``: MongoDB's database for a
    ``mongodb://`` URL, else ``<data_dir>/webhooks.sqlite3`` (also for ``memory``: pending
    deliveries must survive a restart). Secrets are sealed with the store's key ring when
    encryption at rest is on (docs/encryption.md)."""
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
        from persistence.webhook_store_mongo import MongoWebhookStore

        return MongoWebhookStore(url, sealer=sealer)
    return SqliteWebhookStore(os.path.join(data_dir, FILENAME), sealer=sealer)
