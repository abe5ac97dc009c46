"""Reading a Trello board export (the JSON of Trello's "Export as JSON") into a board plan.

What maps: open lists become columns in their order; open cards become tasks in
their list and order, with name, description, due date, labels (by name, or by
colour when unnamed), members (by username) as assignees, checklists (their items
flattened into the task's checklist, checked or not) and comments (from the
export's ``commentCard`` actions, with author and date). What does not map is
counted in the plan's ``skipped``: archived lists and cards, attachments, custom
fields, stickers, votes, and anything the export holds that Boardcast's board has
no place for.

The export is untrusted input: every field is type-checked, strings are cut to the
API's limits, and counts are bounded before anything reaches a board.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.rest.inputs import RestLimits
from gateway.rest.problems import Problem

_MAX_CHECKLIST_ITEMS = 200
_MAX_COMMENTS = 500
_MAX_COMMENT_CHARS = 16_384


@dataclass
class PlannedTask:
    """One card, as it becomes a task."""

    title: str
    column: str  # the Trello list id
    description: str = ""
    due: str | None = None
    labels: list[str] = field(default_factory=list)
    assignees: list[str] = field(default_factory=list)
    checklist: list[tuple[str, bool]] = field(default_factory=list)  # (text, done)
    comments: list[tuple[str, str, str]] = field(default_factory=list)  # (author, text, date)


@dataclass
class TrelloPlan:
    """A Trello board, as Boardcast will hold it, and what could not come along."""

    name: str
    columns: list[tuple[str, str]]  # (Trello list id, name), in order
    tasks: list[PlannedTask]
    skipped: dict[str, int]

    def plain(self) -> dict[str, Any]:
        """The plan as plain values, to travel to the board's actor."""
        return {
            "name": self.name,
            "columns": [list(column) for column in self.columns],
            "tasks": [
                {
                    "title": task.title,
                    "column": task.column,
                    "description": task.description,
                    "due": task.due,
                    "labels": task.labels,
                    "assignees": task.assignees,
                    "checklist": [list(item) for item in task.checklist],
                    "comments": [list(comment) for comment in task.comments],
                }
                for task in self.tasks
            ],
        }


def _text(value: Any, limit: int) -> str:
    if not isinstance(value, str):
        return ""
    cleaned = "".join(char for char in value if char in "\t\n\r" or ord(char) >= 32)
    return cleaned[:limit]


