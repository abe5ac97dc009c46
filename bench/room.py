"""What the board room's integrity checks cost per update: ``python -m bench room``.

Feeds recorded updates straight into :class:`crdt.room.BoardRoom` (no sockets, no
actors) and reports microseconds per update, median of the repeats, as JSON:

- ``edits``: title edits on a 1,000-task board, the hot path (pycrdt's state vector
  is trusted: one native diff per update);
- ``edits_while_holding``: the same while another connection has an update held,
  so every update is checked against the clocks the room stores;
- ``rebuild``: one rebuild of the 1,000-task board from its base and a journal of
  500 edits (the most a board holds between snapshots by default), what a
  failed apply costs;
- ``consistency_check``: one whole-board check (encode, load, replay) of the same.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pycrdt import Doc, Map

from crdt.protocol import sync_update
from crdt.room import BoardRoom

SNAPSHOT_EVERY = 500  # the host's default: a journal holds at most this many changes


def board_updates(tasks: int, edits: int) -> tuple[list[bytes], list[bytes]]:
    """Updates creating ``tasks`` tasks, then ``edits`` title edits."""
    writer: Doc[Any] = Doc()
    updates: list[bytes] = []
    writer.observe(lambda event: updates.append(event.update))
    board = writer.get("tasks", type=Map)
    for n in range(tasks):
        board[f"t{n}"] = Map({"title": f"task {n}", "column": "todo"})
    created = list(updates)
    updates.clear()
    for n in range(edits):
        board[f"t{n % tasks}"]["title"] = f"edited {n}"
    return created, list(updates)


def loaded_room(created: list[bytes]) -> BoardRoom:
    """A room holding the created board as its base, as after loading a snapshot."""
    room = BoardRoom("bench")
    for update in created:
        room.receive("loader", sync_update(update), 0.0)
    room.checkpoint(room.state(), room.journal_position)
    return room


def per_update_us(room: BoardRoom, frames: list[bytes]) -> float:
    start = time.perf_counter()
    for frame in frames:
        room.receive("editor", frame, 0.0)
    return (time.perf_counter() - start) / len(frames) * 1e6


def once_us(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return (time.perf_counter() - start) * 1e6


def held_update() -> bytes:
    """An update whose dependency the room never gets: it stays held."""
    other: Doc[Any] = Doc()
    updates: list[bytes] = []
    other.observe(lambda event: updates.append(event.update))
    other.get("tasks", type=Map)["x"] = 1
    other.get("tasks", type=Map)["y"] = 2
    return updates[1]


def measure(tasks: int, edits: int, repeat: int) -> dict[str, Any]:
    created, edited = board_updates(tasks, edits)
    frames = [sync_update(update) for update in edited]
    results: dict[str, list[float]] = {
        "edits": [],
        "edits_while_holding": [],
        "rebuild": [],
        "consistency_check": [],
    }
    for _ in range(repeat):
        results["edits"].append(per_update_us(loaded_room(created), frames))
        room = loaded_room(created)
        room.receive("holder", sync_update(held_update()), 0.0)
        results["edits_while_holding"].append(per_update_us(room, frames))
        between_snapshots = loaded_room(created)
        per_update_us(between_snapshots, frames[:SNAPSHOT_EVERY])
        results["rebuild"].append(once_us(between_snapshots.rebuild))
        results["consistency_check"].append(once_us(between_snapshots.document.verify))
    return {
        "tasks": tasks,
        "edits": edits,
        "repeat": repeat,
        "unit": "microseconds (per update for edits, per call otherwise)",
        "median": {name: round(statistics.median(v), 2) for name, v in results.items()},
        "runs": results,
    }


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench room", description=__doc__)
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--edits", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", type=Path, help="write the JSON here (default: stdout)")
    args = parser.parse_args(argv)
    report = json.dumps(measure(args.tasks, args.edits, args.repeat), indent=2)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report + "\n")
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
