"""A test extension that records durable changes in files, so other processes can read them.

On Ray, ``on_change`` runs inside the board host actors; a test reads what they saw
from ``CHANGES_DIR/<board id>.jsonl``.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from actors.extensions import Change

CHANGES_DIR = Path(tempfile.gettempdir()) / "boardcast-test-changes"


class ChangesToFiles:
    """Appends one JSON line per durable change, and per snapshot, to the board's file."""

    async def on_change(self, change: Change) -> None:
        CHANGES_DIR.mkdir(exist_ok=True)
        line = {
            "version": change.version,
            "updates": change.updates,
            "events": [type(event).__name__ for event in change.events],
        }
        with open(CHANGES_DIR / f"{change.board_id}.jsonl", "a") as out:
            out.write(json.dumps(line) + "\n")

    async def on_store(self, board_id: str, version: int) -> None:
        CHANGES_DIR.mkdir(exist_ok=True)
        with open(CHANGES_DIR / f"{board_id}.jsonl", "a") as out:
            out.write(json.dumps({"snapshot": version}) + "\n")


def changes_of(board_id: str) -> list[dict[str, object]]:
    """What ``ChangesToFiles`` recorded for ``board_id``."""
    path = CHANGES_DIR / f"{board_id}.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]
