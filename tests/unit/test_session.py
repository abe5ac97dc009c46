"""The client protocol fed with frames, no sockets: what it sends back and what it keeps."""

from __future__ import annotations

import json
from typing import Any

import pycrdt
import pytest

from clients.provider import socket_url
from crdt.awareness import AwarenessEntry, decode_awareness, encode_awareness
from crdt.errors import InvalidUpdate, ProtocolError
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
    sync_step1,
    sync_step2,
    sync_update,
)
from crdt.session import ClientProtocol


class Peer:
    """A protocol with a fresh document, recording the frames it sends."""

    def __init__(self) -> None:
        self.doc: pycrdt.Doc[Any] = pycrdt.Doc()
        self.sent: list[bytes] = []
        self.protocol = ClientProtocol(self.doc, self.sent.append)

    def messages(self) -> list[Message]:
        out = [m for frame in self.sent for m in decode_frame(frame)]
        self.sent.clear()
        return out


def server_doc_with(**tasks: str) -> pycrdt.Doc[Any]:
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    board = doc.get("tasks", type=pycrdt.Map)
    for key, value in tasks.items():
        board[key] = value
    return doc


def tasks_of(doc: pycrdt.Doc[Any]) -> dict[str, str]:
    return dict(doc.get("tasks", type=pycrdt.Map))


def awareness_of(client_id: int, clock: int, state: object) -> bytes:
    return awareness_frame(encode_awareness([AwarenessEntry(client_id, clock, json.dumps(state))]))


def sent_awareness(messages: list[Message]) -> list[AwarenessEntry]:
    return [
        e for m in messages if isinstance(m, AwarenessUpdate) for e in decode_awareness(m.payload)
    ]


def test_start_sends_state_vector_and_known_awareness() -> None:
    peer = Peer()
    peer.doc.get("tasks", type=pycrdt.Map)["a"] = "offline"
    peer.protocol.set_awareness({"user": "ann"})
    peer.protocol.start()
    messages = peer.messages()
    assert messages[0] == SyncStep1(peer.doc.get_state())
    [entry] = sent_awareness(messages)
    assert (entry.client_id, json.loads(entry.state)) == (peer.doc.client_id, {"user": "ann"})


def test_server_step1_is_answered_with_the_missing_edits() -> None:
    peer = Peer()
    peer.doc.get("tasks", type=pycrdt.Map)["a"] = "written offline"
    peer.protocol.start()
    peer.messages()
    server = server_doc_with()
    peer.protocol.receive(sync_step1(server.get_state()))
    [reply] = peer.messages()
    assert isinstance(reply, SyncStep2)
    server.apply_update(reply.update)
    assert tasks_of(server) == {"a": "written offline"}


def test_step2_syncs_and_remote_edits_are_not_sent_back() -> None:
    peer = Peer()
    peer.protocol.start()
    peer.messages()
    server = server_doc_with(a="from server")
    peer.protocol.receive(sync_step2(server.get_update()))
    assert peer.protocol.synced
    server.get("tasks", type=pycrdt.Map)["b"] = "later"
    peer.protocol.receive(sync_update(server.get_update(peer.doc.get_state())))
    assert tasks_of(peer.doc) == {"a": "from server", "b": "later"}
    assert peer.messages() == []


def test_local_edits_are_sent_as_updates_only_while_active() -> None:
    peer = Peer()
    board = peer.doc.get("tasks", type=pycrdt.Map)
    board["before"] = "not sent"
    assert peer.sent == []
    peer.protocol.start()
    peer.messages()
    board["during"] = "sent"
    [update] = peer.messages()
    assert isinstance(update, SyncUpdate)
    other: pycrdt.Doc[Any] = pycrdt.Doc()
    other.apply_update(update.update)
    assert "during" in tasks_of(other)
    peer.protocol.stop()
    board["after"] = "not sent"
    assert peer.sent == []


def test_several_messages_in_one_frame_are_handled_in_order() -> None:
    peer = Peer()
    peer.protocol.start()
    peer.messages()
    server = server_doc_with(a="1")
    first = server.get_update()
    known = server.get_state()
    server.get("tasks", type=pycrdt.Map)["a"] = "2"
    second = server.get_update(known)
    frame = (
        sync_step2(first)
        + sync_update(second)
        + sync_step1(server.get_state())
        + awareness_of(7, 1, {"user": "bo"})
        + encode_message(Persisted(4))
    )
    peer.protocol.receive(frame)
    assert tasks_of(peer.doc) == {"a": "2"}
    assert peer.protocol.synced
    assert peer.protocol.awareness_states == {7: {"user": "bo"}}
    assert peer.protocol.persisted_seq == 4
    assert [type(m) for m in peer.messages()] == [SyncStep2]


