"""The event log's notification consumer: tells people what happened to their tasks.

For each batch the worker loads what it knows of the batch's tasks (the task table of the
notification store), looks up the ``@mentioned`` names and the actors' display names in the
account store, applies :func:`workers.notification_rules.apply_event` to each event in
offset order, and then writes, in this order: the notifications, then the task states and
project roles learnt. A crash anywhere before the runtime commits the batch delivers it
again: the notifications already recorded have the same ids (recorded once), and a task
state already saved says which events it has seen (they tell nobody again).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence

from auth.accounts import Accounts
from persistence.event_log import LoggedEvent
from persistence.notification_state import ADMIN_ROLES, TaskState, WorkerNotificationStore
from persistence.notification_store import Notification
from persistence.webhook_store import Endpoint
from workers.notification_rules import (
    Names,
    apply_event,
    is_task_event,
    mention_names,
    notice_id,
    task_key,
)

#: Looks up account ids of user names and display names of account ids, for one batch.
NameLookup = Callable[[Sequence[str], Sequence[str]], Awaitable[Names]]

_CACHE_ENTRIES = 4096


class NotificationWorker:
    """Records who is told what for each event (see the module docstring)."""

    name = "notifications"

    def __init__(
        self,
        store: WorkerNotificationStore,
        *,
        lookup: NameLookup | None = None,
        clock: Callable[[], float] = time.time,
        wake: Callable[[], None] | None = None,
    ) -> None:
        self._store = store
        self._lookup = lookup or names_as_ids
        self._clock = clock
        self._wake = wake

    async def handle(self, events: Sequence[LoggedEvent]) -> None:
        """Apply a batch, in offset order; idempotent."""
        keys = list(dict.fromkeys(task_key(e) for e in events if is_task_event(e)))
        tasks: dict[tuple[str, str], TaskState | None] = dict(await self._store.tasks(keys))
        mentioned = [name for event in events for name in mention_names(event)]
        actors = [event.actor for event in events if event.actor]
        names = await self._lookup(list(dict.fromkeys(mentioned)), list(dict.fromkeys(actors)))
        now = self._clock()
        told: list[Notification] = []
        changed: dict[tuple[str, str], TaskState] = {}
        gone: set[tuple[str, str]] = set()
        roles: list[tuple[str, str, str | None]] = []
        for event in events:
            key = task_key(event) if is_task_event(event) else None
            outcome = apply_event(event, tasks.get(key) if key else None, names, now=now)
            told += outcome.notifications
            if key is not None and outcome.task is not None:
                tasks[key] = changed[key] = outcome.task
                gone.discard(key)
            if key is not None and outcome.forget:
                tasks[key] = None
                changed.pop(key, None)
                gone.add(key)
            if outcome.role is not None:
                roles.append(outcome.role)
        # Notifications first: once a task's state says it saw an event, that event's
        # notifications must be in the store already.
        added = await self._store.add(told) if told else []
        await self._store.save_tasks(list(changed.values()))
        await self._store.forget_tasks(sorted(gone))
        await self._store.set_roles(roles)
        if added and self._wake is not None:
            self._wake()


async def names_as_ids(names: Sequence[str], ids: Sequence[str]) -> Names:
    """With no account store (auth off): a user's name is their id."""
    return Names(ids_by_name={name: name for name in names}, names_by_id={})


def account_lookup(open_accounts: Callable[[], Accounts]) -> NameLookup:
    """A :data:`NameLookup` over the account store (opened once, read in a thread), with a
    bounded cache so a busy board does not ask for the same names each batch."""
    cache: dict[tuple[str, str], str | None] = {}
    accounts: list[Accounts] = []

    def lookup_sync(names: Sequence[str], ids: Sequence[str]) -> Names:
        if not accounts:
            accounts.append(open_accounts())
        store = accounts[0]
        by_name: dict[str, str] = {}
        by_id: dict[str, str] = {}
        for name in names:
            key = ("name", name.lower())
            if key not in cache:
                found = store.find_user(name)
                cache[key] = found.id if found is not None and not found.disabled else None
            if cache[key]:
                by_name[name] = str(cache[key])
        for user_id in ids:
            key = ("id", user_id)
            if key not in cache:
                user = store.get_user(user_id)
                cache[key] = user.name if user is not None else None
            if cache[key]:
                by_id[user_id] = str(cache[key])
        if len(cache) > _CACHE_ENTRIES:
            cache.clear()
        return Names(ids_by_name=by_name, names_by_id=by_id)

    async def lookup(names: Sequence[str], ids: Sequence[str]) -> Names:
        return await asyncio.to_thread(lookup_sync, names, ids)

    return lookup


def endpoint_disabled_notices(
    endpoint: Endpoint, reason: str, people: Sequence[str], *, now: float
) -> list[Notification]:
    """What each owner and admin of the endpoint's project is told when it is disabled."""
    line = f"Webhook endpoint {endpoint.url[:120]} of project {endpoint.project} was disabled"
    return [
        Notification(
            id=notice_id("webhook_disabled", f"{endpoint.id}\x00{endpoint.updated_at}", user),
            user=user,
            kind="webhook_disabled",
            title=line[:200],
            created_at=now,
            project=endpoint.project,
            actor="webhooks",
            data={"endpoint": endpoint.id, "url": endpoint.url, "reason": reason[:500]},
        )
        for user in people
    ]


def notify_disabled(
    store: WorkerNotificationStore, *, clock: Callable[[], float] = time.time
) -> Callable[[Endpoint, str], Awaitable[None]]:
    """A webhook ``on_disabled`` hook: a ``webhook_disabled`` notification for each owner
    and admin of the project (the roles learnt from ``member.changed`` events)."""

    async def notify(endpoint: Endpoint, reason: str) -> None:
        people = await store.people_with_roles(endpoint.project, ADMIN_ROLES)
        if people:
            await store.add(endpoint_disabled_notices(endpoint, reason, people, now=clock()))

    return notify
