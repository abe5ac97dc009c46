"""One project's document: its settings, its members and their roles, and its boards.

Each project is a Yjs document of its own, hosted, stored, activated and recovered
like a board, under the id :func:`project_doc_id` (``boardcast.project.<id>``: board
ids never start with ``boardcast.``, so the two can never collide)::

    settings: Y.Map  {id, name, position, created_at}
    members:  Y.Map  user id -> role
    boards:   Y.Map  board id -> Y.Map {title, position, created_at, members?}

A board's ``members`` narrows the roles of the project's members on that board
(docs/security.md). Only the server writes this document (the REST API, through
server-side transactions); members may open it read-only over a socket. A project
whose ``settings`` hold no ``created_at`` does not exist (never made, or deleted).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pycrdt import Doc, Map

from crdt.positions import is_valid_position, position_between
from crdt.project_list import user_of_list
from crdt.projects import (
    DIRECTORY_BOARD,
    BoardEntry,
    ProjectEntry,
    plain_entries,
    plain_entry,
    text,
)

#: Ids of project documents start with this; board ids may not (gateway/ws.py, REST).
PROJECT_PREFIX = "boardcast.project."


def project_doc_id(project_id: str) -> str:
    """The document id a project is hosted and stored under."""
    return PROJECT_PREFIX + project_id


def project_of_doc(doc_id: str) -> str | None:
    """The project a document id names, or None if it is not a project document."""
    if doc_id.startswith(PROJECT_PREFIX) and len(doc_id) > len(PROJECT_PREFIX):
        return doc_id[len(PROJECT_PREFIX) :]
    return None


def served_read_only(doc_id: str) -> bool:
    """Whether ``doc_id`` is one of the server's documents that clients may read (never
    write) over a socket: the directory, a project's document, a person's list."""
    return (
        doc_id == DIRECTORY_BOARD
        or project_of_doc(doc_id) is not None
        or user_of_list(doc_id) is not None
    )


@dataclass(frozen=True, slots=True)
class MemberStanding:
    """One user's role in a project, and the boards that narrow it."""

    role: str | None
    narrowed: dict[str, str]


