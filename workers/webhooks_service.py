"""Webhooks put together from the settings: the store, the worker, the sender and its loop.

The process that runs workers (``workers/runtime.py``) runs the delivery loop beside the
worker, so the worker can wake it when it records deliveries; gateways open only the store
(``gateway/rest/webhooks.py``). When an endpoint is disabled for failing, the loop writes an
audit entry (``webhook-disabled``, with the project, endpoint, URL and reason) to the
account store, which server administrators read at ``/v1/admin/audit``, and logs a
warning; the endpoint itself shows ``enabled: false`` and the reason to the project's admins,
and each owner and admin of the project gets a ``webhook_disabled`` notification
(docs/notifications.md).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

from auth.accounts import Accounts
from gateway.settings import Settings
from persistence.keyring import EncryptionSettings, KeyRing
from persistence.notification_state import WorkerNotificationStore
from persistence.notification_store_factory import notification_store_beside
from persistence.store import BoardStore
from persistence.webhook_store import Endpoint, WebhookStore
from persistence.webhook_store_factory import open_webhook_store, webhook_store_beside
from workers.notifications import notify_disabled
from workers.runtime import Worker
from workers.webhooks import DeliveryLoop, DeliverySettings, DisabledHook, WebhookWorker
from workers.webhooks_http import SenderSettings, WebhookSender
from workers.webhooks_policy import AddressPolicy
from workers.webhooks_retry import RetryPolicy, parse_schedule

log = logging.getLogger("boardcast.webhooks")


def address_policy(settings: Settings) -> AddressPolicy:
    """Where webhooks may go: public addresses and ``webhook_allow_networks``."""
    return AddressPolicy.from_specs(settings.webhook_allow_networks)


def delivery_settings(settings: Settings) -> DeliverySettings:
    """The loop's schedule and bounds from the settings."""
    return DeliverySettings(
        retry=RetryPolicy(
            parse_schedule(settings.webhook_retry_schedule), jitter=settings.webhook_retry_jitter
        ),
        disable_after_failures=settings.webhook_disable_after_failures,
        disable_after_seconds=settings.webhook_disable_after_seconds,
        poll_seconds=settings.webhook_poll_seconds,
        concurrency=settings.webhook_concurrency,
        lease_seconds=2 * settings.webhook_timeout_seconds + 10.0,
    )


def sender_settings(settings: Settings) -> SenderSettings:
    """The bounds of one attempt from the settings."""
    return SenderSettings(
        connect_timeout_seconds=settings.webhook_connect_timeout_seconds,
        timeout_seconds=settings.webhook_timeout_seconds,
        max_response_bytes=settings.webhook_max_response_bytes,
        max_connections=max(1, settings.webhook_concurrency),
    )


def audit_disabled(settings: Settings) -> DisabledHook | None:
    """A hook writing ``webhook-disabled`` to the account store; None with auth off."""
    if settings.auth != "required":
        return None

    async def audit(endpoint: Endpoint, reason: str) -> None:
        def write() -> None:
            accounts = _open_accounts(settings)
            try:
                accounts.audit(
                    "webhook-disabled",
                    None,
                    project=endpoint.project,
                    endpoint=endpoint.id,
                    url=endpoint.url,
                    reason=reason,
                )
            finally:
                accounts.close()

        await asyncio.to_thread(write)

    return audit


def _open_accounts(settings: Settings) -> Accounts:
    # The account store the gateways use (no signing key made: this only appends an entry).
    from auth.accounts import ACCOUNTS_FILENAME, AccountStore

    chosen = EncryptionSettings.from_environment()
    cipher = KeyRing.open(chosen.key_path(settings.data_dir)) if chosen.enabled else None
    url = settings.store.strip()
    if url.startswith(("mongodb://", "mongodb+srv://")):
        from auth.mongo_accounts import MongoAccountStore

        return MongoAccountStore(url, cipher=cipher, settings=settings.accounts_mongo)
    return AccountStore(os.path.join(settings.data_dir, ACCOUNTS_FILENAME), cipher=cipher)


@dataclass
class WebhookService:
    """The webhook worker and its delivery loop over one store."""

    store: WebhookStore
    worker: WebhookWorker
    loop: DeliveryLoop
    sender: WebhookSender
    notifications: WorkerNotificationStore | None = None  # told of disabled endpoints

    def start(self) -> None:
        """Start the delivery loop (call from the event loop that runs the worker)."""
        self.loop.start()

    async def close(self) -> None:
        """Stop sending and close the store."""
        await self.loop.stop()
        await self.sender.close()
        await self.store.close()
        if self.notifications is not None:
            await self.notifications.close()


def open_webhook_service(
    settings: Settings,
    *,
    store: WebhookStore | None = None,
    notifications: WorkerNotificationStore | None = None,
) -> WebhookService:
    """The webhook worker, delivery loop and store that ``settings`` describe; with
    ``notifications``, a disabled endpoint is also told to its project's owners and admins
    (docs/notifications.md)."""
    if store is None:
        store = open_webhook_store(settings.store, data_dir=settings.data_dir)
    sender = WebhookSender(address_policy(settings), sender_settings(settings))
    hooks = [audit_disabled(settings)]
    if notifications is not None:
        hooks.append(notify_disabled(notifications))
    loop = DeliveryLoop(store, sender, delivery_settings(settings), on_disabled=_each(hooks))
    worker = WebhookWorker(store, wake=loop.wake)
    return WebhookService(store, worker, loop, sender, notifications)


def _each(hooks: Sequence[DisabledHook | None]) -> DisabledHook | None:
    """One hook calling every given one in turn (each one's failure logged, not fatal)."""
    chosen = [hook for hook in hooks if hook is not None]
    if not chosen:
        return None

    async def every(endpoint: Endpoint, reason: str) -> None:
        for hook in chosen:
            try:
                await hook(endpoint, reason)
            except Exception:
                log.exception("telling about disabled webhook endpoint %s failed", endpoint.id)

    return every


class WebhookPlugin:
    """The webhook worker and its delivery loop as a plugin of the worker service."""

    def __init__(self, service: WebhookService) -> None:
        self.service = service
        self.workers: Sequence[Worker] = [service.worker]

    async def start(self) -> None:
        """Start the delivery loop."""
        self.service.start()

    async def stop(self) -> None:
        """Stop it and close the store."""
        await self.service.close()


def webhook_plugin(board_store: BoardStore, settings: Settings | None = None) -> WebhookPlugin:
    """``workers.webhooks_service:webhook_plugin``: webhooks beside ``board_store``.

    The webhook settings are read from the environment (``BOARDCAST_WEBHOOK_*``) unless
    given; the store is the one beside the board store, as the gateways open it.
    """
    chosen = settings if settings is not None else Settings.load()
    store, data_dir = webhook_store_beside(board_store, data_dir=chosen.data_dir)
    if data_dir != chosen.data_dir:
        chosen = dataclasses.replace(chosen, data_dir=data_dir)
    notifications, _ = notification_store_beside(board_store, data_dir=chosen.data_dir)
    return WebhookPlugin(open_webhook_service(chosen, store=store, notifications=notifications))
