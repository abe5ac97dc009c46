"""The role cache: bounded, never answers with a role older than a change it was told of.

Hypothesis drives random sequences of reads, stores (some with a generation taken
before a change, as a read in flight would), forgets and clock steps against a
model of what may be answered. Also the server's document ids: no board id can
name a project document or a list, and hostile ids never break the parsing.
"""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from crdt.project_doc import project_doc_id, project_of_doc, served_read_only
from crdt.project_list import list_doc_id, user_of_list
from gateway.auth.role_cache import RoleCache, Standing
from gateway.ws import BOARD_ID

USERS = st.sampled_from(["ann", "bob", "cy"])
PROJECTS = st.sampled_from(["p1", "p2", "p3", "p4"])
ROLES = st.sampled_from([None, "viewer", "editor", "owner"])

OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("read"), USERS, PROJECTS),
        st.tuples(st.just("store"), USERS, PROJECTS, ROLES, st.booleans()),
        st.tuples(st.just("forget"), USERS),
        st.tuples(st.just("tick"), st.floats(min_value=0, max_value=40)),
    ),
    max_size=80,
)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@settings(max_examples=300, deadline=None)
@given(OPERATIONS, st.integers(min_value=1, max_value=5))
@example([("forget", "ann"), ("store", "ann", "p1", "viewer", True), ("read", "ann", "p1")], 3)
def test_the_cache_stays_bounded_and_never_serves_what_a_change_made_old(
    operations: list[tuple[object, ...]], max_entries: int
) -> None:
    clock = Clock()
    cache = RoleCache(max_entries=max_entries, ttl_seconds=60.0, clock=clock)
    # What the cache may still answer for (user, project): the value and when it was stored.
    allowed: dict[tuple[str, str], tuple[Standing, float]] = {}
    # A generation taken before the latest change of a user (a read that was in flight).
    stale: dict[str, int] = {}
    for operation in operations:
        kind = operation[0]
        if kind == "read":
            user, project = str(operation[1]), str(operation[2])
            found = cache.standing(user, project)
            if found is not None:
                value, stored_at = allowed[(user, project)]
                assert found == value
                assert clock.now - stored_at <= 60.0
        elif kind == "store":
            user, project, role, in_flight = operation[1:]
            assert isinstance(user, str) and isinstance(project, str)
            value = Standing(True, role if isinstance(role, str) else None, {})
            if in_flight and user in stale:
                cache.store_standing(user, project, value, stale[user])  # must be ignored
            else:
                cache.store_standing(user, project, value, cache.generation(user))
                allowed[(user, project)] = (value, clock.now)
        elif kind == "forget":
            user = str(operation[1])
            stale[user] = cache.generation(user)
            cache.forget_user(user)
            for key in [key for key in allowed if key[0] == user]:
                del allowed[key]
        else:
            step = operation[1]
            assert isinstance(step, float)
            clock.now += step
        assert len(cache) <= 2 * max_entries


@given(st.text(max_size=260))
def test_hostile_document_ids_parse_or_are_refused(doc_id: str) -> None:
    project = project_of_doc(doc_id)
    user = user_of_list(doc_id)
    assert project is None or project_doc_id(project) == doc_id
    assert user is None or list_doc_id(user) == doc_id
    assert not (project is not None and user is not None)
    if served_read_only(doc_id):
        # Every id the server serves read-only is in its reserved namespace, which the
        # socket and REST refuse as a board id for anything else.
        assert doc_id.startswith("boardcast.")
    if not doc_id.startswith("boardcast.") and BOARD_ID.match(doc_id):
        assert project is None and user is None


@given(st.text(min_size=1, max_size=100))
def test_a_board_id_never_names_a_project_document_or_a_list(board_id: str) -> None:
    if board_id.startswith("boardcast."):
        return  # refused as a board id (gateway/ws.py, gateway/rest/resources.py)
    assert project_of_doc(board_id) is None
    assert user_of_list(board_id) is None
    assert not served_read_only(board_id)
