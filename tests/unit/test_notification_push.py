"""The gateway's push hub over a memory store: fan-out by user, caps, a slow stream ended."""

from __future__ import annotations

import pytest

from gateway.notification_push import NotificationHub, PushSettings, Stream, StreamRefused
from persistence.notification_store import Notification
from persistence.notification_store_memory import MemoryNotificationStore


def note(n: int, user: str) -> Notification:
    return Notification(f"n{n}", user, "assigned", f"told {n}", float(n))


def ids(stream: Stream) -> list[str]:
    """What is queued for a stream now (taken off it)."""
    found = [stream.queue.get_nowait() for _ in range(stream.queue.qsize())]
    return [n.id if n is not None else "end" for n in found]


async def test_each_new_notification_reaches_only_its_users_streams() -> None:
    store = MemoryNotificationStore()
    await store.add([note(0, "ann")])  # before the hub started: not pushed again
    hub = NotificationHub(store, PushSettings(streams_per_user=2, streams_max=3))
    ann, ann_too, ben = hub.open("ann"), hub.open("ann"), hub.open("ben")
    assert await hub.poll_once() == 0
    await store.add([note(1, "ann"), note(2, "ben"), note(3, "cy")])
    assert await hub.poll_once() == 3
    assert [ids(ann), ids(ann_too), ids(ben)] == [["n1"], ["n1"], ["n2"]]
    with pytest.raises(StreamRefused, match="per user"):
        hub.open("ann")
    with pytest.raises(StreamRefused, match="on this gateway"):
        hub.open("dee")
    hub.close(ann)
    hub.close(ann)  # twice is once
    assert hub.open_streams == 2
    hub.open("dee")  # room again


async def test_a_stream_too_far_behind_is_ended_not_grown() -> None:
    store = MemoryNotificationStore()
    hub = NotificationHub(store, PushSettings(queue_items=3))
    await hub.poll_once()
    slow = hub.open("ann")
    await store.add([note(n, "ann") for n in range(10)])
    await hub.poll_once()
    assert slow.queue.qsize() <= 3 and slow.overflowed
    drained = [slow.queue.get_nowait() for _ in range(slow.queue.qsize())]
    assert drained[-1] is None  # the writer ends; the browser resumes with Last-Event-ID
    await hub.stop()


class CountingStore(MemoryNotificationStore):
    """The memory store, counting the notifications it hands out."""

    def __init__(self) -> None:
        super().__init__()
        self.handed = 0

    async def since(self, seq: int, *, limit: int) -> list[Notification]:
        found = await super().since(seq, limit=limit)
        self.handed += len(found)
        return found


async def test_a_hub_without_streams_reads_nothing_and_a_new_stream_misses_nothing() -> None:
    # Each notification read is opened (decrypted) on the gateway: with nobody listening
    # the hub only moves its cursor, and a stream opened after gets what follows.
    store = CountingStore()
    hub = NotificationHub(store)
    await hub.poll_once()
    await store.add([note(n, "ann") for n in range(50)])
    assert await hub.poll_once() == 0
    assert store.handed == 0
    ann = hub.open("ann")
    await store.add([note(50, "ann")])
    assert await hub.poll_once() == 1
    assert ids(ann) == ["n50"]
