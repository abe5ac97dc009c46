"""E-mail put together from the settings: the stores, the address book, the sender, the loop.

``workers.mail_service:mail_plugin`` is one of the default worker plugins: it runs in the
process that runs workers (``boardcast serve`` on the local backend, the worker actor on
Ray). It idles (opens nothing, sends nothing) while ``smtp_host`` is empty, so a deployment
turns e-mail on by naming its SMTP server. The plugin has no event-log consumer: it follows
the notification store with a cursor of its own (``workers/mail.py``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from collections.abc import Sequence

from gateway.settings import Settings
from persistence.keyring import EncryptionSettings, KeyRing
from persistence.mail_store import MailStore
from persistence.mail_store_factory import mail_store_beside
from persistence.notification_store import NotificationStore
from persistence.store import BoardStore
from workers.mail import AddressBook, MailSettings, MailWorker
from workers.mail_smtp import SmtpSender, SmtpSettings
from workers.runtime import Worker

log = logging.getLogger("boardcast.mail")


def smtp_settings(settings: Settings) -> SmtpSettings:
    """The SMTP server and its bounds from the settings."""
    return SmtpSettings(
        host=settings.smtp_host,
        port=settings.smtp_port,
        username=settings.smtp_username,
        password=settings.smtp_password,
        starttls=settings.smtp_starttls,
        sender=settings.smtp_from,
        timeout_seconds=settings.smtp_timeout_seconds,
    )


def mail_settings(settings: Settings) -> MailSettings:
    """The worker's pace, retries and bounds from the settings."""
    return MailSettings(
        sender=settings.smtp_from,
        public_url=settings.public_url,
        batch_size=settings.mail_batch_size,
        poll_seconds=settings.mail_poll_seconds,
        concurrency=settings.mail_concurrency,
        # Past every step of one attempt (connect, commands, data), with room to save it.
        lease_seconds=4 * settings.smtp_timeout_seconds + 1.0,
        max_attempts=settings.mail_max_attempts,
        retry_base_seconds=settings.mail_retry_base_seconds,
        retry_max_seconds=settings.mail_retry_max_seconds,
        retry_jitter=settings.mail_retry_jitter,
    )


def account_addresses(settings: Settings) -> AddressBook:
    """People's e-mail addresses from the account store the gateways use (opened per
    lookup in a thread: lookups are one per e-mail, and the store is synchronous)."""
    from auth.accounts import ACCOUNTS_FILENAME, Accounts, AccountStore

    def lookup(user_id: str) -> str | None:
        chosen = EncryptionSettings.from_environment()
        cipher = KeyRing.open(chosen.key_path(settings.data_dir)) if chosen.enabled else None
        url = settings.store.strip()
        accounts: Accounts
        if url.startswith(("mongodb://", "mongodb+srv://")):
            from auth.mongo_accounts import MongoAccountStore

            accounts = MongoAccountStore(url, cipher=cipher, settings=settings.accounts_mongo)
        else:
            accounts = AccountStore(
                os.path.join(settings.data_dir, ACCOUNTS_FILENAME), cipher=cipher
            )
        try:
            user = accounts.get_user(user_id)
        finally:
            accounts.close()
        if user is None or user.disabled:
            return None
        return user.email or None

    async def address(user_id: str) -> str | None:
        return await asyncio.to_thread(lookup, user_id)

    return address


class MailPlugin:
    """The e-mail worker as a plugin of the worker service (idle without an SMTP host)."""

    workers: Sequence[Worker] = ()

    def __init__(
        self,
        worker: MailWorker | None,
        stores: Sequence[MailStore | NotificationStore] = (),
    ) -> None:
        self.worker = worker
        self._stores = list(stores)

    async def start(self) -> None:
        """Start following notifications and sending."""
        if self.worker is not None:
            self.worker.start()
            log.info("e-mail worker sending through %s", self.worker.sender.settings.host)

    async def stop(self) -> None:
        """Stop and close the stores."""
        if self.worker is not None:
            await self.worker.stop()
        for store in self._stores:
            await store.close()


def mail_plugin(board_store: BoardStore, settings: Settings | None = None) -> MailPlugin:
    """``workers.mail_service:mail_plugin``: e-mail about the notifications beside
    ``board_store``; idle while ``smtp_host`` is empty."""
    chosen = settings if settings is not None else Settings.load()
    if not chosen.smtp_host:
        return MailPlugin(None)
    from persistence.notification_store_factory import notification_store_beside

    notifications, data_dir = notification_store_beside(board_store, data_dir=chosen.data_dir)
    if data_dir != chosen.data_dir:
        chosen = dataclasses.replace(chosen, data_dir=data_dir)
    store = mail_store_beside(board_store, data_dir=chosen.data_dir)
    worker = MailWorker(
        notifications,
        store,
        SmtpSender(smtp_settings(chosen)),
        account_addresses(chosen),
        mail_settings(chosen),
    )
    return MailPlugin(worker, [store, notifications])