def test_persisted_seq_never_goes_back() -> None:
    peer = Peer()
    peer.protocol.receive(encode_message(Persisted(9)) + encode_message(Persisted(5)))
    assert peer.protocol.persisted_seq == 9


def test_peer_awareness_follows_clocks_and_removals() -> None:
    peer = Peer()
    peer.protocol.start()
    peer.protocol.receive(awareness_of(7, 2, {"user": "bo"}))
    peer.protocol.receive(awareness_of(7, 1, {"user": "stale"}))
    assert peer.protocol.awareness_states == {7: {"user": "bo"}}
    removal = AwarenessEntry(7, 2, "null")
    peer.protocol.receive(awareness_frame(encode_awareness([removal])))
    assert peer.protocol.awareness_states == {}


def test_own_state_is_kept_out_of_peers_and_reasserted_after_a_removal() -> None:
    peer = Peer()
    peer.protocol.start()
    peer.protocol.set_awareness({"user": "ann"})
    [announced] = sent_awareness(peer.messages())
    me = peer.doc.client_id
    peer.protocol.receive(awareness_of(me, announced.clock, {"user": "ann"}))
    assert peer.protocol.awareness_states == {}
    peer.protocol.receive(awareness_frame(encode_awareness([AwarenessEntry(me, 40, "null")])))
    [again] = sent_awareness(peer.messages())
    assert again.clock > 40
    assert json.loads(again.state) == {"user": "ann"}


def test_tick_renews_own_state_and_drops_silent_peers() -> None:
    peer = Peer()
    peer.protocol.start(now=0.0)
    peer.protocol.set_awareness({"user": "ann"}, now=0.0)
    peer.protocol.receive(awareness_of(7, 1, {"user": "bo"}), now=0.0)
    [first] = sent_awareness(peer.messages())
    peer.protocol.tick(now=10.0)
    assert sent_awareness(peer.messages()) == []
    peer.protocol.tick(now=16.0)
    [renewed] = sent_awareness(peer.messages())
    assert renewed.clock == first.clock + 1
    assert peer.protocol.awareness_states == {7: {"user": "bo"}}
    peer.protocol.tick(now=31.0)
    assert peer.protocol.awareness_states == {}


def test_leave_announces_removal_and_stops_sending() -> None:
    peer = Peer()
    peer.protocol.start()
    peer.protocol.set_awareness({"user": "ann"})
    [announced] = sent_awareness(peer.messages())
    peer.protocol.leave()
    [removal] = sent_awareness(peer.messages())
    assert (removal.state, removal.clock) == ("null", announced.clock + 1)
    peer.doc.get("tasks", type=pycrdt.Map)["x"] = "after leaving"
    assert peer.sent == []


def test_query_awareness_is_answered_with_the_own_state_only() -> None:
    peer = Peer()
    peer.protocol.start()
    peer.protocol.set_awareness({"user": "ann"})
    peer.protocol.receive(awareness_of(7, 1, {"user": "bo"}))
    peer.messages()
    peer.protocol.receive(encode_message(QueryAwareness()))
    [entry] = sent_awareness(peer.messages())
    assert entry.client_id == peer.doc.client_id


def test_permission_denied_reason_is_recorded() -> None:
    peer = Peer()
    peer.protocol.receive(encode_message(PermissionDenied("board is private")))
    assert peer.protocol.denied_reason == "board is private"


def test_bad_frames_raise_protocol_errors() -> None:
    peer = Peer()
    with pytest.raises(ProtocolError):
        peer.protocol.receive(b"\x00\x02\x05ab")
    with pytest.raises(InvalidUpdate):
        peer.protocol.receive(sync_update(b"\xff\xff\xff"))
    with pytest.raises(ProtocolError):
        peer.protocol.receive(sync_step1(b"\xff"))
    assert tasks_of(peer.doc) == {}


def test_socket_url_joins_board_and_params() -> None:
    assert socket_url("ws://h:1/ws", "b1") == "ws://h:1/ws/b1"
    assert socket_url("ws://h:1/ws/", "a/b", {"token": "t 1"}) == "ws://h:1/ws/a%2Fb?token=t+1"
