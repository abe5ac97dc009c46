"""The notification rules, event by event: who is told what, and who never is."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from persistence.event_log import LoggedEvent
from persistence.notification_state import TaskState
from persistence.notification_store import KINDS
from workers.notification_rules import (
    Names,
    apply_event,
    due_at,
    notification_id,
    reminder_id,
    reminders_for,
    update_id,
)

NAMES = Names(ids_by_name={"bob": "u-bob", "cy": "u-cy"}, names_by_id={"u-ada": "Ada"})


def event(kind: str, offset: int = 10, actor: str | None = "u-ada", **data: Any) -> LoggedEvent:
    data.setdefault("task_id", "t1")
    return LoggedEvent(offset, f"b1:{offset}:0", "b1", "p1", kind, data, actor, 1000.0)


def known(*assignees: str, **changes: Any) -> TaskState:
    return TaskState("b1", "t1", project="p1", assignees=assignees, offset=1, **changes)


def told(outcome: Any) -> list[tuple[str, str]]:
    return sorted((n.user, n.kind) for n in outcome.notifications)


def test_assignment_tells_the_added_and_the_removed_not_the_actor() -> None:
    outcome = apply_event(
        event("task.assigned", added=["u-bob", "u-ada"], removed=["u-cy"]),
        known("u-cy"),
        NAMES,
        now=5.0,
    )
    assert told(outcome) == [("u-bob", "assigned"), ("u-cy", "unassigned")]
    assert outcome.task is not None and outcome.task.assignees == ("u-bob", "u-ada")
    (bob,) = [n for n in outcome.notifications if n.user == "u-bob"]
    assert bob.id == notification_id("b1:10:0", "u-bob")
    assert bob.title == "Ada assigned you to a task on board b1"
    assert (bob.board_id, bob.project, bob.task_id, bob.actor) == ("b1", "p1", "t1", "u-ada")


def test_a_task_unknown_before_the_log_is_learnt_from_its_first_assignment() -> None:
    outcome = apply_event(event("task.assigned", added=["u-bob"], removed=[]), None, NAMES, now=5)
    assert told(outcome) == [("u-bob", "assigned")]
    moved = apply_event(
        event("task.moved", offset=11, from_column="a", to_column="b"), outcome.task, NAMES, now=6
    )
    assert told(moved) == [("u-bob", "moved")]
    assert moved.notifications[0].title == "Ada moved a task on board b1 to column b"


def test_a_comment_tells_the_mentioned_and_the_assignees_once_each() -> None:
    outcome = apply_event(
        event(
            "task.commented",
            comment_id="c1",
            author="u-ada",
            mentions=["bob", "nobody", "cy", "bob"],
        ),
        known("u-bob", "u-dee", "u-ada"),
        NAMES,
        now=5.0,
    )
    # bob is mentioned and assigned: told once, "mentioned"; unknown names are ignored; the
    # author (an assignee too) is not told about their own comment.
    assert told(outcome) == [("u-bob", "mentioned"), ("u-cy", "mentioned"), ("u-dee", "commented")]
    assert all(n.data["comment_id"] == "c1" for n in outcome.notifications)


def test_the_author_of_a_comment_is_not_told_even_if_another_actor_is_named() -> None:
    outcome = apply_event(
        event("task.commented", actor="service", author="u-bob", mentions=["bob"], comment_id="c"),
        known("u-bob"),
        NAMES,
        now=5.0,
    )
    assert told(outcome) == []


def test_moves_updates_and_deletes_tell_the_assignees_but_the_actor() -> None:
    for kind, expected in (("task.moved", "moved"), ("task.updated", "updated")):
        happened = event(kind, fields=["title"], from_column="a", to_column="b")
        outcome = apply_event(happened, known("u-bob", "u-ada"), NAMES, now=5)
        assert told(outcome) == [("u-bob", expected)]
    gone = apply_event(event("task.deleted"), known("u-bob", "u-cy"), NAMES, now=5)
    assert told(gone) == [("u-bob", "deleted"), ("u-cy", "deleted")] and gone.forget
    nobody = apply_event(event("task.moved", from_column="a", to_column="b"), known(), NAMES, now=5)
    assert told(nobody) == [] and nobody.task is not None


def test_a_reorder_within_a_column_tells_nobody() -> None:
    reorder = event("task.moved", from_column="a", to_column="a", position="a5")
    outcome = apply_event(reorder, known("u-bob"), NAMES, now=5)
    assert told(outcome) == [] and outcome.task is not None and outcome.task.offset == 10


def test_edits_tell_an_assignee_once_per_window_of_log_time() -> None:
    def edit(offset: int, at: float) -> LoggedEvent:
        return LoggedEvent(
            offset, f"b1:{offset}:0", "b1", "p1", "task.updated",
            {"task_id": "t1", "fields": ["description"]}, "u-ada", at,
        )  # fmt: skip

    ids = [
        apply_event(edit(n, at), known("u-bob"), NAMES, now=at).notifications[0].id
        for n, at in ((11, 1200.0), (12, 1500.0), (13, 1799.0), (14, 1800.0))
    ]
    # Three edits in one 600-second window share an id (recorded once); the next window's
    # edit is told again.
    assert ids[0] == ids[1] == ids[2] == update_id("b1", "t1", "u-bob", 1200.0)
    assert ids[3] != ids[0]


def test_a_due_date_is_learnt_from_creation_and_updates() -> None:
    created = apply_event(event("task.created", column="a", due="2026-12-24"), None, NAMES, now=1)
    assert created.task is not None and created.task.due == "2026-12-24"
    assert created.task.due_at == datetime(2026, 12, 25, tzinfo=UTC).timestamp()
    assert told(created) == []
    dated = created.task.replace(reminded="due_soon")
    changed = apply_event(
        event("task.updated", offset=11, fields=["due"], due="2027-01-02"), dated, NAMES, now=2
    )
    assert changed.task is not None and changed.task.due == "2027-01-02"
    assert changed.task.reminded == ""  # a new due date is owed its reminders again
    cleared = apply_event(
        event("task.updated", offset=12, fields=["due"], due=None), changed.task, NAMES, now=3
    )
    assert cleared.task is not None and cleared.task.due is None and cleared.task.due_at is None


def test_membership_changes_tell_the_member_and_teach_project_roles() -> None:
    made = apply_event(
        event("member.changed", scope="project", target="p1", user="u-bob", role="admin"),
        None,
        NAMES,
        now=5,
    )
    assert told(made) == [("u-bob", "member")] and made.role == ("p1", "u-bob", "admin")
    assert made.notifications[0].title == "Ada made you admin of project p1"
    removed = apply_event(
        event("member.changed", scope="board", target="b9", user="u-bob", role=None),
        None,
        NAMES,
        now=5,
    )
    assert removed.notifications[0].title == "Ada removed you from board b9"
    assert removed.role is None  # a board's narrowed role is not a project role
    own = apply_event(
        event("member.changed", scope="project", target="p1", user="u-ada", role="owner"),
        None,
        NAMES,
        now=5,
    )
    assert told(own) == [] and own.role == ("p1", "u-ada", "owner")


def test_an_event_seen_again_after_its_task_saw_it_tells_nobody() -> None:
    task = known("u-bob").replace(offset=10)
    columns = {"from_column": "a", "to_column": "b"}
    assert told(apply_event(event("task.moved", offset=10, **columns), task, NAMES, now=5)) == []
    assert told(apply_event(event("task.moved", offset=11, **columns), task, NAMES, now=5)) == [
        ("u-bob", "moved")
    ]


def test_other_events_tell_nobody() -> None:
    for kind in ("column.created", "meta.updated", "nonsense"):
        outcome = apply_event(event(kind), known("u-bob"), NAMES, now=5)
        assert outcome.notifications == [] and outcome.task is None


def test_due_dates_parse_or_are_none() -> None:
    assert due_at("2026-01-01") == datetime(2026, 1, 2, tzinfo=UTC).timestamp()
    assert due_at("2026-01-01T10:00:00") == due_at("2026-01-01")
    for bad in (None, "", "soon", 5, "2026-13-01", "x" * 100):
        assert due_at(bad) is None


def test_reminders_once_due_soon_then_once_overdue() -> None:
    due = datetime(2026, 1, 2, tzinfo=UTC).timestamp()
    task = TaskState("b1", "t1", assignees=("u-bob", "u-cy"), due="2026-01-01", due_at=due)
    assert reminders_for(task, now=due - 100_000, horizon=due - 100_000 + 86400) == []
    soon = reminders_for(task, now=due - 3600, horizon=due - 3600 + 86400)
    assert sorted((n.user, n.kind) for n in soon) == [("u-bob", "due_soon"), ("u-cy", "due_soon")]
    assert soon[0].id == reminder_id("b1", "t1", "2026-01-01", "u-bob", "due_soon")
    told_soon = task.replace(reminded="due_soon")
    assert reminders_for(told_soon, now=due - 60, horizon=due + 86400) == []
    late = reminders_for(told_soon, now=due + 1, horizon=due + 86401)
    assert {n.kind for n in late} == {"overdue"}
    assert reminders_for(task.replace(reminded="overdue"), now=due + 9, horizon=due + 9e9) == []


ids = st.text(alphabet="abcu-", min_size=1, max_size=6)
values = st.none() | st.integers() | st.text(max_size=8) | st.lists(st.text(max_size=6), max_size=4)


@settings(max_examples=200, deadline=None)
@given(
    kind=st.sampled_from(
        [
            "task.created",
            "task.updated",
            "task.moved",
            "task.assigned",
            "task.commented",
            "task.deleted",
            "member.changed",
            "column.created",
            "junk",
        ]
    ),
    data=st.dictionaries(
        st.sampled_from(
            [
                "task_id",
                "added",
                "removed",
                "mentions",
                "author",
                "due",
                "fields",
                "user",
                "scope",
                "target",
                "role",
                "to_column",
            ]
        ),
        values | st.lists(ids, max_size=4),
        max_size=8,
    ),
    actor=st.none() | ids,
    assignees=st.lists(ids, max_size=4),
)
@example(kind="task.assigned", data={"task_id": "t1", "added": [None]}, actor=None, assignees=[])
def test_whatever_an_event_holds_the_rules_hold(
    kind: str, data: dict[str, Any], actor: str | None, assignees: list[str]
) -> None:
    outcome = apply_event(
        LoggedEvent(7, "b1:7:0", "b1", "p1", kind, data, actor, 1.0),
        known(*assignees),
        NAMES,
        now=2.0,
    )
    users = [n.user for n in outcome.notifications]
    assert len(users) == len(set(users))  # one per user and event
    for notification in outcome.notifications:
        assert notification.kind in KINDS
        assert notification.user and notification.user != actor  # never the actor
        if notification.kind == "updated":
            assert notification.id == update_id("b1", "t1", notification.user, 1.0)
        else:
            assert notification.id == notification_id("b1:7:0", notification.user)
        assert len(notification.title) <= 200


def test_a_task_created_with_assignees_tells_them_not_the_actor() -> None:
    outcome = apply_event(
        event("task.created", column="a", assignees=["u-bob", "u-ada", "u-bob", 7]),
        None,
        NAMES,
        now=1,
    )
    assert told(outcome) == [("u-bob", "assigned")]  # u-ada made the task
    assert outcome.task is not None and outcome.task.assignees == ("u-bob", "u-ada")
    # Later changes reach them as assignees.
    moved = apply_event(
        event("task.moved", offset=11, from_column="a", to_column="b"), outcome.task, NAMES, now=2
    )
    assert told(moved) == [("u-bob", "moved")]
