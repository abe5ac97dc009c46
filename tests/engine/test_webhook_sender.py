"""The delivery loop against real receivers on loopback: SSRF refusals at connect time,
no redirects, bounded answers and timeouts, the retry schedule, disabling, idempotence.

Events are handed to the worker as the runtime would (``LoggedEvent`` batches); the store
is the embedded one; every call is checked by the receiver with the ``standardwebhooks``
library.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from auth.accounts import AccountStore
from gateway.settings import Settings
from persistence.event_log import LoggedEvent
from persistence.webhook_store import Endpoint
from persistence.webhook_store_sqlite import SqliteWebhookStore
from tests.webhook_receiver import Receiver, webhook_receiver
from workers.webhooks import DeliveryLoop, DeliverySettings, WebhookWorker
from workers.webhooks_http import PolicyResolver, RefusedAddress, SenderSettings, WebhookSender
from workers.webhooks_policy import AddressPolicy
from workers.webhooks_retry import RetryPolicy
from workers.webhooks_service import audit_disabled
from workers.webhooks_signing import new_secret

LOOPBACK = AddressPolicy.from_specs(["127.0.0.0/8"])
FAST = DeliverySettings(
    retry=RetryPolicy((0.0, 0.05, 0.05), jitter=0.0), poll_seconds=0.02, lease_seconds=30
)


def event(n: int, kind: str = "task.created", project: str = "p1") -> LoggedEvent:
    return LoggedEvent(
        offset=n,
        id=f"b1:{n}:0",
        board_id="b1",
        project=project,
        type=kind,
        data={"board_id": "b1", "task_id": f"t{n}"},
        actor="olivia",
        at=time.time(),
    )


@dataclass
class Rig:
    store: SqliteWebhookStore
    worker: WebhookWorker
    loop: DeliveryLoop
    endpoint: Endpoint

    async def close(self) -> None:
        await self.loop.sender.close()
        await self.store.close()

    async def drain(self, rounds: int = 200) -> None:
        """Run the loop until nothing is pending (bounded)."""
        for _ in range(rounds):
            await self.loop.run_once()
            pending = [
                d
                for d in await self.store.list_deliveries(self.endpoint.id, limit=1000)
                if d.status == "pending"
            ]
            if not pending:
                return
            await asyncio.sleep(0.02)
        raise AssertionError("deliveries still pending")


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with webhook_receiver() as running:
        yield running


async def rig(
    tmp_path: Path,
    url: str,
    *,
    policy: AddressPolicy = LOOPBACK,
    settings: DeliverySettings = FAST,
    sender: SenderSettings | None = None,
    on_disabled: object = None,
    events: tuple[str, ...] = ("*",),
) -> Rig:
    store = SqliteWebhookStore(str(tmp_path / "webhooks.sqlite3"))
    endpoint = Endpoint(
        id="wh_1", project="p1", url=url, events=events, secret=new_secret(), created_at=1.0
    )
    assert await store.add_endpoint(endpoint, max_per_project=10)
    loop = DeliveryLoop(
        store,
        WebhookSender(
            policy, sender or SenderSettings(timeout_seconds=2, connect_timeout_seconds=1)
        ),
        settings,
        on_disabled=on_disabled,  # type: ignore[arg-type]
    )
    return Rig(store, WebhookWorker(store, wake=loop.wake), loop, endpoint)


async def test_a_batch_handled_twice_is_delivered_once_and_signed(
    tmp_path: Path, receiver: Receiver
) -> None:
    setup = await rig(tmp_path, receiver.url, events=("task.created",))
    receiver.secrets = [setup.endpoint.secret]
    batch = [event(1), event(2, "task.moved"), event(3), event(4, project="other")]
    await setup.worker.handle(batch)
    await setup.worker.handle(batch)  # the runtime may hand a batch over again
    await setup.drain()
    assert receiver.refused == []
    assert len(receiver.received) == 2 and len(set(receiver.ids())) == 2
    first = receiver.received[0].body
    assert first["type"] == "task.created"
    assert first["data"] == {
        "board_id": "b1",
        "project_id": "p1",
        "task_id": "t1",
        "actor": "olivia",
    }
    assert first["timestamp"].endswith("Z")
    await setup.close()


async def test_failures_are_retried_with_the_same_webhook_id_until_the_last_attempt(
    tmp_path: Path, receiver: Receiver
) -> None:
    setup = await rig(tmp_path, receiver.url)
    receiver.secrets = [setup.endpoint.secret]
    receiver.answers = [500, 503]
    await setup.worker.handle([event(1)])
    await setup.drain()
    assert len(receiver.received) == 3 and len(set(receiver.ids())) == 1
    (delivery,) = await setup.store.list_deliveries("wh_1", limit=10)
    assert delivery.status == "delivered"
    assert [a.status for a in delivery.attempts] == [500, 503, 200]
    # Three failures: the schedule ends and the delivery has failed.
    receiver.answers = [500, 500, 500]
    await setup.worker.handle([event(2)])
    await setup.drain()
    failed = [
        d for d in await setup.store.list_deliveries("wh_1", limit=10) if d.status == "failed"
    ]
    assert len(failed) == 1 and len(failed[0].attempts) == 3 and failed[0].next_attempt_at is None
    await setup.close()


async def test_410_gone_disables_the_endpoint_at_once(tmp_path: Path, receiver: Receiver) -> None:
    told: list[str] = []

    async def on_disabled(endpoint: Endpoint, reason: str) -> None:
        told.append(reason)

    setup = await rig(tmp_path, receiver.url, on_disabled=on_disabled)
    receiver.secrets = [setup.endpoint.secret]
    receiver.default_status = 410
    await setup.worker.handle([event(1), event(2)])
    await setup.drain()
    stored = await setup.store.get_endpoint("wh_1")
    assert stored is not None and not stored.enabled and "410" in str(stored.disabled_reason)
    assert told == ["the receiver answered 410 Gone"]
    statuses = sorted(d.status for d in await setup.store.list_deliveries("wh_1", limit=10))
    assert statuses in (["failed", "failed"], ["failed", "paused"])
    assert receiver.calls <= 2  # no retry after 410
    await setup.worker.handle([event(3)])  # a disabled endpoint gets nothing new
    assert len(await setup.store.list_deliveries("wh_1", limit=10)) == 2
    await setup.close()


async def test_failing_deliveries_in_a_row_disable_the_endpoint_and_are_audited(
    tmp_path: Path, receiver: Receiver
) -> None:
    settings = Settings(auth="required", data_dir=str(tmp_path), encryption="off")
    accounts = AccountStore(str(tmp_path / "accounts.sqlite3"))
    accounts.close()
    bounds = DeliverySettings(
        retry=RetryPolicy((0.0,), jitter=0.0), disable_after_failures=3, poll_seconds=0.02
    )
    setup = await rig(tmp_path, receiver.url, settings=bounds, on_disabled=audit_disabled(settings))
    receiver.secrets = [setup.endpoint.secret]
    receiver.default_status = 500
    await setup.worker.handle([event(1), event(2)])
    await setup.drain()
    assert (await setup.store.get_endpoint("wh_1")).enabled  # type: ignore[union-attr]
    await setup.worker.handle([event(3), event(4)])
    await setup.drain()
    stored = await setup.store.get_endpoint("wh_1")
    assert stored is not None and not stored.enabled
    assert "in a row" in str(stored.disabled_reason)
    accounts = AccountStore(str(tmp_path / "accounts.sqlite3"))
    try:
        entries = [entry for entry in accounts.audit_log() if entry.kind == "webhook-disabled"]
    finally:
        accounts.close()
    assert len(entries) == 1 and entries[0].detail["endpoint"] == "wh_1"
    assert entries[0].detail["project"] == "p1"
    await setup.close()


async def test_a_name_that_resolves_to_loopback_is_refused_unless_allowed(
    tmp_path: Path, receiver: Receiver
) -> None:
    named = receiver.url.replace("127.0.0.1", "localhost")
    setup = await rig(tmp_path, named, policy=AddressPolicy())
    receiver.secrets = [setup.endpoint.secret]
    await setup.worker.handle([event(1)])
    await setup.drain()
    (delivery,) = await setup.store.list_deliveries("wh_1", limit=10)
    assert delivery.status == "failed" and receiver.calls == 0
    assert all("no permitted address" in str(a.error) for a in delivery.attempts)
    await setup.close()
    allowed = await rig(tmp_path / "allowed", named, policy=LOOPBACK)
    receiver.secrets = [allowed.endpoint.secret]
    await allowed.worker.handle([event(1)])
    await allowed.drain()
    assert receiver.calls >= 1 and receiver.received
    await allowed.close()


class ScriptedResolver(AbstractResolver):
    """Answers every name with the addresses given (a DNS server that rebinds)."""

    def __init__(self, *addresses: str) -> None:
        self.addresses = addresses
        self.lookups = 0

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.lookups += 1
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=0,
            )
            for address in self.addresses
        ]

    async def close(self) -> None:
        return None


async def test_the_resolver_returns_only_permitted_addresses() -> None:
    mixed = PolicyResolver(AddressPolicy(), ScriptedResolver("93.184.216.34", "127.0.0.1", "::1"))
    assert [entry["host"] for entry in await mixed.resolve("rebind.test", 80)] == ["93.184.216.34"]
    for private in ("169.254.169.254", "10.0.0.5", "::ffff:127.0.0.1", "0.0.0.0", "fe80::1"):
        with pytest.raises(RefusedAddress):
            await PolicyResolver(AddressPolicy(), ScriptedResolver(private)).resolve("x.test")


async def test_redirects_are_not_followed(tmp_path: Path, receiver: Receiver) -> None:
    setup = await rig(tmp_path, receiver.url, settings=DeliverySettings(retry=RetryPolicy((0.0,))))
    receiver.secrets = [setup.endpoint.secret]
    receiver.redirect_to = f"http://127.0.0.1:{receiver.port}/elsewhere"
    await setup.worker.handle([event(1)])
    await setup.drain()
    assert receiver.paths == ["/hooks"]
    (delivery,) = await setup.store.list_deliveries("wh_1", limit=10)
    assert delivery.status == "failed" and delivery.attempts[0].status == 302
    await setup.close()


async def test_answers_are_read_only_up_to_the_bound_and_attempts_time_out(
    tmp_path: Path, receiver: Receiver
) -> None:
    bounds = SenderSettings(timeout_seconds=1.5, connect_timeout_seconds=1, max_response_bytes=64)
    setup = await rig(
        tmp_path, receiver.url, settings=DeliverySettings(retry=RetryPolicy((0.0,))), sender=bounds
    )
    receiver.secrets = [setup.endpoint.secret]
    receiver.endless_body = True  # reading it all would take until the timeout
    await setup.worker.handle([event(1)])
    await setup.drain()
    (delivery,) = await setup.store.list_deliveries("wh_1", limit=10)
    assert delivery.status == "delivered" and delivery.attempts[0].seconds < 1.0
    receiver.endless_body = False
    receiver.delay_seconds = 5.0
    started = time.monotonic()
    await setup.worker.handle([event(2)])
    await setup.drain()
    assert time.monotonic() - started < 4.0
    slow = [
        d for d in await setup.store.list_deliveries("wh_1", limit=10) if d.event_id == "b1:2:0"
    ]
    assert slow[0].status == "failed" and slow[0].attempts[0].error == "timed out"
    await setup.close()
