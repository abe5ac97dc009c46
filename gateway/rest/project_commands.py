"""What project, board-listing and membership requests do: plain functions of a document.

Each runs as one server-side transaction on the actor of the document it names
(``Cluster.run``): a project's own document (:mod:`crdt.project_doc`), the
directory index (:mod:`crdt.projects`), or a person's list
(:mod:`crdt.project_list`). On Ray they travel pickled by name, so they stay
module-level and take and return plain values. A function that finds the request
cannot apply returns a :class:`~gateway.rest.commands.Refusal` before changing
anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from auth.roles import Role, effective_role, may_grant, role_named
from crdt.board import Board
from crdt.project_doc import ProjectDoc
from crdt.project_list import apply_listing, listed_projects
from crdt.projects import BoardEntry, Directory, ProjectEntry, now_text
from gateway.rest.commands import Refusal, precondition


@dataclass(frozen=True, slots=True)
class LegacyProject:
    """One project as a directory of the older layout held it, with its members."""

    entry: ProjectEntry
    members: dict[str, str]
    boards: tuple[tuple[BoardEntry, dict[str, str]], ...]


@dataclass(frozen=True, slots=True)
class ProjectListing:
    """What a project document says that the directory index and members' lists copy."""

    entry: ProjectEntry
    members: dict[str, str]
    boards: tuple[BoardEntry, ...]

    def for_member(self, user: str) -> dict[str, Any] | None:
        """What ``user``'s list shows of the project (None: they are not in it)."""
        role = self.members.get(user)
        if role is None:
            return None
        return {
            "name": self.entry.name,
            "position": self.entry.position,
            "role": role,
            "created_at": self.entry.created_at,
            "boards": [
                {"id": item.id, "title": item.title, "position": item.position}
                for item in self.boards
            ],
        }


# -- representations -----------------------------------------------------------


def project_json(entry: ProjectEntry) -> dict[str, Any]:
    return {"id": entry.id, "name": entry.name, "created_at": entry.created_at}


def board_entry_json(entry: BoardEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "name": entry.title,
        "project_id": entry.project,
        "created_at": entry.created_at,
    }


def _missing() -> Refusal:
    return Refusal("not-found", "no such project")


# -- on a project's document ---------------------------------------------------


def create_project(
    board: Board, entry: ProjectEntry, owner: str | None
) -> dict[str, Any] | Refusal:
    project = ProjectDoc(board.doc)
    if project.exists():
        return Refusal("conflict", f"project {entry.id!r} already exists")
    # In the same transaction: there is never a project without an owner.
    project.create(entry, owner)
    return project_json(entry)


def get_project(board: Board) -> dict[str, Any] | Refusal:
    entry = ProjectDoc(board.doc).entry()
    return project_json(entry) if entry is not None else _missing()


def project_entry(board: Board) -> ProjectEntry | None:
    """The project's settings, for the directory index (None: it does not exist)."""
    return ProjectDoc(board.doc).entry()


def rename_project(board: Board, name: str, if_match: str | None) -> dict[str, Any] | Refusal:
    project = ProjectDoc(board.doc)
    entry = project.entry()
    if entry is None:
        return _missing()
    refused = precondition(project_json(entry), if_match)
    if refused is not None:
        return refused
    project.rename(name)
    renamed = project.entry()
    assert renamed is not None
    return project_json(renamed)


def delete_project(board: Board, if_match: str | None) -> list[str] | Refusal:
    """Delete a project without boards; the members it had (their lists change)."""
    project = ProjectDoc(board.doc)
    entry = project.entry()
    if entry is None:
        return _missing()
    refused = precondition(project_json(entry), if_match)
    if refused is not None:
        return refused
    if project.boards():
        return Refusal("conflict", "the project still has boards: delete them first")
    members = sorted(project.members())
    project.delete(now_text())
    return members


def list_project_boards(board: Board) -> list[dict[str, Any]] | Refusal:
    project = ProjectDoc(board.doc)
    if not project.exists():
        return _missing()
    return [board_entry_json(entry) for entry in project.boards()]


def add_project_board(
    board: Board, board_id: str, title: str, created_at: str
) -> dict[str, Any] | Refusal:
    """List a board in the project (a board already listed stays as it is)."""
    project = ProjectDoc(board.doc)
    if not project.exists():
        return _missing()
    return board_entry_json(project.add_board(board_id, title, created_at))


def rename_project_board(board: Board, board_id: str, title: str) -> None:
    ProjectDoc(board.doc).rename_board(board_id, title)


def remove_project_board(board: Board, board_id: str) -> None:
    ProjectDoc(board.doc).delete_board(board_id)


def project_listing(board: Board) -> ProjectListing | None:
    """The project as its index entry and its members' lists show it (None: no project)."""
    project = ProjectDoc(board.doc)
    entry = project.entry()
    if entry is None:
        return None
    return ProjectListing(entry, project.members(), tuple(project.boards()))


def member_standing(board: Board, user: str) -> tuple[bool, str | None, dict[str, str]]:
    """Whether the project exists, ``user``'s role in it, and the boards narrowing it."""
    project = ProjectDoc(board.doc)
    if not project.exists():
        return False, None, {}
    standing = project.standing(user)
    return True, standing.role, standing.narrowed


# -- members -------------------------------------------------------------------


