"""Notifications put together from the settings: the store, the worker, the reminder loop.

``workers.notifications_service:notification_plugin`` is in the default
``BOARDCAST_WORKER_PLUGINS``: the worker process (``boardcast serve`` on the local backend,
the worker actor on Ray) runs the worker and the reminder loop beside the others. Gateways
open only the store (``gateway/rest/notifications.py``), beside the same board store.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

from auth.accounts import Accounts
from gateway.settings import Settings
from persistence.keyring import EncryptionSettings, KeyRing
from persistence.notification_state import WorkerNotificationStore
from persistence.notification_store_factory import notification_store_beside
from persistence.store import BoardStore
from workers.notifications import NameLookup, NotificationWorker, account_lookup
from workers.reminders import ReminderLoop, ReminderSettings
from workers.runtime import Worker


def reminder_settings(settings: Settings) -> ReminderSettings:
    """The reminder loop's cadence, window and retention from the settings."""
    return ReminderSettings(
        poll_seconds=settings.notification_reminder_poll_seconds,
        due_soon_seconds=settings.notification_due_soon_seconds,
        retention_days=settings.notification_retention_days,
        max_per_user=settings.notification_max_per_user,
    )


def name_lookup(settings: Settings) -> NameLookup | None:
    """Mentions resolved through the account store; None (names are ids) with auth off."""
    if settings.auth != "required":
        return None
    return account_lookup(lambda: open_accounts(settings))


def open_accounts(settings: Settings) -> Accounts:
    """The account store the gateways use (read only here)."""
    from auth.accounts import ACCOUNTS_FILENAME, AccountStore

    chosen = EncryptionSettings.from_environment()
    cipher = KeyRing.open(chosen.key_path(settings.data_dir)) if chosen.enabled else None
    url = settings.store.strip()
    if url.startswith(("mongodb://", "mongodb+srv://")):
        from auth.mongo_accounts import MongoAccountStore

        return MongoAccountStore(url, cipher=cipher, settings=settings.accounts_mongo)
    return AccountStore(os.path.join(settings.data_dir, ACCOUNTS_FILENAME), cipher=cipher)


class NotificationPlugin:
    """The notification worker and its reminder loop as a plugin of the worker service."""

    def __init__(self, store: WorkerNotificationStore, settings: Settings) -> None:
        self.store = store
        self.worker = NotificationWorker(store, lookup=name_lookup(settings))
        self.reminders = ReminderLoop(store, reminder_settings(settings))
        self.workers: Sequence[Worker] = [self.worker]

    async def start(self) -> None:
        """Start the reminder loop."""
        self.reminders.start()

    async def stop(self) -> None:
        """Stop it and close the store."""
        await self.reminders.stop()
        await self.store.close()


def notification_plugin(
    board_store: BoardStore, settings: Settings | None = None
) -> NotificationPlugin:
    """``workers.notifications_service:notification_plugin``: notifications beside
    ``board_store``, with the settings from the environment unless given."""
    chosen = settings if settings is not None else Settings.load()
    store, data_dir = notification_store_beside(board_store, data_dir=chosen.data_dir)
    if data_dir != chosen.data_dir:
        chosen = dataclasses.replace(chosen, data_dir=data_dir)
    return NotificationPlugin(store, chosen)
