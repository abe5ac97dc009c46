"""Moving boards between stores: one self-describing file per board.

A board file is a msgpack map::

    {"format": "boardcast-board", "version": 1, "board_id": str,
     "exported_at": float, "at": float | None, "state": bytes}

``state`` is the board's whole document as one Yjs update (``Doc.get_update()``); ``at`` is
the past time it was read at, or None for the board as it stood at ``exported_at``. Only the
state travels: the log and the history of the source store stay behind.

Importing appends the state to the board's log as one update, which the board applies when it
loads. Yjs merges it: into an empty board it recreates the document; into an existing one it
adds what the file has and the board lacks (it never removes anything). A board served at that
moment does not see the import until it is loaded again, and may compact it away: import into
boards that no server has open.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import msgpack

from persistence.history import merge_state
from persistence.store import BoardStore

#: The ``format`` field of every board file.
FORMAT = "boardcast-board"
#: The newest file version this module writes and reads.
VERSION = 1
#: The name ending of board files in a directory export.
SUFFIX = ".boardcast"
# Most file systems cap a name at 255 bytes.
_MAX_NAME = 255


class NotABoardFile(ValueError):
    """The bytes are not a board file this version of Boardcast can read."""


@dataclass(frozen=True)
class BoardFile:
    """One exported board: its id, when and as of when it was read, and its Yjs state."""

    board_id: str
    exported_at: float
    at: float | None
    state: bytes

    def encode(self) -> bytes:
        """Return the file's bytes."""
        packed: bytes = msgpack.packb(
            {
                "format": FORMAT,
                "version": VERSION,
                "board_id": self.board_id,
                "exported_at": self.exported_at,
                "at": self.at,
                "state": self.state,
            },
            use_bin_type=True,
        )
        return packed

    @classmethod
    def decode(cls, data: bytes) -> BoardFile:
        """Parse a board file; raises NotABoardFile if it is not one this version reads."""
        try:
            fields: Any = msgpack.unpackb(data, raw=False)
        except Exception as error:  # msgpack raises several unrelated types
            raise NotABoardFile(f"not msgpack: {error}") from error
        if not isinstance(fields, dict) or fields.get("format") != FORMAT:
            raise NotABoardFile(f"not a {FORMAT!r} file")
        version = fields.get("version")
        if version != VERSION:
            raise NotABoardFile(f"{FORMAT} version {version!r}; this Boardcast reads {VERSION}")
        board_id, exported_at = fields.get("board_id"), fields.get("exported_at")
        at, state = fields.get("at"), fields.get("state")
        if (
            not isinstance(board_id, str)
            or not isinstance(exported_at, int | float)
            or not (at is None or isinstance(at, int | float))
            or not isinstance(state, bytes)
        ):
            raise NotABoardFile(f"a {FORMAT} file with missing or mistyped fields")
        return cls(board_id, float(exported_at), None if at is None else float(at), state)


async def board_state(store: BoardStore, board_id: str, at: float | None = None) -> bytes:
    """Return the board's document as one Yjs update: now, or as it was at ``at``."""
    if at is not None:
        return await store.state_at(board_id, at)
    stored = await store.load(board_id)
    updates = [entry.update for entry in stored.updates]
    return await asyncio.to_thread(merge_state, stored.snapshot, updates)


async def export_board(store: BoardStore, board_id: str, at: float | None = None) -> bytes:
    """Return a board file of the board, now or as it was at ``at`` (unix seconds)."""
    state = await board_state(store, board_id, at)
    return BoardFile(board_id, time.time(), at, state).encode()


async def import_board(store: BoardStore, data: bytes, board_id: str | None = None) -> str:
    """Merge a board file into the store, under ``board_id`` or the file's own; return the id.

    Raises NotABoardFile if the file or its Yjs state cannot be read; nothing is written then.
    """
    board = await _read_checked(data)
    target = board_id if board_id is not None else board.board_id
    await store.append({target: [board.state]})
    return target


async def _read_checked(data: bytes) -> BoardFile:
    board = BoardFile.decode(data)
    try:
        # A state that does not apply would stop the board from ever loading again.
        await asyncio.to_thread(merge_state, board.state, [])
    except ValueError as error:
        raise NotABoardFile(f"board {board.board_id!r}: its state is not a Yjs update") from error
    return board


def file_name(board_id: str) -> str:
    """The name of the board's file in a directory export: its id, percent-encoded."""
    name = quote(board_id, safe="") + SUFFIX
    if len(name.encode()) > _MAX_NAME:
        # The id is inside the file; the name only has to be unique.
        name = hashlib.sha256(board_id.encode()).hexdigest() + SUFFIX
    return name


async def export_all(store: BoardStore, directory: str | os.PathLike[str]) -> list[Path]:
    """Write one board file per stored board into ``directory``; return the paths written."""
    folder = Path(directory)
    await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
    written: list[Path] = []
    for board_id in await store.list_boards():
        path = folder / file_name(board_id)
        await asyncio.to_thread(_write_atomically, path, await export_board(store, board_id))
        written.append(path)
    return written


async def import_all(store: BoardStore, directory: str | os.PathLike[str]) -> list[str]:
    """Import every board file in ``directory`` (in name order); return the board ids.

    Every file is checked before the first is imported, so a bad file imports nothing.
    """
    paths = sorted(Path(directory).glob("*" + SUFFIX))
    # Two passes rather than holding every file in memory: a store can be gigabytes.
    for path in paths:
        try:
            await _read_checked(await asyncio.to_thread(path.read_bytes))
        except NotABoardFile as error:
            raise NotABoardFile(f"{path}: {error}") from error
    return [await import_board(store, await asyncio.to_thread(path.read_bytes)) for path in paths]


def _write_atomically(path: Path, data: bytes) -> None:
    # A crash mid-write leaves the old file or none, never half a board.
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)
