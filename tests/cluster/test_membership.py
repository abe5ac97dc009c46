"""The host membership (no Ray): who is alive, who drains, and what every watcher hears."""

from __future__ import annotations

import asyncio

from actors.directory import HostRecord, HostRegistry, Membership, rendezvous_host


class FakeClock:
    """Monotonic seconds moved by the test."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def record(name: str, port: int = 1, *, shared: bool = True) -> HostRecord:
    """A host on node ``n-<name>``."""
    return HostRecord(name, ("127.0.0.9", port), f"n-{name}", shared)


def test_placement_covers_live_shared_hosts_that_are_not_draining() -> None:
    registry = HostRegistry(timeout_seconds=2.0, clock=FakeClock())
    registry.register(record("a"))
    registry.register(record("b"))
    registry.register(record("dedicated", shared=False))
    assert registry.membership.placement() == ["a", "b"]
    registry.drain("b")
    assert registry.membership.placement() == ["a"]
    # A draining host is still a member: gateways keep reaching its open boards.
    assert registry.membership.record("b") is not None


def test_every_change_bumps_the_epoch_and_a_repeat_does_not() -> None:
    registry = HostRegistry(clock=FakeClock())
    first = registry.register(record("a")).epoch
    assert registry.register(record("a")).epoch == first
    restarted = registry.register(record("a", port=2))
    assert restarted.epoch == first + 1
    assert restarted.record("a") == record("a", port=2)
    assert registry.remove("a")
    assert not registry.remove("a")
    assert registry.membership.epoch == first + 2


def test_a_silent_host_expires_and_must_register_again() -> None:
    clock = FakeClock()
    registry = HostRegistry(timeout_seconds=2.0, clock=clock)
    registry.register(record("a"))
    registry.register(record("b"))
    clock.now += 1.5
    assert registry.heartbeat("a")
    clock.now += 1.0
    assert registry.expire() == ["b"]
    assert registry.membership.placement() == ["a"]
    assert not registry.heartbeat("b")


def test_boards_of_a_dropped_host_move_and_only_they_move() -> None:
    before = Membership(1, (record("a"), record("b"), record("c")))
    after = Membership(2, (record("a"), record("c")))
    boards = [f"board-{index}" for index in range(300)]
    for board in boards:
        owner = before.owner(board)
        if owner != "b":
            assert after.owner(board) == owner
        else:
            assert after.owner(board) in {"a", "c"}
    assert Membership(3, ()).owner("x") is None
    assert before.owner("x") == rendezvous_host("x", ["a", "b", "c"])


def test_a_restarted_directory_is_unsettled_for_one_timeout() -> None:
    clock = FakeClock()
    registry = HostRegistry(timeout_seconds=2.0, clock=clock)
    assert not registry.membership.settled
    clock.now += 2.0
    assert registry.membership.settled


async def test_watchers_hear_of_a_change_at_once_and_of_none_after_the_timeout() -> None:
    registry = HostRegistry(clock=FakeClock())
    epoch = registry.membership.epoch
    watcher = asyncio.create_task(registry.watch(epoch, timeout=30))
    await asyncio.sleep(0)
    registry.register(record("a"))
    changed = await asyncio.wait_for(watcher, 5)
    assert changed.epoch == epoch + 1 and changed.placement() == ["a"]
    unchanged = await registry.watch(changed.epoch, timeout=0.01)
    assert unchanged.epoch == changed.epoch
    # A watcher already behind gets the current membership without waiting.
    assert (await registry.watch(epoch, timeout=30)).epoch == changed.epoch