def _records(export: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    value = export.get(key, [])
    if not isinstance(value, list):
        raise Problem("validation", f"the Trello export's {key!r} is not a list")
    return [item for item in value if isinstance(item, dict)]


def _ids(record: Mapping[str, Any], key: str) -> list[str]:
    value = record.get(key)
    return [item for item in value if isinstance(item, str)] if isinstance(value, list) else []


def _position(record: Mapping[str, Any]) -> float:
    pos = record.get("pos", 0)
    return float(pos) if isinstance(pos, int | float) and not isinstance(pos, bool) else 0.0


def _due(value: Any) -> str | None:
    # Trello gives an ISO 8601 time; the board keeps the date.
    if isinstance(value, str) and len(value) >= 10 and value[4] == "-" and value[7] == "-":
        date = value[:10]
        if date.replace("-", "").isdigit():
            return date
    return None


def plan_trello_import(export: Any, limits: RestLimits) -> TrelloPlan:
    """Map a Trello export onto a board; 422 ``validation`` if it is not one."""
    if not isinstance(export, dict) or not isinstance(export.get("lists"), list):
        raise Problem("validation", "not a Trello board export: no 'lists'")
    name_limit = limits.max_name_chars
    skipped: dict[str, int] = {}

    def skip(what: str, count: int = 1) -> None:
        if count:
            skipped[what] = skipped.get(what, 0) + count

    lists = sorted(_records(export, "lists"), key=_position)
    columns: list[tuple[str, str]] = []
    for trello_list in lists:
        list_id = _text(trello_list.get("id"), 200)
        if not list_id:
            skip("lists without an id")
        elif trello_list.get("closed") is True:
            skip("archived lists")
        else:
            columns.append((list_id, _text(trello_list.get("name"), name_limit) or "Untitled"))
    open_lists = {list_id for list_id, _ in columns}

    members = {
        _text(member.get("id"), 200): _text(member.get("username"), 200)
        or _text(member.get("fullName"), 200)
        for member in _records(export, "members")
    }
    labels = {
        _text(label.get("id"), 200): _text(label.get("name"), 200) or _text(label.get("color"), 200)
        for label in _records(export, "labels")
    }
    checklists: dict[str, list[tuple[str, bool]]] = {}
    for checklist in _records(export, "checklists"):
        owner = _text(checklist.get("idCard"), 200)
        for item in sorted(_records(checklist, "checkItems"), key=_position):
            text = _text(item.get("name"), name_limit)
            if text:
                checklists.setdefault(owner, []).append((text, item.get("state") == "complete"))
    comments: dict[str, list[tuple[str, str, str]]] = {}
    for action in _records(export, "actions"):
        data = action.get("data")
        if action.get("type") != "commentCard" or not isinstance(data, dict):
            continue
        about = data.get("card")
        card_id = _text(about.get("id"), 200) if isinstance(about, dict) else ""
        creator = action.get("memberCreator")
        author = _text(creator.get("username"), 200) if isinstance(creator, dict) else ""
        text = _text(data.get("text"), _MAX_COMMENT_CHARS)
        if card_id and text:
            comments.setdefault(card_id, []).append(
                (author or "trello", text, _text(action.get("date"), 40))
            )

    cards = sorted(_records(export, "cards"), key=_position)
    tasks: list[PlannedTask] = []
    for card in cards:
        card_id = _text(card.get("id"), 200)
        list_id = _text(card.get("idList"), 200)
        if card.get("closed") is True:
            skip("archived cards")
            continue
        if list_id not in open_lists:
            skip("cards in archived or unknown lists")
            continue
        title = _text(card.get("name"), name_limit).strip() or "Untitled"
        card_labels = [labels[i] for i in _ids(card, "idLabels") if labels.get(i)]
        card_members = [members[i] for i in _ids(card, "idMembers") if members.get(i)]
        items = checklists.get(card_id, [])
        if len(items) > _MAX_CHECKLIST_ITEMS:
            skip("checklist items past 200 on one card", len(items) - _MAX_CHECKLIST_ITEMS)
        notes = comments.get(card_id, [])
        if len(notes) > _MAX_COMMENTS:
            skip("comments past 500 on one card", len(notes) - _MAX_COMMENTS)
        attachments = card.get("attachments")
        skip("attachments", len(attachments) if isinstance(attachments, list) else 0)
        fields = card.get("customFieldItems")
        skip("custom field values", len(fields) if isinstance(fields, list) else 0)
        stickers = card.get("stickers")
        skip("stickers", len(stickers) if isinstance(stickers, list) else 0)
        tasks.append(
            PlannedTask(
                title=title,
                column=list_id,
                description=_text(card.get("desc"), limits.max_description_chars),
                due=_due(card.get("due")),
                labels=sorted(set(card_labels))[: limits.max_list_items],
                assignees=sorted(set(card_members))[: limits.max_list_items],
                checklist=items[:_MAX_CHECKLIST_ITEMS],
                # Oldest first: Trello lists actions newest first.
                comments=sorted(notes, key=lambda note: note[2])[:_MAX_COMMENTS],
            )
        )
    if len(tasks) > limits.max_bulk_items:
        raise Problem(
            "too-many-items",
            f"the export has {len(tasks)} open cards; at most {limits.max_bulk_items}",
            limit=limits.max_bulk_items,
        )
    votes = sum(1 for action in _records(export, "actions") if action.get("type") == "voteOnCard")
    skip("votes", votes)
    name = _text(export.get("name"), name_limit).strip() or "Imported from Trello"
    return TrelloPlan(name, columns, tasks, skipped)
