"""The project directory: which projects exist and which boards each one holds.

It is a Yjs document of its own, hosted and stored like a board under the id
:data:`DIRECTORY_BOARD`, so the board app in the browser (``clients/web``) lists
projects and boards live from it, and the REST API writes the same document::

    projects: Y.Map  project id -> Y.Map {name, position, created_at}
    boards:   Y.Map  board id   -> Y.Map {title, project, position, created_at, members?}

Each project has ``members`` (user id -> role); a board's ``members`` narrows the
roles of its project's members on that board (docs/security.md).

``position`` orders the lists (fractional-index keys, :mod:`crdt.positions`). Reads
are tolerant of what a careless client wrote; only ``Y.Map`` entries are edited.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pycrdt import Doc, Map

from crdt.positions import is_valid_position, position_between

#: The id the directory document is stored and hosted under.
DIRECTORY_BOARD = "boardcast.directory"


@dataclass(frozen=True, slots=True)
class ProjectEntry:
    """A project as the directory lists it."""

    id: str
    name: str
    position: str
    created_at: str


@dataclass(frozen=True, slots=True)
class BoardEntry:
    """A board as the directory lists it."""

    id: str
    title: str
    project: str
    position: str
    created_at: str


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Directory:
    """Typed access to the directory document; every method is one Yjs transaction."""

    def __init__(self, doc: Doc[Any], *, clock: Callable[[], str] = _now) -> None:
        self.doc = doc
        self._projects: Map[Any] = doc.get("projects", type=Map)
        self._boards: Map[Any] = doc.get("boards", type=Map)
        self._clock = clock

    # -- projects --------------------------------------------------------------

    def projects(self) -> list[ProjectEntry]:
        """Every project, in list order."""
        found = [
            ProjectEntry(
                key,
                _text(value.get("name")),
                _text(value.get("position")),
                _text(value.get("created_at")),
            )
            for key, value in _entries(self._projects)
        ]
        return sorted(found, key=lambda entry: (entry.position, entry.id))

    def get_project(self, project_id: str) -> ProjectEntry | None:
        """The project, or None if the directory has no such one."""
        value = _entry(self._projects, project_id)
        if value is None:
            return None
        return ProjectEntry(
            project_id,
            _text(value.get("name")),
            _text(value.get("position")),
            _text(value.get("created_at")),
        )

    def add_project(self, project_id: str, name: str) -> ProjectEntry:
        """Add a project at the end of the list; ``ValueError`` if the id is taken."""
        if project_id in self._projects:
            raise ValueError(f"project {project_id!r} already exists")
        existing = self.projects()
        position = _after(existing[-1].position if existing else None)
        created = self._clock()
        with self.doc.transaction():
            self._projects[project_id] = Map(
                {"name": name, "position": position, "created_at": created}
            )
        return ProjectEntry(project_id, name, position, created)

    def rename_project(self, project_id: str, name: str) -> None:
        """Rename a project; ``KeyError`` if there is none."""
        value = self._editable(self._projects, project_id)
        if value.get("name") != name:
            value["name"] = name

    def delete_project(self, project_id: str) -> None:
        """Remove a project from the directory; ``KeyError`` if there is none."""
        if project_id not in self._projects:
            raise KeyError(project_id)
        del self._projects[project_id]

    # -- members ---------------------------------------------------------------

    def members(self, project_id: str) -> dict[str, str]:
        """The project's members and their roles; ``KeyError`` if there is no such project."""
        value = _entry(self._projects, project_id)
        if value is None:
            raise KeyError(project_id)
        members = value.get("members")
        if not isinstance(members, dict):
            return {}
        return {user: role for user, role in members.items() if isinstance(role, str)}

    def set_member(self, project_id: str, user: str, role: str) -> None:
        """Give ``user`` ``role`` in the project; ``KeyError`` if there is no such project."""
        project = self._editable(self._projects, project_id)
        members = project.get("members")
        if not isinstance(members, Map):
            members = Map()
            project["members"] = members
        if members.get(user) != role:
            members[user] = role

    def remove_member(self, project_id: str, user: str) -> bool:
        """Take ``user`` out of the project; False if they were not in it."""
        project = self._editable(self._projects, project_id)
        members = project.get("members")
        if not isinstance(members, Map) or user not in members:
            return False
        del members[user]
        return True

    def board_roles(self, board_id: str) -> dict[str, str]:
        """Roles a board narrows its project's to, by user; ``KeyError`` if no such board."""
        value = _entry(self._boards, board_id)
        if value is None:
            raise KeyError(board_id)
        roles = value.get("members")
        if not isinstance(roles, dict):
            return {}
        return {user: role for user, role in roles.items() if isinstance(role, str)}

    def narrow_board_role(self, board_id: str, user: str, role: str | None) -> None:
        """Narrow ``user``'s role on one board (None: take the project's again)."""
        board = self._editable(self._boards, board_id)
        roles = board.get("members")
        if role is None:
            if isinstance(roles, Map) and user in roles:
                del roles[user]
            return
        if not isinstance(roles, Map):
            roles = Map()
            board["members"] = roles
        if roles.get(user) != role:
            roles[user] = role

    # -- boards ----------------------------------------------------------------

    def boards(self, project_id: str | None = None) -> list[BoardEntry]:
        """The boards (of one project, if given), in list order."""
        found = [
            self._board_entry(key, value)
            for key, value in _entries(self._boards)
            if project_id is None or _text(value.get("project")) == project_id
        ]
        return sorted(found, key=lambda entry: (entry.position, entry.id))

    def get_board(self, board_id: str) -> BoardEntry | None:
        """The board's directory entry, or None."""
        value = _entry(self._boards, board_id)
        return self._board_entry(board_id, value) if value is not None else None

    def add_board(self, board_id: str, title: str, project_id: str) -> BoardEntry:
        """List a board in a project, at the end; ``ValueError`` if the id is taken."""
        if board_id in self._boards:
            raise ValueError(f"board {board_id!r} already exists")
        existing = self.boards(project_id)
        position = _after(existing[-1].position if existing else None)
        created = self._clock()
        with self.doc.transaction():
            self._boards[board_id] = Map(
                {
                    "title": title,
                    "project": project_id,
                    "position": position,
                    "created_at": created,
                }
            )
        return BoardEntry(board_id, title, project_id, position, created)

    def rename_board(self, board_id: str, title: str) -> None:
        """Retitle a board's entry; ``KeyError`` if there is none."""
        value = self._editable(self._boards, board_id)
        if value.get("title") != title:
            value["title"] = title

    def delete_board(self, board_id: str) -> None:
        """Remove a board from the directory; ``KeyError`` if there is none."""
        if board_id not in self._boards:
            raise KeyError(board_id)
        del self._boards[board_id]

    # -- internals -------------------------------------------------------------

    @staticmethod
    def _board_entry(board_id: str, value: dict[str, Any]) -> BoardEntry:
        return BoardEntry(
            board_id,
            _text(value.get("title")) or board_id,
            _text(value.get("project")),
            _text(value.get("position")),
            _text(value.get("created_at")),
        )

    @staticmethod
    def _editable(entries: Map[Any], key: str) -> Map[Any]:
        value = entries.get(key)
        if not isinstance(value, Map):
            raise KeyError(key)
        return value


def _entries(entries: Map[Any]) -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    for key in list(entries.keys()):
        value = _entry(entries, key)
        if value is not None:
            found.append((key, value))
    return found


def _entry(entries: Map[Any], key: str) -> dict[str, Any] | None:
    value = entries.get(key)
    if isinstance(value, Map):
        plain = value.to_py()
        return plain if isinstance(plain, dict) else None
    return value if isinstance(value, dict) else None


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _after(position: str | None) -> str:
    return position_between(position if position and is_valid_position(position) else None, None)
