"""Control links: a board host without a Ray actor answers the cluster over its frame stream.

A real :class:`BoardHost` (memory store) is wrapped by the same ``HostActor`` a
gateway runs its in-process hosts with, and called through :class:`ControlHandle`
over a real loopback stream with the real handshake.
"""

from __future__ import annotations

import asyncio
import operator
import pickle
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

import pytest

from actors.control import MAX_CALLS_IN_FLIGHT, ControlHandle, InProcessHandle
from actors.handshake import HandshakeRefused
from actors.host import BoardHost, HostSettings
from actors.messages import PROTOCOL_VERSION, Answer, Call, Frame, Hello
from actors.ray_backend import HostActor
from actors.stream import open_stream
from crdt.board import Board
from crdt.errors import TransactionFailed
from persistence.memory import MemoryStore

SECRET = b"s" * 32


def add_card(board: Board, title: str) -> str:
    if "todo" not in {column.id for column in board.columns()}:
        board.add_column("To do", column_id="todo")
    return board.add_task(title, "todo")


def titles(board: Board) -> list[str]:
    return sorted(task.title for task in board.tasks())


def broken(board: Board) -> None:
    board.add_task("never stored", "no-such-column")


def in_gateway_host(name: str, data_dir: Path) -> HostActor:
    settings = HostSettings(cluster_secret=SECRET, drain_seconds=0.5)
    return HostActor(name, "memory", str(data_dir), settings, None, True, None, True)


@pytest.fixture
async def actor(tmp_path: Path) -> AsyncIterator[HostActor]:
    host = in_gateway_host("in-gateway-0", tmp_path)
    await host.endpoint()
    yield host
    await host.stop()


@pytest.fixture
async def handle(actor: HostActor) -> AsyncIterator[ControlHandle]:
    control = ControlHandle(await actor.endpoint(), SECRET)
    yield control
    await control.close()


async def test_what_a_control_link_runs_is_what_the_host_holds(
    actor: HostActor, handle: ControlHandle
) -> None:
    first = await handle.run.remote("b1", partial(add_card, title="one"), "k1", "ann")
    assert first.applied and isinstance(first.value, str)
    # The same idempotency key again: answered, not applied twice.
    again = await handle.run.remote("b1", partial(add_card, title="one"), "k1", "ann")
    assert not again.applied and again.version == first.version
    version = await handle.transact.remote("b1", partial(add_card, title="two"), None)
    assert version > first.version
    renamed = operator.methodcaller("rename_column", "todo", "Backlog")
    await handle.transact.remote("b1", renamed, None)
    # Read in the host's own process, without the link: the link's writes are there.
    read = await InProcessHandle(actor).run.remote("b1", titles, None, None)
    assert read.value == ["one", "two"]
    columns = await handle.run.remote("b1", operator.methodcaller("columns"), None, None)
    assert [column.name for column in columns.value] == ["Backlog"]
    stats = await handle.stats.remote()
    assert stats["board_ids"] == ["b1"] and stats["endpoint"] == list(handle.endpoint)


async def test_a_failing_change_raises_its_own_error_and_the_link_goes_on(
    handle: ControlHandle,
) -> None:
    with pytest.raises(TransactionFailed):
        await handle.transact.remote("b3", broken, None)
    with pytest.raises(AttributeError, match="not a control method"):
        await handle.stop.remote()
    # Neither failure cost the link, and ``stop`` did not run: the host still answers.
    assert (await handle.run.remote("b3", titles, None, None)).value == []


async def test_a_peer_without_the_secret_gets_no_control_link(actor: HostActor) -> None:
    handle = ControlHandle(await actor.endpoint(), b"w" * 32, connect_timeout=2)
    with pytest.raises(HandshakeRefused):
        await handle.stats.remote()


async def test_a_host_with_no_control_target_refuses_control_links() -> None:
    # A Ray-actor host: its control calls go through Ray, so it takes no control link.
    host = BoardHost("actor-backed", MemoryStore(), HostSettings(cluster_secret=SECRET))
    handle = ControlHandle(await host.start(), SECRET)
    try:
        with pytest.raises(ConnectionError):
            await asyncio.wait_for(handle.stats.remote(), 10)
    finally:
        await handle.close()
        await host.stop()


async def test_more_calls_than_the_bound_drop_only_that_link(actor: HostActor) -> None:
    address, port = await actor.endpoint()
    flood = await open_stream(address, port, secret=SECRET)
    flood.send(Hello(PROTOCOL_VERSION, "control"))
    # Loads of boards that are held back by the host's load slots take a while: more
    # calls than the bound, sent in one go, are more than the bound in flight.
    call = pickle.dumps(("flooded", titles, None, None))
    for call_id in range(MAX_CALLS_IN_FLIGHT + 1):
        flood.send(Call(call_id, "run", call))
    closed = False
    async with asyncio.timeout(10):
        while (batch := await flood.read_batches()) is not None:
            assert all(isinstance(m, Hello | Answer) for m in batch)
        closed = True
    assert closed
    # The host serves everyone else.
    other = ControlHandle((address, port), SECRET)
    try:
        assert (await other.run.remote("b4", titles, None, None)).value == []
    finally:
        await other.close()


async def test_a_board_frame_on_a_control_link_drops_the_link(actor: HostActor) -> None:
    address, port = await actor.endpoint()
    link = await open_stream(address, port, secret=SECRET)
    link.send(Hello(PROTOCOL_VERSION, "control"))
    link.send(Frame("b5", 1, b"\x00\x00\x01\x00"))
    async with asyncio.timeout(10):
        while (batch := await link.read_batches()) is not None:
            assert batch == [Hello(PROTOCOL_VERSION, "host")]
    assert "b5" not in actor._board_ids()


async def test_calls_fail_with_a_connection_error_once_the_host_is_gone(tmp_path: Path) -> None:
    host = in_gateway_host("in-gateway-1", tmp_path)
    handle = ControlHandle(await host.endpoint(), SECRET, connect_timeout=2)
    try:
        assert (await handle.stats.remote())["board_ids"] == []
        await host.stop()
        with pytest.raises((ConnectionError, OSError)):
            await asyncio.wait_for(handle.stats.remote(), 10)
    finally:
        await handle.close()


async def test_calls_up_to_the_bound_are_all_answered(actor: HostActor) -> None:
    # The other side of the bound above: exactly as many calls keep the link.
    address, port = await actor.endpoint()
    link = await open_stream(address, port, secret=SECRET)
    link.send(Hello(PROTOCOL_VERSION, "control"))
    call = pickle.dumps(("flooded", titles, None, None))
    for call_id in range(MAX_CALLS_IN_FLIGHT):
        link.send(Call(call_id, "run", call))
    answered: set[int] = set()
    async with asyncio.timeout(10):
        while len(answered) < MAX_CALLS_IN_FLIGHT:
            batch = await link.read_batches()
            assert batch is not None, "the link was dropped"
            answered |= {m.call_id for m in batch if isinstance(m, Answer) and m.ok}
    assert answered == set(range(MAX_CALLS_IN_FLIGHT))
    await link.close()
