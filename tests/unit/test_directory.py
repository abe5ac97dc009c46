"""The directory: every gateway agrees where a board lives, and dedicated hosts start once."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from actors.directory import Directory, dedicated_host_name, rendezvous_host

HOSTS = [f"bc-host-{index}" for index in range(4)]
BOARDS = [f"board-{index}" for index in range(2000)]


def test_placement_is_a_pure_function_of_board_and_host_set() -> None:
    for board_id in BOARDS[:200]:
        answer = rendezvous_host(board_id, HOSTS)
        assert answer in HOSTS
        assert rendezvous_host(board_id, reversed(HOSTS)) == answer
        assert rendezvous_host(board_id, HOSTS + HOSTS) == answer


async def test_directories_built_separately_agree() -> None:
    first, second = Directory(HOSTS), Directory(reversed(HOSTS))
    for board_id in BOARDS[:200]:
        assert await first.locate(board_id) == await second.locate(board_id)


def test_boards_spread_across_hosts() -> None:
    counts = Counter(rendezvous_host(board_id, HOSTS) for board_id in BOARDS)
    assert set(counts) == set(HOSTS)
    # 500 expected per host; the binomial standard deviation is about 19.
    assert all(400 <= count <= 600 for count in counts.values()), counts


def test_adding_a_host_only_moves_boards_onto_it() -> None:
    grown = [*HOSTS, "bc-host-4"]
    moved = 0
    for board_id in BOARDS:
        before, after = rendezvous_host(board_id, HOSTS), rendezvous_host(board_id, grown)
        if before != after:
            assert after == "bc-host-4"
            moved += 1
    # About a fifth of the boards move to the new host, no more.
    assert 300 <= moved <= 500, moved


def test_removing_a_host_only_moves_its_own_boards() -> None:
    shrunk = HOSTS[1:]
    for board_id in BOARDS:
        before = rendezvous_host(board_id, HOSTS)
        if before != HOSTS[0]:
            assert rendezvous_host(board_id, shrunk) == before


def test_no_hosts_is_an_error() -> None:
    with pytest.raises(LookupError):
        rendezvous_host("board-1", [])


class HostFactory:
    """Counts dedicated host creations; fails the first ``failures`` of them."""

    def __init__(self, *, failures: int = 0) -> None:
        self.calls: list[str] = []
        self.failures = failures
        self.release = asyncio.Event()
        self.release.set()

    async def __call__(self, name: str) -> None:
        self.calls.append(name)
        # Yield so that concurrent callers really overlap with the creation.
        await self.release.wait()
        await asyncio.sleep(0)
        if len(self.calls) <= self.failures:
            raise RuntimeError("no resources for the host")


async def test_shared_boards_never_create_hosts() -> None:
    factory = HostFactory()
    directory = Directory(HOSTS, dedicated=["hot"], create_dedicated_host=factory)
    assert await directory.locate("cold") == rendezvous_host("cold", HOSTS)
    assert factory.calls == []


async def test_concurrent_first_opens_create_the_dedicated_host_once() -> None:
    factory = HostFactory()
    factory.release.clear()
    directory = Directory(
        HOSTS, cluster_name="bc", dedicated=["hot"], create_dedicated_host=factory
    )
    opens = asyncio.gather(*(directory.locate("hot") for _ in range(50)))
    await asyncio.sleep(0)
    factory.release.set()
    names = await opens
    assert set(names) == {dedicated_host_name("bc", "hot")}
    assert factory.calls == ["bc-board-hot"]
    # Later opens reuse it.
    assert await directory.locate("hot") == "bc-board-hot"
    assert factory.calls == ["bc-board-hot"]


async def test_a_failed_creation_fails_every_waiter_and_is_retried_next_time() -> None:
    factory = HostFactory(failures=1)
    directory = Directory(
        HOSTS, cluster_name="bc", dedicated=["hot"], create_dedicated_host=factory
    )
    results = await asyncio.gather(
        *(directory.locate("hot") for _ in range(10)), return_exceptions=True
    )
    assert all(isinstance(result, RuntimeError) for result in results)
    assert len(factory.calls) == 1
    assert await directory.locate("hot") == "bc-board-hot"
    assert len(factory.calls) == 2


async def test_callers_retrying_after_a_failure_share_one_new_attempt() -> None:
    factory = HostFactory(failures=1)
    directory = Directory(
        HOSTS, cluster_name="bc", dedicated=["hot"], create_dedicated_host=factory
    )

    async def open_with_one_retry() -> str:
        try:
            return await directory.locate("hot")
        except RuntimeError:
            return await directory.locate("hot")

    names = await asyncio.gather(*(open_with_one_retry() for _ in range(10)))
    assert set(names) == {"bc-board-hot"}
    # One failed attempt and one shared retry, not one retry per caller.
    assert len(factory.calls) == 2


async def test_a_cancelled_caller_does_not_cancel_the_creation() -> None:
    factory = HostFactory()
    factory.release.clear()
    directory = Directory(
        HOSTS, cluster_name="bc", dedicated=["hot"], create_dedicated_host=factory
    )
    impatient = asyncio.ensure_future(directory.locate("hot"))
    patient = asyncio.ensure_future(directory.locate("hot"))
    await asyncio.sleep(0)
    impatient.cancel()
    factory.release.set()
    assert await patient == "bc-board-hot"
    assert factory.calls == ["bc-board-hot"]
    with pytest.raises(asyncio.CancelledError):
        await impatient
