"""The events added for workers: comments with mentions, membership changes, context values.

Also what a client can send into them: any comment text, any value under an event's fields,
yields bounded events and never breaks the analytics fold (hypothesis).
"""

from __future__ import annotations

from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st
from pycrdt import Doc

from crdt.board import Board
from crdt.events import BoardEventRecorder, mentions_in
from crdt.project_doc import ProjectDoc, project_doc_id
from crdt.projects import ProjectEntry
from gateway.rest.commands import add_comment
from persistence.event_log import LoggedEvent
from workers.analytics_model import BoardMetrics, board_report


def synced(source: Doc[Any], replica: Doc[Any], recorder: BoardEventRecorder) -> list[Any]:
    replica.apply_update(source.get_update(replica.get_state()))
    return [event.to_dict() for event in recorder.drain()]


def test_a_comment_is_one_event_naming_its_author_and_mentions() -> None:
    server: Doc[Any] = Doc()
    recorder = BoardEventRecorder(server, "b")
    client = Board()
    client.add_column("To do", column_id="todo")
    task = client.add_task("t", "todo", due="2026-01-02")
    created = synced(client.doc, server, recorder)
    assert [e for e in created if e["kind"] == "task.created"] == [{
        "kind": "task.created", "board_id": "b", "task_id": task, "column": "todo",
        "due": "2026-01-02", "assignees": [],
    }]  # fmt: skip
    add_comment(client, task, "c1", "ann", "ping @bob and @carl.x, not mail@example.com", "now")
    assert synced(client.doc, server, recorder) == [
        {
            "kind": "task.commented", "board_id": "b", "task_id": task, "comment_id": "c1",
            "author": "ann", "mentions": ["bob", "carl.x"],
        }
    ]  # fmt: skip
    add_comment(client, task, "c2", "bob", "@ann done", "now")  # the array exists by now
    assert [e["comment_id"] for e in synced(client.doc, server, recorder)] == ["c2"]


def test_membership_changes_in_a_project_document() -> None:
    server: Doc[Any] = Doc()
    recorder = BoardEventRecorder(server, project_doc_id("p1"))
    source: Doc[Any] = Doc()
    project = ProjectDoc(source)
    project.create(ProjectEntry("p1", "P", "a0", "now"), "olga")
    project.add_board("b1", "B", "now")
    synced(source, server, recorder)
    changes = []
    for step in (
        lambda: project.set_member("ann", "editor"),
        lambda: project.narrow_board_role("b1", "ann", "viewer"),
        lambda: project.remove_member("ann"),
    ):
        step()
        changes += [
            (e["scope"], e["target"], e["user"], e["role"])
            for e in synced(source, server, recorder)
        ]
    assert changes[:2] == [("project", "p1", "ann", "editor"), ("board", "b1", "ann", "viewer")]
    # Leaving the project takes the narrowed board role with it.
    assert set(changes[2:]) == {("project", "p1", "ann", None), ("board", "b1", "ann", None)}


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=5000))
def test_mentions_are_bounded_whatever_the_text(text: str) -> None:
    found = mentions_in(text)
    assert len(found) <= 50
    assert all(0 < len(name) <= 64 and f"@{name}" in text for name in found)


FIELDS = ["task_id", "column", "from_column", "to_column", "due", "fields", "column_id",
          "position", "done_column"]  # fmt: skip
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=6,
)
kinds = st.sampled_from(
    ["task.created", "task.moved", "task.updated", "task.deleted", "column.created",
     "column.updated", "column.deleted", "meta.updated", "task.commented", "nonsense"]
)  # fmt: skip


@settings(max_examples=60, deadline=None)
@example(
    events=[("task.created", {"task_id": "t"}), ("task.updated", {"task_id": "t", "fields": True})]
)
@example(
    events=[("column.updated", {"column_id": "c", "fields": 7}), ("meta.updated", {"fields": None})]
)
@given(
    st.lists(
        st.tuples(
            kinds,
            st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=6), json_values, max_size=6),
        ),
        max_size=30,
    )
)
def test_any_event_data_folds_without_error(events: list[tuple[str, dict[str, Any]]]) -> None:
    # What reaches the log is derived by the server, but a careless client's values ride
    # along in it (a due date that is a number, a column that is a list): analytics cope.
    metrics = BoardMetrics("b")
    for offset, (kind, data) in enumerate(events, start=1):
        metrics.apply(LoggedEvent(offset, f"b:{offset}:0", "b", "p", kind, data, None, 1e9))
    report = board_report(BoardMetrics.from_json(metrics.to_json()), today="2001-09-09", days=3)
    assert len(report["burndown"]) == 3
