"""y-protocol frames: byte-exact with what Yjs clients send, and bad frames named precisely.

The hex frames below were written once by yjs 13.6.33, y-protocols 1.0.7 and lib0 0.2.120
(the versions under tests/interop/js): a ``Y.Doc`` with ``clientID = 1`` that typed "hi" into
``getText("t")``, framed with ``sync.writeSyncStep1`` / ``writeSyncStep2`` / ``writeUpdate``,
``awareness.encodeAwarenessUpdate`` and ``auth.writePermissionDenied``, each after the outer
message type as y-websocket writes it.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pycrdt import Doc, Text

from crdt.awareness import AwarenessEntry, decode_awareness
from crdt.errors import ProtocolError, TruncatedMessage, UnknownMessageType
from crdt.protocol import (
    AwarenessUpdate,
    Message,
    PermissionDenied,
    Persisted,
    QueryAwareness,
    SyncStep1,
    SyncStep2,
    SyncUpdate,
    awareness_frame,
    decode_frame,
    encode_message,
    iter_frame,
    sync_step1,
    sync_step2,
    sync_update,
)

EMPTY_DOC_STEP1 = "00000100"
HI_UPDATE = "010101000401017402686900"
HI_UPDATE_FRAME = "00020c" + HI_UPDATE
HI_STEP2_FOR_EMPTY_PEER = "00010c" + HI_UPDATE
HI_STEP1 = "000003010102"
# State {"user": {"name": "Zoë 🦊"}} of client 1 at clock 1: the JSON is 25 code points and
# 29 (0x1d) UTF-8 bytes; the whole awareness update is 33 (0x21) bytes.
AWARENESS_FRAME = "01210101011d7b2275736572223a7b226e616d65223a225a6fc3ab20f09fa68a227d7d"
AWARENESS_REMOVAL_FRAME = "0108010102046e756c6c"
PERMISSION_DENIED_FRAME = "02000a6e6f20656e7472c3a965"
QUERY_AWARENESS_FRAME = "03"


def frame(hex_text: str) -> bytes:
    return bytes.fromhex(hex_text)


def test_empty_document_step1() -> None:
    assert sync_step1(Doc().get_state()) == frame(EMPTY_DOC_STEP1)
    assert decode_frame(frame(EMPTY_DOC_STEP1)) == [SyncStep1(b"\x00")]


def test_step1_of_a_document_with_content() -> None:
    assert decode_frame(frame(HI_STEP1)) == [SyncStep1(bytes.fromhex("010102"))]
    assert sync_step1(bytes.fromhex("010102")) == frame(HI_STEP1)


def test_update_frame_from_yjs_carries_an_update_pycrdt_applies() -> None:
    [message] = decode_frame(frame(HI_UPDATE_FRAME))
    assert message == SyncUpdate(bytes.fromhex(HI_UPDATE))
    doc: Doc[Any] = Doc()
    doc.apply_update(message.update)
    assert str(doc.get("t", type=Text)) == "hi"
    assert sync_update(message.update) == frame(HI_UPDATE_FRAME)


def test_step2_frame_from_yjs() -> None:
    assert decode_frame(frame(HI_STEP2_FOR_EMPTY_PEER)) == [SyncStep2(bytes.fromhex(HI_UPDATE))]
    assert sync_step2(bytes.fromhex(HI_UPDATE)) == frame(HI_STEP2_FOR_EMPTY_PEER)


def test_awareness_frame_with_non_ascii_state() -> None:
    [message] = decode_frame(frame(AWARENESS_FRAME))
    assert isinstance(message, AwarenessUpdate)
    state = '{"user":{"name":"Zoë 🦊"}}'
    assert decode_awareness(message.payload) == [AwarenessEntry(1, 1, state)]
    assert awareness_frame(message.payload) == frame(AWARENESS_FRAME)


def test_awareness_removal_frame_from_yjs() -> None:
    [message] = decode_frame(frame(AWARENESS_REMOVAL_FRAME))
    assert isinstance(message, AwarenessUpdate)
    assert decode_awareness(message.payload) == [AwarenessEntry(1, 2, "null")]


def test_permission_denied_frame() -> None:
    assert decode_frame(frame(PERMISSION_DENIED_FRAME)) == [PermissionDenied("no entrée")]
    assert encode_message(PermissionDenied("no entrée")) == frame(PERMISSION_DENIED_FRAME)


def test_query_awareness_frame() -> None:
    assert decode_frame(frame(QUERY_AWARENESS_FRAME)) == [QueryAwareness()]
    assert encode_message(QueryAwareness()) == frame(QUERY_AWARENESS_FRAME)


def test_persisted_extension_frame() -> None:
    assert encode_message(Persisted(300)).hex() == "64ac02"
    assert decode_frame(frame("64ac02")) == [Persisted(300)]


def test_several_messages_in_one_frame_come_out_in_order() -> None:
    data = frame(EMPTY_DOC_STEP1 + AWARENESS_FRAME + HI_UPDATE_FRAME + QUERY_AWARENESS_FRAME)
    messages = decode_frame(data)
    assert [type(m) for m in messages] == [SyncStep1, AwarenessUpdate, SyncUpdate, QueryAwareness]
    assert messages[2] == SyncUpdate(bytes.fromhex(HI_UPDATE))


def test_messages_before_a_bad_one_can_be_used() -> None:
    messages = iter_frame(frame(HI_UPDATE_FRAME + "07"))
    assert next(messages) == SyncUpdate(bytes.fromhex(HI_UPDATE))
    with pytest.raises(UnknownMessageType):
        next(messages)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        pytest.param("", ProtocolError, id="empty frame"),
        pytest.param("80", TruncatedMessage, id="outer type cut short"),
        pytest.param("0000ff", TruncatedMessage, id="payload length cut short"),
        pytest.param("00000501", TruncatedMessage, id="payload past the end"),
        pytest.param("0002", TruncatedMessage, id="update without payload"),
        pytest.param("01", TruncatedMessage, id="awareness without payload"),
        pytest.param("0200", TruncatedMessage, id="permission denied without reason"),
        pytest.param("64", TruncatedMessage, id="persisted without seq"),
        pytest.param("04", UnknownMessageType, id="unknown outer type"),
        pytest.param("8001", UnknownMessageType, id="unknown two-byte outer type"),
        pytest.param("000300", UnknownMessageType, id="unknown sync step"),
        pytest.param("020100", UnknownMessageType, id="unknown auth message"),
        pytest.param("020002c328", ProtocolError, id="reason not UTF-8"),
        pytest.param(EMPTY_DOC_STEP1 + "0000", TruncatedMessage, id="good message, then cut"),
    ],
)
def test_bad_frames_raise_the_named_error(data: str, error: type[ProtocolError]) -> None:
    with pytest.raises(ProtocolError) as caught:
        decode_frame(frame(data))
    assert type(caught.value) is error


def messages() -> st.SearchStrategy[Message]:
    payload = st.binary(max_size=300)
    return st.one_of(
        st.builds(SyncStep1, payload),
        st.builds(SyncStep2, payload),
        st.builds(SyncUpdate, payload),
        st.builds(AwarenessUpdate, payload),
        st.just(QueryAwareness()),
        st.builds(PermissionDenied, st.text(max_size=50)),
        st.builds(Persisted, st.integers(min_value=0, max_value=2**53)),
    )


@given(st.lists(messages(), min_size=1, max_size=8))
def test_any_sequence_of_messages_round_trips_through_one_frame(sent: list[Message]) -> None:
    data = b"".join(encode_message(message) for message in sent)
    assert decode_frame(data) == sent


@given(messages(), st.data())
def test_every_proper_prefix_of_a_message_is_refused(message: Message, data: st.DataObject) -> None:
    encoded = encode_message(message)
    cut = data.draw(st.integers(min_value=0, max_value=len(encoded) - 1))
    with pytest.raises(ProtocolError):
        decode_frame(encoded[:cut])
