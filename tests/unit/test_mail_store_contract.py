"""One contract for the mail stores: SQLite beside the board store, and MongoDB (SecantusDB).

Each test runs on both. What they promise: a job recorded twice is recorded once; a digest
job collects notifications while open and refuses them once claimed or sent; a claim hands a
due job to one loop and makes it due again after the lease; a dead job can be made pending
again; the cursor never moves back.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from persistence.mail_store import (
    MAX_NOTIFICATIONS_PER_JOB,
    MailAttempt,
    MailJob,
    MailStore,
    Preferences,
)
from persistence.mail_store_mongo import MongoMailStore
from persistence.mail_store_sqlite import FILENAME, SqliteMailStore
from tests.persistence_servers import mongo_server, mongo_url  # noqa: F401 - fixtures

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(params=["sqlite", "mongo"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MailStore]:
    opened: MailStore
    if request.param == "sqlite":
        opened = SqliteMailStore(str(tmp_path / FILENAME))
    else:
        opened = MongoMailStore(request.getfixturevalue("mongo_url"))
    try:
        yield opened
    finally:
        await opened.close()


def job(job_id: str, *ids: str, at: float = 100.0, kind: str = "immediate") -> MailJob:
    return MailJob(
        id=job_id,
        user="u1",
        notification_ids=ids,
        created_at=at,
        next_attempt_at=at,
        kind=kind,
        updated_at=at,
    )


async def test_preferences_round_trip_and_replace(store: MailStore) -> None:
    assert await store.get_preferences("u1") is None
    chosen = Preferences(
        "u1",
        kinds=("assigned",),
        mode="daily",
        digest_hour=7,
        quiet_start=22,
        quiet_end=6,
        time_zone="Europe/Paris",
        updated_at=5.0,
    )
    await store.save_preferences(chosen)
    await store.save_preferences(Preferences("u2", email=False))
    assert await store.get_preferences("u1") == chosen
    assert await store.preferences_for(["u1", "u2", "u3"]) == {
        "u1": chosen,
        "u2": Preferences("u2", email=False),
    }
    await store.save_preferences(chosen.replace(mode="immediate", quiet_start=None, quiet_end=None))
    again = await store.get_preferences("u1")
    assert again is not None and again.mode == "immediate" and again.quiet_start is None


async def test_a_job_recorded_twice_is_recorded_once(store: MailStore) -> None:
    assert await store.merge_jobs([job("j1", "n1"), job("j2", "n2")], now=100.0) == []
    assert await store.merge_jobs([job("j1", "n1")], now=100.0) == []
    claimed = await store.claim_due(100.0, lease=30.0, limit=10)
    assert [(j.id, j.notification_ids) for j in claimed] == [("j1", ("n1",)), ("j2", ("n2",))]


async def test_a_digest_collects_while_open_and_refuses_once_claimed_or_sent(
    store: MailStore,
) -> None:
    window = job("d1", "n1", at=200.0, kind="digest")
    assert await store.merge_jobs([window], now=100.0) == []
    assert await store.merge_jobs([job("d1", "n2", at=200.0, kind="digest")], now=150.0) == []
    assert await store.merge_jobs([job("d1", "n1", at=200.0, kind="digest")], now=150.0) == []
    assert await store.claim_due(150.0, lease=30.0, limit=10) == []  # not due before 200
    (claimed,) = await store.claim_due(200.0, lease=30.0, limit=10)
    assert claimed.notification_ids == ("n1", "n2")
    # Claimed: a late notification is refused (it goes into another job).
    assert await store.merge_jobs([job("d1", "n3", kind="digest")], now=210.0) == ["d1"]
    sent = claimed.replace(
        status="sent",
        next_attempt_at=None,
        attempts_made=1,
        attempts=(MailAttempt(200.0, 250),),
        updated_at=201.0,
    )
    await store.save_jobs([sent])
    assert await store.merge_jobs([job("d1", "n4", kind="digest")], now=300.0) == ["d1"]
    stored = await store.get_job("d1")
    assert stored is not None
    assert stored.status == "sent" and stored.notification_ids == ("n1", "n2")
    assert stored.attempts == (MailAttempt(200.0, 250),)


async def test_a_full_job_refuses_more(store: MailStore) -> None:
    ids = [f"n{n}" for n in range(MAX_NOTIFICATIONS_PER_JOB)]
    await store.merge_jobs([job("d1", *ids, kind="digest")], now=0.0)
    assert await store.merge_jobs([job("d1", "one-more", kind="digest")], now=0.0) == ["d1"]
    assert await store.merge_jobs([job("d1", "n5", kind="digest")], now=0.0) == []


async def test_a_claim_is_one_loops_until_its_lease_ends(store: MailStore) -> None:
    await store.merge_jobs([job("j1", "n1")], now=100.0)
    assert len(await store.claim_due(100.0, lease=30.0, limit=10)) == 1
    assert await store.claim_due(120.0, lease=30.0, limit=10) == []
    # The holder died: due again after the lease, and open to notifications again.
    (again,) = await store.claim_due(131.0, lease=30.0, limit=10)
    assert again.id == "j1"


async def test_dead_letters_are_listed_newest_first_paged_and_retried(store: MailStore) -> None:
    await store.merge_jobs([job(f"j{n}", f"n{n}", at=float(n)) for n in range(5)], now=0.0)
    claimed = await store.claim_due(10.0, lease=30.0, limit=10)
    await store.save_jobs(
        [
            j.replace(
                status="dead",
                next_attempt_at=None,
                attempts_made=3,
                attempts=(MailAttempt(10.0, 550, "no such user"),),
                updated_at=20.0 + n,
            )
            for n, j in enumerate(claimed)
        ]
    )
    first = await store.list_jobs("dead", limit=2)
    assert [j.id for j in first] == ["j4", "j3"]
    rest = await store.list_jobs("dead", limit=10, before=(first[-1].updated_at, first[-1].id))
    assert [j.id for j in rest] == ["j2", "j1", "j0"]
    counts = await store.counts()
    assert counts["dead"] == 5 and counts["pending"] == 0 and counts["sent"] == 0
    retried = await store.retry_job("j2", now=50.0)
    assert retried is not None and retried.status == "pending" and retried.attempts_made == 0
    assert await store.retry_job("j2", now=50.0) is None  # not dead any more
    assert await store.retry_job("nope", now=50.0) is None
    (due,) = await store.claim_due(50.0, lease=30.0, limit=10)
    assert due.id == "j2" and due.attempts[0].code == 550  # the log of what failed is kept
    assert (await store.counts())["dead"] == 4


async def test_the_cursor_starts_at_zero_and_never_moves_back(store: MailStore) -> None:
    assert await store.cursor() == 0
    await store.set_cursor(7)
    await store.set_cursor(3)
    assert await store.cursor() == 7
