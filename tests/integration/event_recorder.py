"""A test extension that writes every change it is handed to a file, for other processes.

``on_change`` runs in the board host; a test in another process reads what it was given
from ``$BOARDCAST_TEST_CHANGES`` (one JSON line per change, fsynced before the hook
returns, so a kill -9 right after cannot lose a line). While the file named by
``$BOARDCAST_TEST_STALL`` exists, ``on_change`` hangs before writing: a consumer cut off
in the middle of its work.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

from actors.extensions import Change


class RecordChanges:
    """Appends each change (board, version, updates, origin, events) as a JSON line."""

    async def on_change(self, change: Change) -> None:
        stall = os.environ.get("BOARDCAST_TEST_STALL")
        while stall and Path(stall).exists():
            await asyncio.sleep(0.05)
        line = {
            "board": change.board_id,
            "version": change.version,
            "updates": change.updates,
            "origin": change.origin,
            "events": [event.to_dict() for event in change.events],
        }
        with open(os.environ["BOARDCAST_TEST_CHANGES"], "a") as out:
            out.write(json.dumps(line) + "\n")
            out.flush()
            os.fsync(out.fileno())


def recorded(path: Path) -> list[dict[str, Any]]:
    """The changes :class:`RecordChanges` wrote to ``path``, in order."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def handled_once(changes: list[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    """What a consumer that drops versions it already handled would act on, by version."""
    handled: dict[int, list[dict[str, Any]]] = {}
    highest = 0
    for change in changes:
        if change["version"] <= highest:
            continue
        highest = change["version"]
        handled[highest] = change["events"]
    return handled
