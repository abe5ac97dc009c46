"""In-process links (actors/memory_link.py): a stream's order, batching, ends and bounds."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from actors import memory_link
from actors.memory_link import MemoryLink, pair
from actors.messages import Broadcast, Frame, Message, Persisted
from actors.stream import DRAIN_ABOVE


async def test_what_is_sent_in_one_tick_is_one_batch_in_order_and_not_copied() -> None:
    gateway, host = pair()
    sent = [Frame("b", 1, b"one"), Frame("b", 2, b"two"), Frame("b", 1, b"three")]
    for message in sent:
        gateway.send(message)
    batch = await host.read_batches()
    assert batch == sent
    assert all(got is original for got, original in zip(batch or [], sent, strict=True))
    host.send(Persisted(1, 2))
    assert await gateway.read_batches() == [Persisted(1, 2)]


async def test_a_reader_waits_for_the_next_message() -> None:
    gateway, host = pair()
    reading = asyncio.ensure_future(host.read_batches())
    await asyncio.sleep(0)
    assert not reading.done()
    gateway.send(Frame("b", 1, b"x"))
    assert await asyncio.wait_for(reading, 1) == [Frame("b", 1, b"x")]


async def test_close_lets_the_peer_read_everything_sent_then_ends() -> None:
    gateway, host = pair()
    gateway.send(Frame("b", 1, b"last words"))
    await gateway.close()
    assert gateway.closed
    assert await host.read_batches() == [Frame("b", 1, b"last words")]
    assert await host.read_batches() is None
    host.send(Persisted(1, 1))  # to a closed end: dropped, no error
    assert await gateway.read_batches() is None


async def test_abort_wakes_a_waiting_reader_on_both_ends() -> None:
    gateway, host = pair()
    waiting_host = asyncio.ensure_future(host.read_batches())
    waiting_gateway = asyncio.ensure_future(gateway.read_batches())
    await asyncio.sleep(0)
    gateway.abort()
    assert await asyncio.wait_for(waiting_host, 1) is None
    assert await asyncio.wait_for(waiting_gateway, 1) is None


async def test_a_slow_reader_holds_back_every_sender_until_it_reads() -> None:
    host, gateway = pair()
    big = b"\0" * (DRAIN_ABOVE // 4)
    for _ in range(5):
        host.send(Broadcast("b", -1, big))
    assert host.needs_drain()
    drains = [asyncio.ensure_future(host.drain()) for _ in range(3)]
    await asyncio.sleep(0.01)
    assert not any(drain.done() for drain in drains)
    batch = await gateway.read_batches()
    assert batch is not None and len(batch) == 5
    await asyncio.wait_for(asyncio.gather(*drains), 1)
    assert not host.needs_drain()


async def test_a_reader_past_the_bound_loses_the_link_and_what_it_had_not_read() -> None:
    host, gateway = pair(max_buffered=1000)
    host.send(Broadcast("b", -1, b"x" * 600))
    assert not host.closed
    host.send(Broadcast("b", -1, b"x" * 600))
    assert host.closed
    assert await gateway.read_batches() is None


async def test_a_check_that_catches_a_link_that_loses_a_message() -> None:
    # The property below, run against a link that drops one message, fails.
    original = MemoryLink.send

    def lossy(self: MemoryLink, message: Message) -> None:
        if isinstance(message, Frame) and message.data == b"lost":
            return
        original(self, message)

    MemoryLink.send = lossy  # type: ignore[method-assign]
    try:
        sent = [Frame("b", 1, b"kept"), Frame("b", 1, b"lost"), Frame("b", 1, b"kept too")]
        received = await _run(Script((*(("send", m) for m in sent), ("close", None))))
    finally:
        MemoryLink.send = original  # type: ignore[method-assign]
    assert received != sent


@dataclass(frozen=True)
class Script:
    """Steps for the sending end: ``send`` a message, ``tick`` (let the reader run), ``close``."""

    steps: tuple[tuple[str, Frame | None], ...]


async def _run(script: Script) -> list[Message]:
    gateway, host = pair()
    received: list[Message] = []

    async def read() -> None:
        while (batch := await host.read_batches()) is not None:
            received.extend(batch)

    reader = asyncio.ensure_future(read())
    for step, message in script.steps:
        if step == "send" and message is not None:
            gateway.send(message)
        elif step == "tick":
            await asyncio.sleep(0)
        elif step == "close":
            await gateway.close()
    await gateway.close()
    await asyncio.wait_for(reader, 1)
    return received


_frames = st.builds(Frame, st.text(max_size=8), st.integers(0, 5), st.binary(max_size=64))
_steps = st.lists(
    st.one_of(
        st.tuples(st.just("send"), _frames),
        st.tuples(st.just("tick"), st.none()),
    ),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(_steps)
def test_everything_sent_before_close_arrives_once_in_order(
    steps: list[tuple[str, Frame | None]],
) -> None:
    sent = [message for step, message in steps if step == "send" and message is not None]
    received = asyncio.run(_run(Script((*steps, ("close", None)))))
    assert received == sent


async def test_dial_finds_a_host_of_this_loop_only() -> None:
    endpoint = ("127.0.0.1", 1)
    accepted: list[MemoryLink] = []

    def accept(name: str) -> MemoryLink:
        end = MemoryLink(name=name)
        accepted.append(end)
        return end

    assert memory_link.dial(endpoint) is None
    memory_link.listen(endpoint, accept)
    try:
        near = memory_link.dial(endpoint, name="a gateway")
        assert near is not None and accepted[0].peer == "a gateway"
        near.send(Persisted(1, 1))
        assert await accepted[0].read_batches() == [Persisted(1, 1)]

        # Another event loop (another thread) must use the socket: no shared memory link.
        from_other_loop: list[MemoryLink | None] = []

        def other() -> None:
            async def dial() -> None:
                from_other_loop.append(memory_link.dial(endpoint))

            asyncio.run(dial())

        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
        assert from_other_loop == [None]
        assert len(accepted) == 1
    finally:
        memory_link.unlisten(endpoint, accept)
    assert memory_link.dial(endpoint) is None


async def test_a_host_that_refuses_leaves_the_dialler_to_the_socket() -> None:
    endpoint = ("127.0.0.1", 2)
    memory_link.listen(endpoint, lambda name: None)
    try:
        assert memory_link.dial(endpoint) is None
    finally:
        memory_link.unlisten(endpoint)


async def test_unlisten_by_a_stale_host_keeps_the_new_listener() -> None:
    endpoint = ("127.0.0.1", 3)

    def old(name: str) -> MemoryLink:
        return MemoryLink(name=name)

    def new(name: str) -> MemoryLink:
        return MemoryLink(name=name)

    memory_link.listen(endpoint, old)
    memory_link.listen(endpoint, new)
    memory_link.unlisten(endpoint, old)
    try:
        assert memory_link.dial(endpoint) is not None
    finally:
        memory_link.unlisten(endpoint, new)
