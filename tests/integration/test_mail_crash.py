"""E-mail survives ``kill -9``: every notification's e-mail arrives, under one Message-ID each
(a duplicate only as a resend of that Message-ID).

A real ``boardcast serve`` (local backend: the notification and e-mail workers run in it)
sends to a real SMTP server (aiosmtpd) that keeps each message and then waits before
acknowledging it, so kills land between the server's acceptance and the worker's record of
it. In the first test notifications are written to the notification store from this test's
process, before, between and after two kills; in the second they come the whole way from
tasks assigned over REST (event log, notification worker, e-mail worker).

The check is shown to catch what it is for: run on a worker that moves its cursor before
recording jobs it misses an e-mail, and on one whose job ids are not stable it finds a
notification e-mailed under two Message-IDs.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

import workers.mail
from auth.accounts import ACCOUNTS_FILENAME, AccountStore
from persistence.mail_store_sqlite import FILENAME as MAIL_FILE
from persistence.mail_store_sqlite import SqliteMailStore
from persistence.notification_store import Notification
from persistence.notification_store_sqlite import FILENAME as NOTIFICATIONS_FILE
from persistence.notification_store_sqlite import SqliteNotificationStore
from tests.interop.servers import serve_process
from tests.services import TIMEOUT_SCALE
from tests.smtp_server import Received, SmtpSink, smtp_server
from workers.mail import MailSettings, MailWorker
from workers.mail_rules import Planned
from workers.mail_smtp import SmtpSender, SmtpSettings

pytestmark = pytest.mark.timeout(300)

STARTED = time.time()
PEOPLE = {f"u{n}": f"person{n}@example.com" for n in range(4)}
ENV = {
    "BOARDCAST_ENCRYPTION": "off",  # this test writes the account store itself, in plaintext
    "BOARDCAST_MAIL_POLL_SECONDS": "0.05",
    "BOARDCAST_MAIL_BATCH_SIZE": "5",
    "BOARDCAST_MAIL_CONCURRENCY": "2",
    "BOARDCAST_MAIL_RETRY_BASE_SECONDS": "0.2",
    "BOARDCAST_MAIL_RETRY_MAX_SECONDS": "0.5",
    "BOARDCAST_MAIL_MAX_ATTEMPTS": "100",
    "BOARDCAST_SMTP_TIMEOUT_SECONDS": "1",  # a claim's lease: 5 s
    "BOARDCAST_SMTP_FROM": "boards@example.com",
}


def subject(mail: Received) -> str:
    """What an e-mail is about, as these tests name it: its subject."""
    return str(mail.message["Subject"])


def problems(
    expected: dict[str, str],
    received: list[Received],
    key: Callable[[Received], str] = subject,
) -> list[str]:
    """What is wrong with the e-mail received for ``expected`` (notification id -> what
    ``key`` finds in its e-mail): one missed, one e-mailed under two Message-IDs, two under
    one, or a stranger."""
    titles_of_id: dict[str, set[str]] = defaultdict(set)
    ids_of_title: dict[str, set[str]] = defaultdict(set)
    for mail in received:
        title = key(mail)
        titles_of_id[mail.message_id].add(title)
        ids_of_title[title].add(mail.message_id)
    wanted = set(expected.values())
    found: list[str] = []
    found += [f"never e-mailed: {title}" for title in sorted(wanted - set(ids_of_title))]
    found += [
        f"{title} e-mailed under {len(ids)} Message-IDs"
        for title, ids in sorted(ids_of_title.items())
        if len(ids) > 1
    ]
    found += [
        f"{message_id} tells of {sorted(titles)}"
        for message_id, titles in titles_of_id.items()
        if len(titles) > 1
    ]
    found += [f"not expected: {title}" for title in sorted(set(ids_of_title) - wanted)]
    return found


def notifications(numbers: range) -> list[Notification]:
    people = list(PEOPLE)
    return [
        Notification(
            id=f"n{n}",
            user=people[n % len(people)],
            kind="assigned",
            title=f"note {n}",
            created_at=STARTED + n * 0.001,  # recent: retention keeps them
            board_id="b1",
        )
        for n in numbers
    ]


async def feed(store: SqliteNotificationStore, numbers: range, expected: dict[str, str]) -> None:
    """Record notifications a few at a time, as a busy server would."""
    made = notifications(numbers)
    for start in range(0, len(made), 3):
        chunk = made[start : start + 3]
        await store.add(chunk)
        expected.update({n.id: n.title for n in chunk})
        await asyncio.sleep(0.03)


async def settle(sink: SmtpSink, expected: dict[str, str]) -> list[str]:
    """Wait (bounded) until every expected e-mail arrived; what is still wrong."""
    deadline = asyncio.get_running_loop().time() + 60 * TIMEOUT_SCALE
    while True:
        found = problems(expected, sink.messages())
        if not any(p.startswith("never") for p in found):
            return found
        if asyncio.get_running_loop().time() > deadline:
            return found
        await asyncio.sleep(0.1)


async def test_every_email_arrives_once_per_message_id_across_kill_9(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    accounts = AccountStore(str(data / ACCOUNTS_FILENAME))
    for user, address in PEOPLE.items():
        accounts.add_user(user, user, password_hash=None, email=address)
    accounts.close()
    store = SqliteNotificationStore(str(data / NOTIFICATIONS_FILE))
    expected: dict[str, str] = {}
    with smtp_server(SmtpSink(delay_seconds=0.2)) as sink:
        for name, value in {**ENV, "BOARDCAST_SMTP_HOST": "127.0.0.1"}.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("BOARDCAST_SMTP_PORT", str(sink.port))
        server = serve_process(data, "--backend", "local")
        try:
            await server.astart()
            feeding = asyncio.ensure_future(feed(store, range(0, 40), expected))
            await sink.wait_for(8, timeout=60)
            await asyncio.to_thread(server.kill)  # 1. mid-flow
            await feeding
            await feed(store, range(40, 50), expected)  # while it is down
            await server.astart()
            await sink.wait_for(len(sink.messages()) + 5, timeout=60)
            feeding = asyncio.ensure_future(feed(store, range(50, 70), expected))
            await asyncio.to_thread(server.kill)  # 2. again, mid-flow
            await feeding
            await server.astart()
            assert await settle(sink, expected) == []
            assert len(expected) == 70
            # E-mail a kill cut off after the server took it is sent again once its claim's
            # lease ends: wait until none is pending, then check again, resends included.
            jobs = SqliteMailStore(str(data / MAIL_FILE))
            try:
                deadline = asyncio.get_running_loop().time() + 60 * TIMEOUT_SCALE
                while (counts := await jobs.counts())["pending"]:
                    assert asyncio.get_running_loop().time() < deadline, counts
                    await asyncio.sleep(0.1)
            finally:
                await jobs.close()
            assert counts == {"pending": 0, "sent": 70, "dead": 0, "skipped": 0}
            assert problems(expected, sink.messages()) == []
            resent = len(sink.messages()) - len({m.message_id for m in sink.messages()})
            print(f"e-mails: {len(sink.messages())}, resends of a Message-ID: {resent}")
            # Each e-mail went to its person.
            for mail in sink.messages():
                number = int(str(mail.message["Subject"]).removeprefix("note "))
                person = list(PEOPLE)[number % len(PEOPLE)]
                assert mail.recipients == [PEOPLE[person]]
        finally:
            await server.astop()
            await store.close()


class Killed(Exception):
    """Where a kill -9 would have stopped the worker."""


def killed_before_the_cursor_moved(store: SqliteMailStore) -> None:
    """The next cursor move fails, as a kill -9 before it would leave it."""
    real = store.set_cursor

    async def once(seq: int) -> None:
        store.set_cursor = real  # type: ignore[method-assign]
        raise Killed

    store.set_cursor = once  # type: ignore[method-assign]


class CursorFirst(MailWorker):
    """A broken worker: moves its cursor before recording the jobs (killed once between)."""

    killed = False

    async def follow_once(self) -> int:
        cursor = await self.store.cursor()
        batch = await self.notifications.since(cursor, limit=self.settings.batch_size)
        if not batch:
            return 0
        await self.store.set_cursor(batch[-1].seq)
        if not self.killed:
            self.killed = True
            raise Killed
        await self.record(batch)
        return len(batch)


async def test_the_check_catches_a_missed_and_a_doubled_email(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def address(user: str) -> str | None:
        return PEOPLE.get(user)

    with smtp_server() as sink:
        sender = SmtpSender(SmtpSettings(host="127.0.0.1", port=sink.port, timeout_seconds=5))
        expected = {n.id: n.title for n in notifications(range(4))}

        # 1. Cursor first: a crash after it moved and before the jobs were recorded.
        first = SqliteNotificationStore(str(tmp_path / "a" / NOTIFICATIONS_FILE))
        mail = SqliteMailStore(str(tmp_path / "a" / MAIL_FILE))
        await first.add(notifications(range(4)))
        broken = CursorFirst(first, mail, sender, address, MailSettings(batch_size=2))
        with pytest.raises(Killed):
            await broken.run_once()  # killed after the cursor moved, before the jobs
        await broken.run_once()
        assert any(p.startswith("never e-mailed") for p in problems(expected, sink.messages()))
        await mail.close()
        await first.close()

        # 2. Job ids not stable: a crash before the cursor moved records the e-mail anew.
        sink.received.clear()
        monkeypatch.setattr(
            workers.mail,
            "plan",
            lambda n, p: Planned("ml_" + uuid.uuid4().hex, n.created_at, "immediate"),
        )
        second = SqliteNotificationStore(str(tmp_path / "b" / NOTIFICATIONS_FILE))
        mail = SqliteMailStore(str(tmp_path / "b" / MAIL_FILE))
        await second.add(notifications(range(4)))
        unstable = MailWorker(second, mail, sender, address, MailSettings())
        killed_before_the_cursor_moved(mail)
        with pytest.raises(Killed):
            await unstable.run_once()
        await unstable.run_once()  # sends; then the same notifications come again
        await unstable.run_once()
        assert any("Message-IDs" in p for p in problems(expected, sink.messages()))
        await mail.close()
        await second.close()

        # And the real worker, through the same crash, passes the check.
        monkeypatch.undo()
        sink.received.clear()
        third = SqliteNotificationStore(str(tmp_path / "c" / NOTIFICATIONS_FILE))
        mail = SqliteMailStore(str(tmp_path / "c" / MAIL_FILE))
        await third.add(notifications(range(4)))
        sound = MailWorker(third, mail, sender, address, MailSettings())
        killed_before_the_cursor_moved(mail)
        with pytest.raises(Killed):
            await sound.run_once()
        await sound.run_once()  # sends; then the same notifications come again
        await sound.run_once()
        assert problems(expected, sink.messages()) == []
        await mail.close()
        await third.close()


def notification_ids(mail: Received) -> str:
    """The notifications an e-mail tells of, as its ``Boardcast-Notifications`` header says."""
    return str(mail.message["Boardcast-Notifications"])


async def assign_tasks(
    http: aiohttp.ClientSession, base: str, board: str, numbers: range, acknowledged: dict[str, int]
) -> None:
    """Create tasks, then assign each to a person in turn; keep the tasks whose assignment
    the server acknowledged (task id -> number)."""
    people = list(PEOPLE)
    limit = aiohttp.ClientTimeout(total=30)
    tasks = f"{base}/v1/boards/{board}/tasks"
    for n in numbers:
        try:
            async with http.post(
                tasks, json={"title": f"mailtask-{n}", "column": "todo"}, timeout=limit
            ) as response:
                if response.status != 201:
                    continue
                task = (await response.json())["id"]
            body = {"assignees": [people[n % len(people)]]}
            async with http.patch(f"{tasks}/{task}", json=body, timeout=limit) as response:
                if response.status == 200:
                    acknowledged[task] = n
        except (aiohttp.ClientError, TimeoutError):
            return  # the server is gone; what it did not acknowledge may or may not exist


async def test_assignments_over_rest_are_emailed_once_per_message_id_across_kill_9(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole way: a task assigned over REST, its event, the notification worker, the
    e-mail worker, the SMTP server; the server killed -9 twice while it flows."""
    data = tmp_path / "data"
    data.mkdir()
    accounts = AccountStore(str(data / ACCOUNTS_FILENAME))
    for user, address in PEOPLE.items():
        accounts.add_user(user, user, password_hash=None, email=address)
    accounts.close()
    acknowledged: dict[str, int] = {}
    with smtp_server(SmtpSink(delay_seconds=0.2)) as sink:
        for name, value in {**ENV, "BOARDCAST_SMTP_HOST": "127.0.0.1"}.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("BOARDCAST_SMTP_PORT", str(sink.port))
        monkeypatch.setenv("BOARDCAST_WORKER_POLL_SECONDS", "0.05")
        server = serve_process(data, "--backend", "local")
        store = SqliteNotificationStore(str(data / NOTIFICATIONS_FILE))
        try:
            await server.astart()
            async with aiohttp.ClientSession() as http:
                base = f"http://127.0.0.1:{server.port}"
                async with http.post(f"{base}/v1/projects", json={"name": "P"}) as response:
                    project = await response.json()
                async with http.post(
                    f"{base}/v1/projects/{project['id']}/boards", json={"name": "B"}
                ) as response:
                    board = (await response.json())["id"]
                writing = asyncio.ensure_future(
                    assign_tasks(http, base, board, range(0, 40), acknowledged)
                )
                await sink.wait_for(5, timeout=90)
                await asyncio.to_thread(server.kill)  # 1. while tasks are assigned and e-mailed
                await writing
                await server.astart()
                await assign_tasks(http, base, board, range(40, 50), acknowledged)
                await sink.wait_for(len(sink.messages()) + 3, timeout=90)
                await asyncio.to_thread(server.kill)  # 2. again
                await server.astart()
                await assign_tasks(http, base, board, range(50, 55), acknowledged)
            assert len(acknowledged) >= 20

            async def expected() -> dict[str, str]:
                # The "assigned" notification of every acknowledged assignment.
                notes = await store.since(0, limit=10_000)
                return {
                    n.id: n.id for n in notes if n.kind == "assigned" and n.task_id in acknowledged
                }

            deadline = asyncio.get_running_loop().time() + 90 * TIMEOUT_SCALE
            jobs = SqliteMailStore(str(data / MAIL_FILE))
            try:
                while (
                    len(owed := await expected()) < len(acknowledged)
                    or any(
                        p.startswith("never")
                        for p in problems(owed, sink.messages(), notification_ids)
                    )
                    or (await jobs.counts())["pending"]
                ):
                    assert asyncio.get_running_loop().time() < deadline, (
                        len(owed),
                        len(acknowledged),
                        problems(owed, sink.messages(), notification_ids)[:5],
                    )
                    await asyncio.sleep(0.1)
            finally:
                await jobs.close()
            # An assignment cut off by a kill before its answer may be e-mailed too.
            found = problems(owed, sink.messages(), notification_ids)
            assert [p for p in found if not p.startswith("not expected")] == []
            people = list(PEOPLE)
            task_of = {n.id: n.task_id for n in await store.since(0, limit=10_000)}
            for mail in sink.messages():
                task = task_of[notification_ids(mail)]
                if task in acknowledged:
                    person = people[acknowledged[task] % len(people)]
                    assert mail.recipients == [PEOPLE[person]]
            resent = len(sink.messages()) - len({m.message_id for m in sink.messages()})
            print(
                f"assigned: {len(acknowledged)}, e-mails: {len(sink.messages())}, resends: {resent}"
            )
        finally:
            await server.astop()
            await store.close()
