"""The frame stream's typed messages: one layout, checked on the way in."""

from __future__ import annotations

import asyncio
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.host import BoardHost, HostSettings
from actors.messages import (
    PROTOCOL_VERSION,
    Answer,
    Broadcast,
    Call,
    Close,
    Frame,
    Hello,
    Message,
    Open,
    Persisted,
    Reject,
    Send,
    StreamProtocolError,
    decode,
    encode,
    from_gateway,
    from_host,
    reject,
)
from actors.stream import open_stream
from crdt.close_codes import CloseCode
from persistence.memory import MemoryStore
from tests.conftest import wait_until

texts = st.text(max_size=50)
ints = st.integers(min_value=-1, max_value=2**53)
blobs = st.binary(max_size=200)

messages: st.SearchStrategy[Message] = st.one_of(
    st.builds(Hello, ints, texts),
    st.builds(Open, texts, ints, st.booleans(), st.booleans()),
    st.builds(Frame, texts, ints, blobs),
    st.builds(Close, texts, ints),
    st.builds(Send, ints, blobs),
    st.builds(Broadcast, texts, ints, blobs),
    st.builds(Reject, ints, ints, texts),
    st.builds(Persisted, ints, ints),
    st.builds(Call, ints, texts, blobs),
    st.builds(Answer, ints, st.booleans(), blobs),
)


@given(messages)
def test_every_message_survives_the_wire(message: Message) -> None:
    wire = msgpack.packb(encode(message), use_bin_type=True)
    assert decode(msgpack.unpackb(wire, raw=False)) == message


values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5) | st.binary(max_size=5),
    lambda inner: st.lists(inner, max_size=5),
    max_leaves=12,
)


@given(st.lists(values, max_size=6) | values)
def test_anything_else_is_a_stream_protocol_error(raw: Any) -> None:
    try:
        message = decode(raw)
    except StreamProtocolError:
        return
    # Whatever decodes is a well-typed message that encodes back to the same array.
    assert decode(encode(message)) == message


def test_protocol_0_opens_without_the_ack_flag() -> None:
    assert decode([1, "board", 7]) == Open("board", 7, False, False)
    assert decode([1, "board", 7, True]) == Open("board", 7, True, False)


def test_direction_is_checked() -> None:
    assert from_gateway(Open("b", 1)) == Open("b", 1)
    assert from_host(Send(1, b"x")) == Send(1, b"x")
    with pytest.raises(StreamProtocolError):
        from_gateway(Send(1, b"x"))
    with pytest.raises(StreamProtocolError):
        from_host(Frame("b", 1, b"x"))
    # Control messages travel on control links only, never on a board link.
    with pytest.raises(StreamProtocolError):
        from_gateway(Call(1, "stats", b""))
    with pytest.raises(StreamProtocolError):
        from_host(Answer(1, True, b""))


def test_a_rejection_carries_the_codes_reason_and_fits_a_close_frame() -> None:
    assert reject(3, CloseCode.SLOW_CONSUMER) == Reject(
        3, 4408, "send queue overflow, reconnect to resync"
    )
    assert len(reject(3, CloseCode.INVALID_UPDATE, "x" * 500).reason) == 120


async def test_the_host_answers_a_hello_and_drops_a_link_that_speaks_out_of_turn() -> None:
    host = BoardHost("host-messages", MemoryStore(), HostSettings(drain_seconds=0.5))
    address, port = await host.start()
    try:
        link = await open_stream(address, port, secret=host.settings.cluster_secret or b"")
        link.send(Hello(PROTOCOL_VERSION, "gateway"))
        batch = await asyncio.wait_for(link.read_batches(), 10)
        assert batch == [Hello(PROTOCOL_VERSION, "host")]
        # A host's message from a gateway is not part of the protocol: the link goes.
        link.send(Send(1, b"\x00"))
        assert await asyncio.wait_for(link.read_batches(), 10) is None
        await link.close()
        await wait_until(lambda: host.stats()["gateways"] == 0, message="link dropped")
    finally:
        await host.stop()
