"""The e-mail worker against a real SMTP server (aiosmtpd on loopback) and the real SQLite
notification and mail stores: what people receive, when, and what happens when the server
refuses.

A clock the test controls decides what is due, so digests and quiet hours are shown without
waiting for an hour to pass; retries run on the real clock with short waits.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from persistence.mail_store import MailStore, Preferences
from persistence.mail_store_mongo import MongoMailStore
from persistence.mail_store_sqlite import FILENAME, SqliteMailStore
from persistence.notification_store import Notification, NotificationStore
from persistence.notification_store_mongo import MongoNotificationStore
from persistence.notification_store_sqlite import SqliteNotificationStore
from tests.persistence_servers import mongo_server, mongo_url  # noqa: F401 - fixtures
from tests.services import TIMEOUT_SCALE, free_port
from tests.smtp_server import SmtpSink, smtp_server
from workers.mail import MailSettings, MailWorker
from workers.mail_rules import job_id, message_id
from workers.mail_smtp import SmtpSender, SmtpSettings

pytestmark = pytest.mark.timeout(60)

ADDRESSES = {"ada": "ada@example.com", "bob": "bob@example.com"}


@dataclass
class Clock:
    now: float

    def __call__(self) -> float:
        return self.now


def at(text: str, zone: str = "UTC") -> float:
    """Unix seconds of a wall time in a zone ("2026-03-02 10:20")."""
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone)).timestamp()


async def address(user: str) -> str | None:
    return ADDRESSES.get(user)


@dataclass
class Rig:
    notifications: NotificationStore
    store: MailStore
    sink: SmtpSink
    clock: Clock
    worker: MailWorker

    async def notify(self, user: str, title: str, *, kind: str = "assigned", at: float) -> None:
        number = len(await self.notifications.since(0, limit=10_000))
        await self.notifications.add(
            [
                Notification(
                    id=f"n{number}-{user}",
                    user=user,
                    kind=kind,
                    title=title,
                    created_at=at,
                    board_id="b1",
                )
            ]
        )


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with smtp_server() as running:
        yield running


def make_worker(
    parts: tuple[NotificationStore, MailStore, SmtpSink, Clock],
    *,
    clock: Callable[[], float] | None = None,
    **settings: float,
) -> MailWorker:
    """A worker sending to the sink, waiting 0.05 s, 0.1 s, 0.2 s... between attempts."""
    notifications, store, sink, fake = parts
    chosen = MailSettings(
        sender="boards@example.com",
        public_url="https://boards.example.com",
        poll_seconds=0.02,
        retry_base_seconds=0.05,
        retry_max_seconds=1.0,
        retry_jitter=0.0,
        **settings,  # type: ignore[arg-type]
    )
    sender = SmtpSender(SmtpSettings(host="127.0.0.1", port=sink.port, timeout_seconds=5))
    return MailWorker(notifications, store, sender, address, chosen, clock=clock or fake)


@pytest.fixture(params=["sqlite", "mongo"])
async def rig(request: pytest.FixtureRequest, tmp_path: Path, sink: SmtpSink) -> AsyncIterator[Rig]:
    """The worker over both stores on SQLite, or both on MongoDB (SecantusDB)."""
    notifications: NotificationStore
    store: MailStore
    if request.param == "sqlite":
        notifications = SqliteNotificationStore(str(tmp_path / "notifications.sqlite3"))
        store = SqliteMailStore(str(tmp_path / FILENAME))
    else:
        url = request.getfixturevalue("mongo_url")
        notifications = MongoNotificationStore(url)
        store = MongoMailStore(url)
    clock = Clock(at("2026-03-02 10:00"))
    worker = make_worker((notifications, store, sink, clock))
    try:
        yield Rig(notifications, store, sink, clock, worker)
    finally:
        await worker.stop()
        await store.close()
        await notifications.close()


async def test_an_immediate_email_reaches_the_person_with_the_notification(rig: Rig) -> None:
    await rig.notify("ada", "Bob assigned you to 'Ship it'", at=rig.clock.now)
    await rig.worker.run_once()
    (mail,) = rig.sink.messages()
    assert mail.recipients == ["ada@example.com"]
    assert mail.message["To"] == "ada@example.com"
    assert mail.message["From"] == "boards@example.com"
    assert mail.message["Subject"] == "Bob assigned you to 'Ship it'"
    assert "Bob assigned you to 'Ship it'" in mail.text()
    assert "https://boards.example.com/boards/b1" in mail.text()
    html = mail.message.get_body(preferencelist=("html",))
    assert html is not None and 'href="https://boards.example.com/boards/b1"' in str(
        html.get_content()
    )
    assert mail.message_id == f"<{job_id('immediate', 'n0-ada')}@boardcast>"
    # Read again (as after a crash before the cursor moved): nothing new is owed.
    await rig.store.set_cursor(0)
    await rig.worker.run_once()
    assert len(rig.sink.messages()) == 1
    assert (await rig.store.counts())["sent"] == 1


async def test_muted_kinds_and_email_off_send_nothing(rig: Rig) -> None:
    await rig.store.save_preferences(Preferences("ada", kinds=("assigned",)))
    await rig.store.save_preferences(Preferences("bob", email=False))
    await rig.notify("ada", "Bob mentioned you", kind="mentioned", at=rig.clock.now)
    await rig.notify("bob", "Ada assigned you", at=rig.clock.now)
    await rig.notify("ada", "Bob assigned you", at=rig.clock.now)
    await rig.worker.run_once()
    await rig.worker.run_once()
    (mail,) = rig.sink.messages()
    assert mail.message["Subject"] == "Bob assigned you"
    assert await rig.store.cursor() == 3  # all three read, one e-mail owed


async def test_a_person_without_an_address_is_skipped_and_counted(rig: Rig) -> None:
    await rig.notify("eve", "You were added to P", kind="member", at=rig.clock.now)
    await rig.worker.run_once()
    assert rig.sink.messages() == []
    assert (await rig.store.counts())["skipped"] == 1


async def test_an_hourly_digest_collects_its_hour_into_one_email_at_the_hours_end(
    rig: Rig,
) -> None:
    await rig.store.save_preferences(Preferences("ada", mode="hourly"))
    rig.clock.now = at("2026-03-02 10:45")
    await rig.notify("ada", "first", at=at("2026-03-02 10:20"))
    await rig.notify("ada", "second", at=at("2026-03-02 10:40"))
    await rig.notify("bob", "bob's own", at=at("2026-03-02 10:41"))  # immediate, by default
    await rig.worker.run_once()
    assert [m.recipients for m in rig.sink.messages()] == [["bob@example.com"]]
    await rig.notify("ada", "third", at=at("2026-03-02 10:44"))
    await rig.notify("ada", "next hour's", at=at("2026-03-02 11:05"))
    await rig.worker.run_once()
    assert len(rig.sink.messages()) == 1  # the hour is not over
    rig.clock.now = at("2026-03-02 11:00:01")
    await rig.worker.run_once()
    digest = rig.sink.messages()[1]
    assert digest.recipients == ["ada@example.com"]
    assert digest.message["Subject"] == "Boardcast: 3 notifications"
    body = digest.text()
    assert "first" in body and "second" in body and "third" in body
    assert "next hour's" not in body
    # One read late, after its hour's digest went: an e-mail of its own, not lost.
    await rig.notify("ada", "late", at=at("2026-03-02 10:59"))
    await rig.worker.run_once()
    late = rig.sink.messages()[2]
    assert "late" in late.text() and late.message_id != digest.message_id
    rig.clock.now = at("2026-03-02 12:00:01")
    await rig.worker.run_once()
    assert "next hour's" in rig.sink.messages()[3].text()
    assert len(rig.sink.messages()) == 4


async def test_a_daily_digest_goes_at_the_persons_hour_in_their_zone(rig: Rig) -> None:
    await rig.store.save_preferences(
        Preferences("ada", mode="daily", digest_hour=8, time_zone="America/New_York")
    )
    rig.clock.now = at("2026-03-02 20:00", "America/New_York")
    await rig.notify("ada", "evening", at=rig.clock.now)
    await rig.worker.run_once()
    rig.clock.now = at("2026-03-03 07:59", "America/New_York")
    await rig.worker.run_once()
    assert rig.sink.messages() == []
    rig.clock.now = at("2026-03-03 08:00:01", "America/New_York")
    await rig.worker.run_once()
    (mail,) = rig.sink.messages()
    assert "evening" in mail.text()


async def test_quiet_hours_defer_an_email_to_their_end(rig: Rig) -> None:
    await rig.store.save_preferences(
        Preferences("ada", quiet_start=22, quiet_end=7, time_zone="Europe/Paris")
    )
    rig.clock.now = at("2026-03-02 23:30", "Europe/Paris")
    await rig.notify("ada", "at night", at=rig.clock.now)
    await rig.worker.run_once()
    rig.clock.now = at("2026-03-03 06:59", "Europe/Paris")
    await rig.worker.run_once()
    assert rig.sink.messages() == []
    rig.clock.now = at("2026-03-03 07:00:01", "Europe/Paris")
    await rig.worker.run_once()
    (mail,) = rig.sink.messages()
    assert mail.message["Subject"] == "at night"
    # Outside them it goes at once.
    rig.clock.now = at("2026-03-03 12:00", "Europe/Paris")
    await rig.notify("ada", "at noon", at=rig.clock.now)
    await rig.worker.run_once()
    assert rig.sink.messages()[-1].message["Subject"] == "at noon"


async def wait_until_settled(store: MailStore, count: int) -> None:
    deadline = asyncio.get_running_loop().time() + 20 * TIMEOUT_SCALE
    while True:
        counts = await store.counts()
        if counts["sent"] + counts["dead"] >= count:
            return
        assert asyncio.get_running_loop().time() < deadline, counts
        await asyncio.sleep(0.02)


async def test_4xx_answers_are_retried_with_growing_waits_until_accepted(rig: Rig) -> None:
    rig.sink.answers = ["451 4.3.0 Try again later"] * 3
    rig.worker = make_worker((rig.notifications, rig.store, rig.sink, Clock(0.0)), clock=time.time)
    await rig.notify("ada", "retried", at=0.0)
    rig.worker.start()
    await rig.sink.wait_for(1)
    await wait_until_settled(rig.store, 1)
    (job,) = await rig.store.list_jobs("sent", limit=10)
    assert [a.code for a in job.attempts] == [451, 451, 451, 250]
    assert "451" in (job.attempts[0].error or "")
    # The waits between attempts: 0.05 s, then 0.1 s, then 0.2 s (base doubling, no jitter).
    starts = [a.at for a in job.attempts]
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    assert gaps[0] >= 0.05 and gaps[1] >= 0.1 and gaps[2] >= 0.2
    assert len(rig.sink.refused) == 3
    (mail,) = rig.sink.messages()
    assert mail.message_id == message_id(job)  # every attempt was the same e-mail


async def test_a_5xx_answer_dead_letters_at_once(rig: Rig) -> None:
    rig.sink.answers = ["550 5.1.1 No such mailbox"]
    await rig.notify("ada", "refused", at=rig.clock.now)
    await rig.worker.run_once()
    (dead,) = await rig.store.list_jobs("dead", limit=10)
    assert dead.attempts_made == 1 and dead.attempts[0].code == 550
    assert rig.sink.messages() == []


async def test_always_4xx_dead_letters_after_the_attempt_limit(
    tmp_path: Path, sink: SmtpSink
) -> None:
    notifications = SqliteNotificationStore(str(tmp_path / "n.sqlite3"))
    store = SqliteMailStore(str(tmp_path / FILENAME))
    worker = make_worker((notifications, store, sink, Clock(0.0)), clock=time.time, max_attempts=3)
    sink.default_answer = "451 4.3.0 Try again later"
    try:
        await notifications.add([Notification("n1", "ada", "assigned", "never", 0.0)])
        worker.start()
        await wait_until_settled(store, 1)
        (dead,) = await store.list_jobs("dead", limit=10)
        assert [a.code for a in dead.attempts] == [451, 451, 451]
        assert len(sink.refused) == 3 and sink.messages() == []
    finally:
        await worker.stop()
        await store.close()
        await notifications.close()


async def test_an_smtp_server_that_is_down_is_retried_until_it_is_back(
    tmp_path: Path, sink: SmtpSink
) -> None:
    notifications = SqliteNotificationStore(str(tmp_path / "n.sqlite3"))
    store = SqliteMailStore(str(tmp_path / FILENAME))
    port = sink.port
    worker = make_worker((notifications, store, sink, Clock(0.0)), clock=time.time)
    try:
        await notifications.add([Notification("n1", "ada", "assigned", "patience", 0.0)])
        # Nothing listens there: the connection is refused, and the job waits to be retried.
        worker.sender = SmtpSender(
            SmtpSettings(host="127.0.0.1", port=free_port(), timeout_seconds=2)
        )
        await worker.run_once()
        (pending,) = await store.list_jobs("pending", limit=10)
        assert pending.attempts[0].code is None and pending.attempts[0].error
        worker.sender = SmtpSender(SmtpSettings(host="127.0.0.1", port=port, timeout_seconds=5))
        worker.start()
        (mail,) = await sink.wait_for(1)
        assert mail.message["Subject"] == "patience"
    finally:
        await worker.stop()
        await store.close()
        await notifications.close()
