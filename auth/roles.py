"""Roles and what each may do: one table, read by every path (WebSocket, REST, CLI).

A user's role is given per project (the directory's ``members`` map). A board may
narrow it (its own ``members`` map): the effective role on a board is the lower of
the two, so a board can hide itself from some of a project's members but never
lift anyone above their project role. Server administrators (``admin`` accounts)
act as owners everywhere.
"""

from __future__ import annotations

import enum


class Role(enum.IntEnum):
    """Project roles, ordered: each may do everything the ones below it may."""

    NONE = 0  # not a member: nothing, not even the board's existence
    VIEWER = 1
    COMMENTER = 2
    EDITOR = 3
    ADMIN = 4
    OWNER = 5

    @classmethod
    def parse(cls, name: str) -> Role:
        """The role named ``name`` (``"viewer"`` ... ``"owner"``); ``ValueError`` otherwise."""
        try:
            role = cls[name.upper()]
        except KeyError:
            raise ValueError(f"unknown role {name[:40]!r}") from None
        if role is Role.NONE:
            raise ValueError("'none' is not a role one can be given")
        return role

    @property
    def label(self) -> str:
        """The role's name as stored and shown: ``"editor"``."""
        return self.name.lower()


#: The roles a member can be given, lowest first.
ASSIGNABLE = tuple(role.label for role in Role if role is not Role.NONE)


class Action(enum.StrEnum):
    """Everything a caller can ask for that a role decides."""

    READ = "read"  # open a board, read it, see who is there, export
    COMMENT = "comment"  # add comments to tasks
    WRITE = "write"  # change a board: tasks, columns, its document over the socket
    CREATE_BOARD = "create-board"  # add a board to the project, import one
    RENAME_PROJECT = "rename-project"
    DELETE_BOARD = "delete-board"  # sensitive: needs a fresh second factor
    MANAGE_MEMBERS = "manage-members"  # sensitive: add, remove, change roles
    DELETE_PROJECT = "delete-project"  # sensitive


#: The lowest role allowed each action.
MINIMUM_ROLE: dict[Action, Role] = {
    Action.READ: Role.VIEWER,
    Action.COMMENT: Role.COMMENTER,
    Action.WRITE: Role.EDITOR,
    Action.CREATE_BOARD: Role.EDITOR,
    Action.RENAME_PROJECT: Role.ADMIN,
    Action.DELETE_BOARD: Role.ADMIN,
    Action.MANAGE_MEMBERS: Role.ADMIN,
    Action.DELETE_PROJECT: Role.OWNER,
}

#: Actions that need a second factor verified recently (see docs/security.md).
SENSITIVE = frozenset({Action.DELETE_BOARD, Action.MANAGE_MEMBERS, Action.DELETE_PROJECT})


def role_named(label: str | None) -> Role:
    """The role a stored label names; ``Role.NONE`` for none or one no role has (a careless
    client may have written anything into the directory)."""
    if not label:
        return Role.NONE
    try:
        return Role.parse(label)
    except ValueError:
        return Role.NONE


def allows(role: Role, action: Action) -> bool:
    """Whether ``role`` may do ``action``."""
    return role >= MINIMUM_ROLE[action]


def effective_role(project_role: Role, board_role: Role | None) -> Role:
    """A member's role on a board: the project's, narrowed by the board's own entry if any."""
    if board_role is None:
        return project_role
    return min(project_role, board_role)


def read_only(role: Role) -> bool:
    """Whether a socket session in ``role`` may only read the board's document.

    Commenters comment through REST: a Yjs update cannot be told apart into "only a
    comment" without trusting the client, so their sockets are read-only too.
    """
    return not allows(role, Action.WRITE)


def may_grant(granter: Role, granted: Role) -> bool:
    """Whether someone in ``granter`` may give (or take away) ``granted``: never above their own."""
    return allows(granter, Action.MANAGE_MEMBERS) and granted <= granter