def list_members(board: Board) -> list[dict[str, str]] | Refusal:
    project = ProjectDoc(board.doc)
    if not project.exists():
        return _missing()
    members = project.members()
    return [{"id": user, "user": user, "role": members[user]} for user in sorted(members)]


def _membership_refusal(
    members: dict[str, str], user: str, new_role: Role | None, granter: Role
) -> Refusal | None:
    """Why ``granter`` may not give ``user`` ``new_role`` (None: remove), if they may not."""
    current = role_named(members.get(user))
    if current > granter or (new_role is not None and not may_grant(granter, new_role)):
        return Refusal("forbidden", f"the {granter.label} role may not grant or change that role")
    owners = [name for name, label in members.items() if role_named(label) is Role.OWNER]
    if current is Role.OWNER and owners == [user] and new_role is not Role.OWNER:
        return Refusal("conflict", "a project keeps at least one owner")
    return None


def set_member(
    board: Board, user: str, role: str, granter: int = Role.OWNER
) -> dict[str, str] | Refusal:
    project = ProjectDoc(board.doc)
    if not project.exists():
        return _missing()
    refused = _membership_refusal(project.members(), user, Role.parse(role), Role(granter))
    if refused is not None:
        return refused
    project.set_member(user, role)
    return {"id": user, "user": user, "role": role}


def remove_member(board: Board, user: str, granter: int = Role.OWNER) -> Refusal | None:
    project = ProjectDoc(board.doc)
    if not project.exists():
        return _missing()
    members = project.members()
    if user not in members:
        return Refusal("not-found", f"{user!r} is not a member")
    refused = _membership_refusal(members, user, None, Role(granter))
    if refused is not None:
        return refused
    project.remove_member(user)
    return None


def board_members(board: Board, board_id: str) -> list[dict[str, str]] | Refusal:
    """The project's members with their role on one of its boards."""
    project = ProjectDoc(board.doc)
    if project.get_board(board_id) is None:
        return Refusal("not-found", f"no board {board_id!r}")
    members = project.members()
    narrowed = project.board_roles(board_id)
    return [
        {
            "id": user,
            "user": user,
            "role": effective_role(
                role_named(members[user]),
                role_named(narrowed[user]) if user in narrowed else None,
            ).label,
        }
        for user in sorted(members)
    ]


def narrow_board_member(
    board: Board, board_id: str, user: str, role: str | None, granter: int
) -> dict[str, str] | Refusal | None:
    """Narrow ``user``'s role on a board (``role`` None: back to the project's)."""
    project = ProjectDoc(board.doc)
    if project.get_board(board_id) is None:
        return Refusal("not-found", f"no board {board_id!r}")
    members = project.members()
    if user not in members:
        return Refusal("not-found", f"{user!r} is not a member of the board's project")
    current = role_named(members[user])
    if current > Role(granter):
        return Refusal("forbidden", "the role of someone above you is not yours to narrow")
    project.narrow_board_role(board_id, user, role)
    if role is None:
        return None
    return {"id": user, "user": user, "role": effective_role(current, Role.parse(role)).label}


# -- on the directory index ----------------------------------------------------


def list_projects_of(board: Board, visible: frozenset[str] | None) -> list[dict[str, Any]]:
    """The indexed projects a caller may see (``visible`` None: all of them)."""
    return [
        project_json(entry)
        for entry in Directory(board.doc).projects()
        if visible is None or entry.id in visible
    ]


def next_project_position(board: Board) -> str:
    return Directory(board.doc).next_project_position()


def reindex_project(board: Board, project_id: str, listing: ProjectListing | None) -> None:
    """Make the index say what the project's document says (None: the project is gone)."""
    directory = Directory(board.doc)
    kept = {item.id for item in listing.boards} if listing is not None else set()
    for entry in directory.boards(project_id):
        if entry.id not in kept:
            directory.unindex_board(entry.id)
    if listing is None:
        directory.unindex_project(project_id)
        return
    directory.index_project(listing.entry)
    for item in listing.boards:
        directory.index_board(item)


def board_project(board: Board, board_id: str) -> str | None:
    """The project that lists ``board_id``, or None."""
    entry = Directory(board.doc).get_board(board_id)
    return entry.project if entry is not None and entry.project else None


# -- on a person's list --------------------------------------------------------


def write_listing(board: Board, project_id: str, listing: dict[str, Any] | None) -> None:
    apply_listing(board.doc, project_id, listing)


def read_listing(board: Board) -> list[dict[str, str]]:
    return listed_projects(board.doc)


# -- splitting a directory of the older layout ---------------------------------


def legacy_projects(board: Board) -> list[LegacyProject] | None:
    """The directory's projects as the older layout kept them; None once it was split."""
    directory = Directory(board.doc)
    if directory.is_split():
        return None
    return [
        LegacyProject(
            entry,
            directory.legacy_members(entry.id),
            tuple(
                (item, directory.legacy_board_roles(item.id)) for item in directory.boards(entry.id)
            ),
        )
        for entry in directory.projects()
    ]


def adopt_project(board: Board, legacy: LegacyProject) -> bool:
    """Make a project document from the older directory's copy, unless it was ever written."""
    return ProjectDoc(board.doc).adopt(legacy.entry, legacy.members, list(legacy.boards))


def mark_split(board: Board) -> None:
    Directory(board.doc).mark_split()
