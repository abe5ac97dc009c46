"""The frame stream's framing: packed once, long payloads uncopied, bytes unchanged on the wire."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import msgpack
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from actors.messages import Broadcast, Frame, Hello, Message, Persisted, Send, encode
from actors.stream import ZERO_COPY_MIN, StreamLink, pack_message
from gateway.frames import SPLIT_ABOVE, WsFrame, binary_frame, encode_binary_frame

# Lengths where a msgpack bin header or a WebSocket length field changes size.
EDGES = [0, 1, 125, 126, 255, 256, 1023, 1024, 1025, 65535, 65536, 70000]

payloads = st.one_of(
    st.binary(max_size=300),
    st.sampled_from(EDGES).map(lambda n: bytes(range(256)) * (n // 256) + bytes(n % 256)),
)
messages: st.SearchStrategy[Message] = st.one_of(
    st.builds(Frame, st.text(max_size=200), st.integers(-1, 2**53), payloads),
    st.builds(Broadcast, st.text(max_size=200), st.integers(-1, 2**53), payloads),
    st.builds(Send, st.integers(-1, 2**53), payloads),
    st.builds(Persisted, st.integers(0, 2**53), st.integers(0, 2**53)),
    st.builds(Hello, st.integers(0, 9), st.text(max_size=10)),
)


def wire(head: bytes, payload: bytes | None) -> bytes:
    return head if payload is None else head + payload


@given(messages)
@example(Broadcast("b", -1, bytes(ZERO_COPY_MIN)))
@example(Send(3, bytes(65536)))
def test_the_packed_bytes_are_the_protocols(message: Message) -> None:
    head, payload = pack_message(message)
    assert wire(head, payload) == msgpack.packb(encode(message), use_bin_type=True)
    if payload is not None:
        # A long payload is the message's own object, not a copy of it.
        assert payload is encode(message)[-1]
        assert len(payload) >= ZERO_COPY_MIN


def test_a_message_sent_to_many_links_is_packed_once() -> None:
    message = Broadcast("board", -1, bytes(4096))
    first = pack_message(message)
    again = pack_message(message)
    assert again[0] is first[0] and again[1] is first[1]
    # An equal but distinct message is packed afresh (nothing is matched by value).
    other = Broadcast("board", -1, bytes(4096))
    assert pack_message(other)[0] is not first[0]


@given(st.sampled_from(EDGES))
def test_a_split_websocket_frame_is_the_whole_frame(length: int) -> None:
    payload = bytes(length)
    frame: WsFrame = binary_frame(payload)
    if isinstance(frame, bytes):
        assert length < SPLIT_ABOVE
        joined = frame
    else:
        assert frame[1] is payload
        joined = frame[0] + frame[1]
    assert joined == encode_binary_frame(payload)


@contextlib.asynccontextmanager
async def link_pair() -> AsyncIterator[tuple[StreamLink, StreamLink]]:
    accepted: asyncio.Future[StreamLink] = asyncio.get_running_loop().create_future()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set_result(StreamLink(reader, writer))

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    near = StreamLink(reader, writer)
    far = await asyncio.wait_for(accepted, 5)
    try:
        yield near, far
    finally:
        near.abort()
        far.abort()
        server.close()
        await server.wait_closed()


async def receive(link: StreamLink, count: int) -> list[Message]:
    got: list[Message] = []
    async with asyncio.timeout(10):
        while len(got) < count:
            batch = await link.read_batches()
            assert batch is not None, "the link closed early"
            got.extend(batch)
    return got


@pytest.mark.parametrize("sizes", [[10, 20, 30], [5000, 10, 70000, 3, 2000], [1024] * 50])
async def test_short_and_long_payloads_arrive_whole_and_in_order(sizes: list[int]) -> None:
    sent = [
        Broadcast("board-" + "x" * 150, i, bytes([i % 251]) * size) for i, size in enumerate(sizes)
    ]
    async with link_pair() as (near, far):
        for message in sent:
            near.send(message)
        near.send(Persisted(7, 9))
        assert await receive(far, len(sent) + 1) == [*sent, Persisted(7, 9)]


async def test_one_broadcast_reaches_every_link() -> None:
    message = Broadcast("board", -1, bytes(range(256)) * 40)
    async with link_pair() as (a_near, a_far), link_pair() as (b_near, b_far):
        a_near.send(message)
        b_near.send(message)
        assert await receive(a_far, 1) == [message]
        assert await receive(b_far, 1) == [message]
