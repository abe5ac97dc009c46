"""The gateway's bounded memory of roles, so an access check rarely costs an actor call.

Two things are remembered: which project lists a board (from the directory index),
and one person's standing in one project (their role there and the boards that
narrow it, from the project's document). Membership changes are announced on the
revocation feed with the person's user id; every gateway's watcher hands those ids
to :meth:`RoleCache.forget_user` before it checks that person's open sockets, so a
changed role is never read from here. A generation counter per person keeps a read
that was in flight while the change arrived from storing the old answer. Entries
also expire after ``ttl_seconds``: the bound on staleness if a board's listing moves
(boards are listed and unlisted without a per-person announcement). Sans-I/O.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Standing:
    """One person in one project: whether the project exists, their role, narrowed boards."""

    exists: bool
    role: str | None
    narrowed: dict[str, str]


class RoleCache:
    """A least-recently-used map with a time-to-live, invalidated per person."""

    def __init__(
        self,
        *,
        max_entries: int = 10_000,
        ttl_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_entries = max(1, max_entries)
        self.ttl_seconds = ttl_seconds
        self._clock = clock
        self._standings: OrderedDict[tuple[str, str], tuple[float, Standing]] = OrderedDict()
        self._boards: OrderedDict[str, tuple[float, str]] = OrderedDict()
        self._by_user: dict[str, set[str]] = {}
        self._generations: dict[str, int] = {}
        self._board_generation = 0

    def __len__(self) -> int:
        return len(self._standings) + len(self._boards)

    # -- a person in a project -----------------------------------------------------------

    def generation(self, user: str) -> int:
        """Take this before reading a standing; hand it to :meth:`store_standing`."""
        return self._generations.get(user, 0)

    def standing(self, user: str, project: str) -> Standing | None:
        """The remembered standing, or None (not remembered, or expired)."""
        key = (user, project)
        found = self._standings.get(key)
        if found is None:
            return None
        stored_at, value = found
        if self._clock() - stored_at > self.ttl_seconds:
            self._drop_standing(key)
            return None
        self._standings.move_to_end(key)
        return value

    def store_standing(self, user: str, project: str, value: Standing, generation: int) -> None:
        """Remember a standing read while the person's generation was ``generation``."""
        if self._generations.get(user, 0) != generation:
            return  # the person changed meanwhile: what was read may be old
        key = (user, project)
        self._standings[key] = (self._clock(), value)
        self._standings.move_to_end(key)
        self._by_user.setdefault(user, set()).add(project)
        while len(self._standings) > self.max_entries:
            oldest = next(iter(self._standings))
            self._drop_standing(oldest)

    def forget_user(self, user: str) -> None:
        """A person's roles changed somewhere: forget every standing of theirs."""
        self._generations[user] = self._generations.get(user, 0) + 1
        for project in self._by_user.pop(user, set()):
            self._standings.pop((user, project), None)
        if len(self._generations) > 4 * self.max_entries:
            # Generations of people with nothing stored are not needed: a reader that
            # took one before this reset stores nothing (its number no longer matches).
            self._generations = {user: self._generations[user]}

    # -- which project lists a board -------------------------------------------------------

    def board_generation(self) -> int:
        """Take this before reading a board's project; hand it to :meth:`store_board_project`."""
        return self._board_generation

    def board_project(self, board: str) -> str | None:
        """The remembered project of a board, or None (not remembered, or expired)."""
        found = self._boards.get(board)
        if found is None:
            return None
        stored_at, project = found
        if self._clock() - stored_at > self.ttl_seconds:
            del self._boards[board]
            return None
        self._boards.move_to_end(board)
        return project

    def store_board_project(self, board: str, project: str, generation: int) -> None:
        """Remember which project lists a board (only listed boards are remembered)."""
        if generation != self._board_generation:
            return
        self._boards[board] = (self._clock(), project)
        self._boards.move_to_end(board)
        while len(self._boards) > self.max_entries:
            del self._boards[next(iter(self._boards))]

    def forget_board(self, board: str) -> None:
        """A board was unlisted here: forget its project."""
        self._board_generation += 1
        self._boards.pop(board, None)

    def _drop_standing(self, key: tuple[str, str]) -> None:
        self._standings.pop(key, None)
        projects = self._by_user.get(key[0])
        if projects is not None:
            projects.discard(key[1])
            if not projects:
                del self._by_user[key[0]]
