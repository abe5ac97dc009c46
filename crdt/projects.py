"""The project directory: an index of every project and board, for administrators and lookups.

It is a Yjs document of its own, hosted and stored like a board under the id
:data:`DIRECTORY_BOARD`. The truth about a project (its name, members, roles and
boards) lives in the project's own document (:mod:`crdt.project_doc`); the
directory keeps only what finding things needs::

    projects: Y.Map  project id -> Y.Map {name, position, created_at}
    boards:   Y.Map  board id   -> Y.Map {title, project, position, created_at}
    layout:   Y.Map  {projects: "documents"} once older directories were split

``boards`` answers "which project holds this board" (access checks) and, with
``projects``, is the live list of everything an administrator sees. Before
project documents existed, projects and boards here also held ``members``; a
gateway splits such a directory into project documents when it starts
(:mod:`gateway.project_split`), then strips them.

``position`` orders the lists (fractional-index keys, :mod:`crdt.positions`). Reads
are tolerant of what a careless client wrote; only ``Y.Map`` entries are edited.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pycrdt import Doc, Map

from crdt.positions import is_valid_position, position_between

#: The id the directory document is stored and hosted under.
DIRECTORY_BOARD = "boardcast.directory"

#: ``layout["projects"]`` once every project lives in a document of its own.
SPLIT_LAYOUT = "documents"


@dataclass(frozen=True, slots=True)
class ProjectEntry:
    """A project: its id, name, list position and creation time."""

    id: str
    name: str
    position: str
    created_at: str


@dataclass(frozen=True, slots=True)
class BoardEntry:
    """A board as a project lists it."""

    id: str
    title: str
    project: str
    position: str
    created_at: str


def now_text() -> str:
    """The time now, as the board document's timestamps are written."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Directory:
    """Typed access to the directory index; every method is one Yjs transaction."""

    def __init__(self, doc: Doc[Any]) -> None:
        self.doc = doc
        self._projects: Map[Any] = doc.get("projects", type=Map)
        self._boards: Map[Any] = doc.get("boards", type=Map)
        self._layout: Map[Any] = doc.get("layout", type=Map)

    # -- projects --------------------------------------------------------------

    def projects(self) -> list[ProjectEntry]:
        """Every project, in list order."""
        found = [_project(key, value) for key, value in plain_entries(self._projects)]
        return sorted(found, key=lambda entry: (entry.position, entry.id))

    def get_project(self, project_id: str) -> ProjectEntry | None:
        """The project's index entry, or None."""
        value = plain_entry(self._projects, project_id)
        return _project(project_id, value) if value is not None else None

    def next_project_position(self) -> str:
        """A position after every project's."""
        existing = self.projects()
        return after(existing[-1].position if existing else None)

    def index_project(self, entry: ProjectEntry) -> None:
        """Write (or correct) a project's index entry."""
        upsert_fields(
            self._projects,
            entry.id,
            {"name": entry.name, "position": entry.position, "created_at": entry.created_at},
        )

    def unindex_project(self, project_id: str) -> None:
        """Drop a project's index entry, if there is one."""
        if project_id in self._projects:
            del self._projects[project_id]

    # -- boards ----------------------------------------------------------------

    def boards(self, project_id: str | None = None) -> list[BoardEntry]:
        """The boards (of one project, if given), in list order."""
        found = [
            _board(key, value)
            for key, value in plain_entries(self._boards)
            if project_id is None or text(value.get("project")) == project_id
        ]
        return sorted(found, key=lambda entry: (entry.position, entry.id))

    def get_board(self, board_id: str) -> BoardEntry | None:
        """The board's index entry, or None."""
        value = plain_entry(self._boards, board_id)
        return _board(board_id, value) if value is not None else None

    def index_board(self, entry: BoardEntry) -> None:
        """Write (or correct) a board's index entry."""
        upsert_fields(
            self._boards,
            entry.id,
            {
                "title": entry.title,
                "project": entry.project,
                "position": entry.position,
                "created_at": entry.created_at,
            },
        )

    def unindex_board(self, board_id: str) -> None:
        """Drop a board's index entry, if there is one."""
        if board_id in self._boards:
            del self._boards[board_id]

    # -- the layout before project documents -------------------------------------

    def is_split(self) -> bool:
        """Whether every project already lives in a document of its own."""
        return self._layout.get("projects") == SPLIT_LAYOUT

    def mark_split(self) -> None:
        """Record that the split is done, and drop what the older layout kept here."""
        with self.doc.transaction():
            for entries in (self._projects, self._boards):
                for key in list(entries.keys()):
                    value = entries.get(key)
                    if isinstance(value, Map) and "members" in value:
                        del value["members"]
            self._layout["projects"] = SPLIT_LAYOUT

    def legacy_members(self, project_id: str) -> dict[str, str]:
        """A project's members as the older layout kept them here."""
        return _roles(plain_entry(self._projects, project_id))

    def legacy_board_roles(self, board_id: str) -> dict[str, str]:
        """A board's narrowed roles as the older layout kept them here."""
        return _roles(plain_entry(self._boards, board_id))


def _project(project_id: str, value: dict[str, Any]) -> ProjectEntry:
    return ProjectEntry(
        project_id,
        text(value.get("name")),
        text(value.get("position")),
        text(value.get("created_at")),
    )


def _board(board_id: str, value: dict[str, Any]) -> BoardEntry:
    return BoardEntry(
        board_id,
        text(value.get("title")) or board_id,
        text(value.get("project")),
        text(value.get("position")),
        text(value.get("created_at")),
    )


def _roles(value: dict[str, Any] | None) -> dict[str, str]:
    members = value.get("members") if value is not None else None
    if not isinstance(members, dict):
        return {}
    return {user: role for user, role in members.items() if isinstance(role, str)}


def upsert_fields(entries: Map[Any], key: str, fields: dict[str, str]) -> None:
    """Write ``fields`` into the map entry ``key`` (made if missing), only where they differ."""
    value = entries.get(key)
    if not isinstance(value, Map):
        entries[key] = Map(fields)
        return
    for name, field in fields.items():
        if value.get(name) != field:
            value[name] = field


def plain_entries(entries: Map[Any]) -> list[tuple[str, dict[str, Any]]]:
    """The map's entries that are maps (or plain objects), as plain dicts."""
    found: list[tuple[str, dict[str, Any]]] = []
    for key in list(entries.keys()):
        value = plain_entry(entries, key)
        if value is not None:
            found.append((key, value))
    return found


def plain_entry(entries: Map[Any], key: str) -> dict[str, Any] | None:
    """One entry of the map as a plain dict, or None if it is not a map."""
    value = entries.get(key)
    if isinstance(value, Map):
        plain = value.to_py()
        return plain if isinstance(plain, dict) else None
    return value if isinstance(value, dict) else None


def text(value: object) -> str:
    """``value`` if it is a string, else the empty string (tolerant reads)."""
    return value if isinstance(value, str) else ""


def after(position: str | None) -> str:
    """A position after ``position`` (None or an invalid key: the first)."""
    return position_between(position if position and is_valid_position(position) else None, None)
