"""Server-side awareness: real changes reach the others once, echoes and departed clients do not."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crdt.awareness import (
    NULL_STATE,
    OUTDATED_TIMEOUT_S,
    Awareness,
    AwarenessEntry,
    AwarenessLimits,
    decode_awareness,
    encode_awareness,
)
from crdt.errors import AwarenessLimit, ProtocolError

ALICE = '{"user":"alice"}'
BOB = '{"user":"bob"}'
CAROL = '{"user":"carol"}'


def update(*entries: tuple[int, int, str]) -> bytes:
    return encode_awareness(AwarenessEntry(*entry) for entry in entries)


def entries(payload: bytes | None) -> list[tuple[int, int, str]]:
    assert payload is not None, "expected an update to forward"
    return [(e.client_id, e.clock, e.state) for e in decode_awareness(payload)]


@pytest.fixture
def awareness() -> Awareness:
    return Awareness()


def test_payload_matches_y_protocols_bytes() -> None:
    # encodeAwarenessUpdate of client 1 at clock 1 with state {"user":{"name":"Zoë 🦊"}}
    # (y-protocols 1.0.7): the string length is in UTF-8 bytes (0x1d = 29).
    payload = bytes.fromhex("0101011d7b2275736572223a7b226e616d65223a225a6fc3ab20f09fa68a227d7d")
    expected = [AwarenessEntry(1, 1, '{"user":{"name":"Zoë 🦊"}}')]
    assert decode_awareness(payload) == expected
    assert encode_awareness(expected) == payload


def test_a_new_state_is_forwarded_and_kept(awareness: Awareness) -> None:
    forwarded = awareness.apply(update((1, 1, ALICE)), "a", now=0.0)
    assert entries(forwarded) == [(1, 1, ALICE)]
    assert awareness.states == {1: ALICE}


def test_an_echo_at_the_same_clock_is_dropped(awareness: Awareness) -> None:
    awareness.apply(update((1, 1, ALICE)), "a", now=0.0)
    # Stock clients re-send what they receive: the same entry comes back from everyone.
    assert awareness.apply(update((1, 1, ALICE)), "b", now=1.0) is None
    assert awareness.apply(update((1, 1, ALICE)), "a", now=1.0) is None


def test_an_older_clock_is_dropped(awareness: Awareness) -> None:
    awareness.apply(update((1, 3, ALICE)), "a", now=0.0)
    assert awareness.apply(update((1, 2, BOB)), "a", now=1.0) is None
    assert awareness.states == {1: ALICE}


def test_a_renewal_with_the_same_state_is_forwarded(awareness: Awareness) -> None:
    # Clients renew every 15 s; the others reset their 30 s timeout on it.
    awareness.apply(update((1, 1, ALICE)), "a", now=0.0)
    assert entries(awareness.apply(update((1, 2, ALICE)), "a", now=15.0)) == [(1, 2, ALICE)]


def test_only_the_changed_entries_of_an_update_are_forwarded(awareness: Awareness) -> None:
    awareness.apply(update((1, 5, ALICE), (2, 1, BOB)), "a", now=0.0)
    forwarded = awareness.apply(update((1, 5, ALICE), (2, 2, CAROL), (3, 1, ALICE)), "a", 1.0)
    assert entries(forwarded) == [(2, 2, CAROL), (3, 1, ALICE)]


def test_a_removal_is_forwarded_once(awareness: Awareness) -> None:
    awareness.apply(update((1, 1, ALICE)), "a", now=0.0)
    assert entries(awareness.apply(update((1, 2, NULL_STATE)), "a", 1.0)) == [(1, 2, NULL_STATE)]
    assert awareness.states == {}
    assert awareness.apply(update((1, 2, NULL_STATE)), "b", now=1.0) is None
    # A delayed echo of the old state does not bring the client back.
    assert awareness.apply(update((1, 1, ALICE)), "b", now=1.0) is None
    assert awareness.states == {}


def test_a_removal_at_the_current_clock_is_forwarded(awareness: Awareness) -> None:
    # y-protocols accepts a null state at an equal clock when the client is present.
    awareness.apply(update((1, 4, ALICE)), "a", now=0.0)
    assert entries(awareness.apply(update((1, 4, NULL_STATE)), "a", 1.0)) == [(1, 4, NULL_STATE)]
    assert awareness.states == {}


def test_removing_a_client_nobody_saw_forwards_nothing(awareness: Awareness) -> None:
    assert awareness.apply(update((9, 3, NULL_STATE)), "a", now=0.0) is None
    # Its clock is remembered: an older announcement is stale.
    assert awareness.apply(update((9, 2, ALICE)), "a", now=0.0) is None


def test_a_malformed_update_changes_nothing(awareness: Awareness) -> None:
    good_then_cut = update((1, 1, ALICE), (2, 1, BOB))[:-3]
    with pytest.raises(ProtocolError):
        awareness.apply(good_then_cut, "a", now=0.0)
    with pytest.raises(ProtocolError):
        awareness.apply(update((1, 1, ALICE)) + b"\x00", "a", now=0.0)
    with pytest.raises(ProtocolError):
        awareness.apply(b"\x7f\x01", "a", now=0.0)
    assert awareness.states == {}
    assert awareness.full_update() is None


def test_remove_connection_removes_exactly_its_clients(awareness: Awareness) -> None:
    awareness.apply(update((1, 3, ALICE), (2, 7, BOB)), "a", now=0.0)
    awareness.apply(update((3, 1, CAROL)), "b", now=0.0)
    removal = awareness.remove_connection("a")
    assert entries(removal) == [(1, 3, NULL_STATE), (2, 7, NULL_STATE)]
    assert awareness.states == {3: CAROL}
    assert awareness.remove_connection("a") is None
    assert awareness.remove_connection("never connected") is None


def test_peers_accept_the_removal_of_a_dropped_connection(awareness: Awareness) -> None:
    # A peer applies what the server forwards with the same clock rule as y-protocols.
    peer = Awareness()
    peer.apply(awareness.apply(update((1, 3, ALICE)), "a", now=0.0) or b"", "server", now=0.0)
    removal = awareness.remove_connection("a")
    assert removal is not None
    assert peer.apply(removal, "server", now=1.0) is not None
    assert peer.states == {}


def test_a_client_that_reconnects_is_seen_again_on_its_next_clock(awareness: Awareness) -> None:
    awareness.apply(update((1, 3, ALICE)), "a", now=0.0)
    awareness.remove_connection("a")
    # A stale copy of the last state does not revive it; the client's next clock does.
    assert awareness.apply(update((1, 3, ALICE)), "a2", now=1.0) is None
    assert entries(awareness.apply(update((1, 4, ALICE)), "a2", 2.0)) == [(1, 4, ALICE)]
    assert entries(awareness.remove_connection("a2")) == [(1, 4, NULL_STATE)]


def test_a_client_id_is_taken_over_only_once_its_first_connection_let_go(
    awareness: Awareness,
) -> None:
    awareness.apply(update((1, 1, ALICE)), "old", now=0.0)
    # While "old" owns client 1, nobody else may change or remove its presence.
    assert awareness.apply(update((1, 2, BOB)), "new", now=1.0) is None
    assert awareness.apply(update((1, 3, NULL_STATE)), "new", now=1.0) is None
    assert awareness.states == {1: ALICE}
    assert entries(awareness.remove_connection("old")) == [(1, 1, NULL_STATE)]
    # A reconnecting client (same id, new connection) is seen again on its next clock.
    assert entries(awareness.apply(update((1, 2, ALICE)), "new", now=2.0)) == [(1, 2, ALICE)]
    assert entries(awareness.remove_connection("new")) == [(1, 2, NULL_STATE)]


def test_a_million_entry_message_is_refused_before_it_is_decoded(
    awareness: Awareness,
) -> None:
    # 1,000,000 entries announced, each client id 1 at clock 1 with state "{}".
    payload = bytes.fromhex("c0843d") + bytes.fromhex("0101027b7d") * 1_000_000
    with pytest.raises(AwarenessLimit):
        awareness.apply(payload, "a", now=0.0)
    assert awareness.states == {}
    assert awareness.remembered == 0


def test_a_state_over_its_size_limit_is_refused(awareness: Awareness) -> None:
    big = '{"name":"' + "x" * awareness.limits.max_state_bytes + '"}'
    with pytest.raises(AwarenessLimit):
        awareness.apply(update((1, 1, big)), "a", now=0.0)
    assert awareness.states == {}


def test_a_connection_may_own_only_so_many_client_ids(awareness: Awareness) -> None:
    limit = awareness.limits.max_clients_per_connection
    awareness.apply(update(*[(cid, 1, ALICE) for cid in range(limit)]), "a", now=0.0)
    with pytest.raises(AwarenessLimit):
        awareness.apply(update((limit, 1, ALICE)), "a", now=0.0)
    assert len(awareness.states) == limit
    # Other connections are not affected by "a" reaching its limit.
    assert awareness.apply(update((1000, 1, BOB)), "b", now=0.0) is not None


def test_the_clock_table_of_departed_clients_is_bounded() -> None:
    awareness = Awareness(AwarenessLimits(max_remembered=10))
    for cid in range(100):
        awareness.apply(update((cid, 1, ALICE)), f"c{cid}", now=0.0)
        awareness.remove_connection(f"c{cid}")
    assert awareness.remembered == 10
    assert awareness.states == {}


def test_a_client_removed_by_its_own_message_is_not_removed_again(awareness: Awareness) -> None:
    awareness.apply(update((1, 1, ALICE), (2, 1, BOB)), "a", now=0.0)
    awareness.apply(update((1, 2, NULL_STATE)), "a", now=1.0)
    assert entries(awareness.remove_connection("a")) == [(2, 1, NULL_STATE)]


def test_expire_removes_states_not_renewed_in_time(awareness: Awareness) -> None:
    awareness.apply(update((1, 1, ALICE)), "a", now=0.0)
    awareness.apply(update((2, 1, BOB)), "b", now=20.0)
    awareness.apply(update((1, 2, ALICE)), "a", now=10.0)
    assert awareness.expire(now=10.0 + OUTDATED_TIMEOUT_S - 0.1) is None
    assert entries(awareness.expire(now=10.0 + OUTDATED_TIMEOUT_S)) == [(1, 2, NULL_STATE)]
    assert awareness.states == {2: BOB}
    # The expired client's connection has nothing left to remove.
    assert awareness.remove_connection("a") is None
    assert entries(awareness.expire(now=50.0)) == [(2, 1, NULL_STATE)]
    assert awareness.expire(now=100.0) is None


def test_full_update_announces_every_present_client(awareness: Awareness) -> None:
    assert awareness.full_update() is None
    awareness.apply(update((1, 1, ALICE), (2, 4, BOB)), "a", now=0.0)
    awareness.apply(update((3, 2, CAROL)), "b", now=0.0)
    awareness.apply(update((2, 5, NULL_STATE)), "a", now=0.0)
    assert sorted(entries(awareness.full_update())) == [(1, 1, ALICE), (3, 2, CAROL)]
    # A newcomer applying it sees everyone present.
    newcomer = Awareness()
    newcomer.apply(awareness.full_update() or b"", "server", now=0.0)
    assert newcomer.states == {1: ALICE, 3: CAROL}


@given(
    st.lists(
        st.builds(
            AwarenessEntry,
            st.integers(min_value=0, max_value=2**53),
            st.integers(min_value=0, max_value=2**53),
            st.text(),
        )
    )
)
def test_entries_round_trip(sent: list[AwarenessEntry]) -> None:
    assert decode_awareness(encode_awareness(sent)) == sent