class ProjectDoc:
    """Typed access to a project document; every method is one Yjs transaction."""

    def __init__(self, doc: Doc[Any]) -> None:
        self.doc = doc
        self._settings: Map[Any] = doc.get("settings", type=Map)
        self._members: Map[Any] = doc.get("members", type=Map)
        self._boards: Map[Any] = doc.get("boards", type=Map)

    # -- the project ------------------------------------------------------------------

    def exists(self) -> bool:
        """Whether the project exists (was created and not deleted)."""
        return isinstance(self._settings.get("created_at"), str)

    def entry(self) -> ProjectEntry | None:
        """The project's id, name, position and creation time; None if it does not exist."""
        if not self.exists():
            return None
        return ProjectEntry(
            text(self._settings.get("id")),
            text(self._settings.get("name")),
            text(self._settings.get("position")),
            text(self._settings.get("created_at")),
        )

    def create(self, entry: ProjectEntry, owner: str | None) -> None:
        """Make the project (with ``owner`` as its owner, in the same transaction)."""
        with self.doc.transaction():
            for key, value in (
                ("id", entry.id),
                ("name", entry.name),
                ("position", entry.position),
                ("created_at", entry.created_at),
            ):
                if self._settings.get(key) != value:
                    self._settings[key] = value
            if owner is not None and self._members.get(owner) != "owner":
                self._members[owner] = "owner"

    def rename(self, name: str) -> None:
        """Rename the project."""
        if self._settings.get("name") != name:
            self._settings["name"] = name

    def delete(self, deleted_at: str) -> None:
        """Delete the project: settings, members and boards go (the history keeps them);
        ``deleted_at`` stays, so nothing made from an older copy brings it back."""
        with self.doc.transaction():
            for entries in (self._settings, self._members, self._boards):
                for key in list(entries.keys()):
                    del entries[key]
            self._settings["deleted_at"] = deleted_at

    def adopt(
        self,
        entry: ProjectEntry,
        members: dict[str, str],
        boards: list[tuple[BoardEntry, dict[str, str]]],
    ) -> bool:
        """Fill a project document never written, from an older directory's copy.

        False (and nothing written) if the document was ever written: a project
        made, changed or deleted since is never overwritten by the older copy.
        """
        if len(self._settings) or len(self._members) or len(self._boards):
            return False
        with self.doc.transaction():
            self.create(entry, None)
            for user, role in members.items():
                self._members[user] = role
            for board, narrowed in boards:
                self.put_board(board, narrowed)
        return True

    # -- members ------------------------------------------------------------------------

    def members(self) -> dict[str, str]:
        """The members and their roles."""
        plain = self._members.to_py() or {}
        return {user: role for user, role in plain.items() if isinstance(role, str)}

    def set_member(self, user: str, role: str) -> None:
        """Give ``user`` ``role`` in the project."""
        if self._members.get(user) != role:
            self._members[user] = role

    def remove_member(self, user: str) -> bool:
        """Take ``user`` out of the project (and out of its boards' narrowings)."""
        if user not in self._members:
            return False
        with self.doc.transaction():
            del self._members[user]
            for board_id in list(self._boards.keys()):
                roles = self._board_map(board_id).get("members")
                if isinstance(roles, Map) and user in roles:
                    del roles[user]
        return True

    def standing(self, user: str) -> MemberStanding:
        """``user``'s role and the boards that narrow it (what access checks need)."""
        role = self._members.get(user)
        narrowed: dict[str, str] = {}
        for board_id, value in plain_entries(self._boards):
            roles = value.get("members")
            if isinstance(roles, dict) and isinstance(roles.get(user), str):
                narrowed[board_id] = roles[user]
        return MemberStanding(role if isinstance(role, str) else None, narrowed)

    # -- boards -------------------------------------------------------------------------

    def boards(self) -> list[BoardEntry]:
        """The project's boards, in list order."""
        project = text(self._settings.get("id"))
        found = [self._entry(project, key, value) for key, value in plain_entries(self._boards)]
        return sorted(found, key=lambda entry: (entry.position, entry.id))

    def get_board(self, board_id: str) -> BoardEntry | None:
        """One board's entry, or None."""
        value = plain_entry(self._boards, board_id)
        if value is None:
            return None
        return self._entry(text(self._settings.get("id")), board_id, value)

    def add_board(self, board_id: str, title: str, created_at: str) -> BoardEntry:
        """List a board at the end (an existing entry is kept as it is)."""
        existing = self.get_board(board_id)
        if existing is not None:
            return existing
        boards = self.boards()
        last = boards[-1].position if boards else None
        position = position_between(last if last and is_valid_position(last) else None, None)
        self._boards[board_id] = Map(
            {"title": title, "position": position, "created_at": created_at}
        )
        entry = self.get_board(board_id)
        assert entry is not None
        return entry

    def put_board(self, entry: BoardEntry, narrowed: dict[str, str]) -> None:
        """Write a board's entry exactly (a migration copying an older layout)."""
        with self.doc.transaction():
            value = self._boards.get(entry.id)
            if not isinstance(value, Map):
                value = Map()
                self._boards[entry.id] = value
            for key, field in (
                ("title", entry.title),
                ("position", entry.position),
                ("created_at", entry.created_at),
            ):
                if value.get(key) != field:
                    value[key] = field
            if narrowed:
                roles = value.get("members")
                if not isinstance(roles, Map):
                    roles = Map()
                    value["members"] = roles
                for user, role in narrowed.items():
                    if roles.get(user) != role:
                        roles[user] = role

    def rename_board(self, board_id: str, title: str) -> bool:
        """Retitle a board's entry; False if the project has no such board."""
        value = self._boards.get(board_id)
        if not isinstance(value, Map):
            return False
        if value.get("title") != title:
            value["title"] = title
        return True

    def delete_board(self, board_id: str) -> bool:
        """Unlist a board; False if the project had no such board."""
        if board_id not in self._boards:
            return False
        del self._boards[board_id]
        return True

    def board_roles(self, board_id: str) -> dict[str, str]:
        """The roles a board narrows its project's members to, by user."""
        value = plain_entry(self._boards, board_id)
        roles = value.get("members") if value is not None else None
        if not isinstance(roles, dict):
            return {}
        return {user: role for user, role in roles.items() if isinstance(role, str)}

    def narrow_board_role(self, board_id: str, user: str, role: str | None) -> None:
        """Narrow ``user``'s role on one board (None: take the project's again)."""
        board = self._board_map(board_id)
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

    # -- internals ----------------------------------------------------------------------

    def _board_map(self, board_id: str) -> Map[Any]:
        value = self._boards.get(board_id)
        if not isinstance(value, Map):
            raise KeyError(board_id)
        return value

    @staticmethod
    def _entry(project: str, board_id: str, value: dict[str, Any]) -> BoardEntry:
        return BoardEntry(
            board_id,
            text(value.get("title")) or board_id,
            project,
            text(value.get("position")),
            text(value.get("created_at")),
        )
