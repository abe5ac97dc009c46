"""The regression corpus under ``tests/corpus/``: one JSON file per minimised finding.

Each file holds the frames a hostile client would send (y-websocket sync update
frames, hex), what they trigger in pycrdt, and where the finding came from.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crdt.protocol import SyncStep2, SyncUpdate, decode_frame, sync_update

CORPUS_DIR = Path(__file__).resolve().parents[1] / "corpus"


@dataclass(frozen=True)
class CorpusCase:
    """One finding: frames in the order that triggers ``kind`` in a fresh document."""

    name: str
    kind: str
    detail: str
    frames: list[bytes]
    pycrdt: str
    found: dict[str, Any] = field(default_factory=dict)
    causal_order: list[int] | None = None

    @property
    def updates(self) -> list[bytes]:
        """The Yjs updates the frames carry, in frame order."""
        updates = []
        for frame in self.frames:
            for message in decode_frame(frame):
                assert isinstance(message, SyncUpdate | SyncStep2), message
                updates.append(message.update)
        return updates

    def to_json(self) -> dict[str, Any]:
        """The case as written to its file."""
        data: dict[str, Any] = {
            "kind": self.kind,
            "detail": self.detail,
            "pycrdt": self.pycrdt,
            "frames": [frame.hex() for frame in self.frames],
            "found": self.found,
        }
        if self.causal_order is not None:
            data["causal_order"] = self.causal_order
        return data


def case_name(kind: str, updates: list[bytes]) -> str:
    """A stable file stem: the kind and a hash of the bytes."""
    digest = hashlib.sha256(b"".join(len(u).to_bytes(4, "big") + u for u in updates))
    return f"{kind}-{digest.hexdigest()[:10]}"


def make_case(
    kind: str,
    detail: str,
    updates: list[bytes],
    *,
    pycrdt: str,
    found: dict[str, Any],
    causal_order: list[int] | None = None,
) -> CorpusCase:
    """A case whose frames carry ``updates`` as sync update messages."""
    return CorpusCase(
        name=case_name(kind, updates),
        kind=kind,
        detail=detail,
        frames=[sync_update(u) for u in updates],
        pycrdt=pycrdt,
        found=found,
        causal_order=causal_order,
    )


def save_case(case: CorpusCase, directory: Path = CORPUS_DIR) -> Path:
    """Write ``case`` to ``directory/<name>.json`` and return the path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{case.name}.json"
    path.write_text(json.dumps(case.to_json(), indent=2) + "\n")
    return path


def load_corpus(directory: Path = CORPUS_DIR, *, kinds: set[str] | None = None) -> list[CorpusCase]:
    """Every case in ``directory``, sorted by name; only ``kinds`` when given."""
    cases = []
    for path in sorted(directory.glob("*.json")):
        data = json.loads(path.read_text())
        if kinds is not None and data["kind"] not in kinds:
            continue
        cases.append(
            CorpusCase(
                name=path.stem,
                kind=data["kind"],
                detail=data["detail"],
                frames=[bytes.fromhex(frame) for frame in data["frames"]],
                pycrdt=data["pycrdt"],
                found=data.get("found", {}),
                causal_order=data.get("causal_order"),
            )
        )
    return cases
