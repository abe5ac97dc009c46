"""One contract for the webhook stores: SQLite in the data directory, and MongoDB (SecantusDB).

Each test runs on both. What they promise: a delivery recorded twice is recorded once; a
claim hands a due delivery to one loop and postpones it by the lease (so a loop that died
mid-attempt leaves it due again); disabling an endpoint pauses its deliveries and enabling
it makes them due; secrets never reach the store in plaintext when encryption is on.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pymongo
import pytest

from persistence.encrypted import KeySource
from persistence.keyring import KeyRing
from persistence.webhook_store import Delivery, Endpoint, Sealer, WebhookStore
from persistence.webhook_store_mongo import MongoWebhookStore
from persistence.webhook_store_sqlite import FILENAME, SqliteWebhookStore
from tests.persistence_servers import mongo_server, mongo_url  # noqa: F401 - fixtures
from workers.webhooks_signing import new_secret

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(params=["sqlite", "mongo"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[WebhookStore]:
    ring = KeyRing.open(str(tmp_path / "keys" / "at-rest.json"))
    sealer = Sealer(KeySource(ring=ring), encrypt=True)
    opened: WebhookStore
    if request.param == "sqlite":
        opened = SqliteWebhookStore(str(tmp_path / FILENAME), sealer=sealer)
    else:
        url = request.getfixturevalue("mongo_url")
        opened = MongoWebhookStore(url, sealer=sealer)
    opened.kind = request.param  # type: ignore[attr-defined]
    opened.where = url if request.param == "mongo" else str(tmp_path / FILENAME)  # type: ignore[attr-defined]
    try:
        yield opened
    finally:
        await opened.close()


def endpoint(project: str = "p1", number: int = 1, **changes: object) -> Endpoint:
    made = Endpoint(
        id=f"wh_{project}_{number}",
        project=project,
        url="https://example.com/hook",
        events=("task.created",),
        secret=new_secret(),
        created_at=float(number),
        updated_at=float(number),
    )
    return made.replace(**changes)


def delivery(endpoint_id: str, number: int, *, at: float = 100.0) -> Delivery:
    return Delivery(
        id=f"msg_{endpoint_id}_{number}",
        endpoint_id=endpoint_id,
        project="p1",
        event_id=f"b1:{number}:0",
        event_type="task.created",
        body=json.dumps({"type": "task.created", "n": number}),
        created_at=at,
        next_attempt_at=at,
    )


async def test_endpoints_round_trip_and_the_per_project_bound_holds(store: WebhookStore) -> None:
    first = endpoint(number=1)
    assert await store.add_endpoint(first, max_per_project=2)
    assert await store.add_endpoint(endpoint(number=2), max_per_project=2)
    assert not await store.add_endpoint(endpoint(number=3), max_per_project=2)
    assert await store.add_endpoint(endpoint("p2", 1), max_per_project=2)  # another project
    assert await store.get_endpoint(first.id) == first
    assert [e.id for e in await store.list_endpoints("p1")] == ["wh_p1_1", "wh_p1_2"]
    assert {e.id for e in await store.endpoints_for(["p1", "p2", "p3"])} == {
        "wh_p1_1",
        "wh_p1_2",
        "wh_p2_1",
    }
    assert await store.delete_endpoint(first.id)
    assert not await store.delete_endpoint(first.id)
    assert await store.get_endpoint(first.id) is None


async def test_a_delivery_recorded_twice_is_recorded_once(store: WebhookStore) -> None:
    await store.add_endpoint(endpoint(), max_per_project=10)
    batch = [delivery("wh_p1_1", n) for n in range(5)]
    assert await store.add_deliveries(batch) == 5
    assert await store.add_deliveries([*batch, delivery("wh_p1_1", 5)]) == 1
    listed = await store.list_deliveries("wh_p1_1", limit=100)
    assert sorted(d.id for d in listed) == sorted(f"msg_wh_p1_1_{n}" for n in range(6))


async def test_a_claim_hands_each_due_delivery_out_once_until_its_lease_ends(
    store: WebhookStore,
) -> None:
    await store.add_endpoint(endpoint(), max_per_project=10)
    await store.add_deliveries([delivery("wh_p1_1", n, at=100.0 + n) for n in range(4)])
    assert await store.claim_due(99.0, lease=30, limit=10) == []
    first = await store.claim_due(101.5, lease=30, limit=10)
    assert [d.id for d in first] == ["msg_wh_p1_1_0", "msg_wh_p1_1_1"]
    # Claimed concurrently by two loops: no delivery goes to both.
    again = await asyncio.gather(*(store.claim_due(110.0, lease=30, limit=1) for _ in range(3)))
    taken = [d.id for batch in again for d in batch]
    assert sorted(taken) == ["msg_wh_p1_1_2", "msg_wh_p1_1_3"]
    # Nobody saved the first two: after the lease they are due again (a loop died).
    assert [d.id for d in await store.claim_due(131.6, lease=30, limit=10)] == [
        "msg_wh_p1_1_0",
        "msg_wh_p1_1_1",
    ]
    done = first[0].replace(status="delivered", next_attempt_at=None, attempts_made=1)
    await store.save_delivery(done)
    assert await store.get_delivery("wh_p1_1", done.id) == done
    assert await store.claim_due(10_000.0, lease=30, limit=10) != []
    assert done.id not in [d.id for d in await store.claim_due(20_000.0, lease=30, limit=10)]
    # A round's outcomes saved at once.
    later = [
        first[0].replace(status="pending", next_attempt_at=50_000.0, attempts_made=2),
        first[1].replace(status="failed", next_attempt_at=None, attempts_made=3),
    ]
    await store.save_deliveries(later)
    for saved in later:
        assert await store.get_delivery("wh_p1_1", saved.id) == saved


async def test_disabling_pauses_deliveries_and_enabling_makes_them_due(store: WebhookStore) -> None:
    await store.add_endpoint(endpoint(), max_per_project=10)
    await store.add_deliveries([delivery("wh_p1_1", n) for n in range(3)])
    assert await store.disable_endpoint("wh_p1_1", reason="410 Gone", at=150.0)
    assert not await store.disable_endpoint("wh_p1_1", reason="again", at=151.0)
    stored = await store.get_endpoint("wh_p1_1")
    assert stored is not None and not stored.enabled and stored.disabled_reason == "410 Gone"
    assert await store.endpoints_for(["p1"]) == []
    assert await store.claim_due(1_000.0, lease=30, limit=10) == []
    assert {d.status for d in await store.list_deliveries("wh_p1_1", limit=10)} == {"paused"}
    await store.save_endpoint(stored.replace(enabled=True, updated_at=200.0))
    due = await store.claim_due(200.0, lease=30, limit=10)
    assert len(due) == 3


async def test_health_counts_failed_deliveries_in_a_row_until_a_success(
    store: WebhookStore,
) -> None:
    await store.add_endpoint(endpoint(), max_per_project=10)
    await store.record_health("wh_p1_1", ok=False, at=10.0)
    await store.record_health("wh_p1_1", ok=False, at=20.0, delivery_failed=True)
    health = await store.record_health("wh_p1_1", ok=False, at=30.0, delivery_failed=True)
    assert health is not None and health.failing_since == 10.0 and health.failed_in_row == 2
    health = await store.record_health("wh_p1_1", ok=True, at=40.0)
    assert health is not None and health.failing_since is None and health.failed_in_row == 0
    assert await store.record_health("gone", ok=True, at=1.0) is None


async def test_delivery_log_pages_newest_first_without_skipping_ties(store: WebhookStore) -> None:
    await store.add_endpoint(endpoint(), max_per_project=10)
    await store.add_deliveries([delivery("wh_p1_1", n, at=100.0) for n in range(5)])
    seen: list[str] = []
    before = None
    for _ in range(10):
        page = await store.list_deliveries("wh_p1_1", limit=2, before=before)
        if not page:
            break
        seen += [d.id for d in page]
        before = (page[-1].created_at, page[-1].id)
    assert sorted(seen) == sorted(f"msg_wh_p1_1_{n}" for n in range(5))
    assert len(seen) == 5


async def test_secrets_and_bodies_are_sealed_at_rest(store: WebhookStore) -> None:
    made = endpoint(previous_secret=new_secret(), previous_until=500.0)
    await store.add_endpoint(made, max_per_project=10)
    await store.add_deliveries([delivery("wh_p1_1", 1)])
    raw = _raw_contents(store)
    assert made.secret not in raw and str(made.previous_secret) not in raw
    assert '"n": 1' not in raw and "enc1:" in raw
    assert (await store.get_endpoint(made.id)) == made


def _raw_contents(store: WebhookStore) -> str:
    where = store.where  # type: ignore[attr-defined]
    if store.kind == "sqlite":  # type: ignore[attr-defined]
        db = sqlite3.connect(where)
        try:
            rows = db.execute(
                "SELECT doc FROM webhook_endpoints UNION ALL SELECT doc FROM webhook_deliveries"
            ).fetchall()
        finally:
            db.close()
        return "\n".join(doc for (doc,) in rows)
    client: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(where)
    try:
        database = client.get_default_database()
        docs = [*database["webhook_endpoints"].find(), *database["webhook_deliveries"].find()]
    finally:
        client.close()
    return "\n".join(json.dumps(doc, default=str) for doc in docs)
