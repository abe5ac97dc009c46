"""Realistic board edits as Yjs update bytes, from several pycrdt documents.

Every history here is a causal chain: the documents sync with each other between
edits, so each update may depend on updates of other clients that came before it.
"""

from __future__ import annotations

import random
from typing import Any

from pycrdt import Array, Doc, Map, Text


class Writer:
    """One client's document, recording each local transaction's update."""

    def __init__(self, client_id: int) -> None:
        self.doc: Doc[Any] = Doc(client_id=client_id)
        self.updates: list[bytes] = []
        self._sub = self.doc.observe(lambda event: self.updates.append(event.update))

    def pull(self, other: Writer) -> None:
        """Bring in everything ``other`` has that this document lacks."""
        missing = other.doc.get_update(self.doc.get_state())
        before = len(self.updates)
        self.doc.apply_update(missing)
        # Applying remote bytes fires the observer too; those are not this writer's edits.
        del self.updates[before:]

    def edit(self, action: Any) -> bytes | None:
        """Run ``action(doc)`` in one transaction; return its update (None if nothing changed)."""
        before = len(self.updates)
        with self.doc.transaction():
            action(self.doc)
        return self.updates[-1] if len(self.updates) > before else None


def _tasks(doc: Doc[Any]) -> Map[Any]:
    return doc.get("tasks", type=Map)


def _random_edit(rng: random.Random, doc: Doc[Any]) -> None:
    tasks = _tasks(doc)
    columns = doc.get("columns", type=Array)
    notes = doc.get("notes", type=Text)
    choice = rng.randrange(8)
    keys = list(tasks.keys())
    if choice == 0 or not keys:
        task_id = f"t{rng.randrange(20)}"
        tasks[task_id] = Map({"title": rng.choice(["Write docs", "Fix bug", "Ship é"]), "pts": 3})
    elif choice == 1:
        task = tasks[rng.choice(keys)]
        if isinstance(task, Map):
            task["status"] = rng.choice(["todo", "doing", "done"])
        else:
            tasks[rng.choice(keys)] = rng.randrange(100)
    elif choice == 2:
        del tasks[rng.choice(keys)]
    elif choice == 3:
        notes.insert(rng.randrange(len(notes) + 1), rng.choice(["hi ", "note", "ok", "x"]))
    elif choice == 4 and len(notes) > 0:
        start = rng.randrange(len(notes))
        del notes[start : min(len(notes), start + rng.randrange(1, 4))]
    elif choice == 5:
        columns.append(rng.choice(["Todo", "Doing", "Done", 7]))
    elif choice == 6 and len(columns) > 0:
        del columns[rng.randrange(len(columns))]
    else:
        task = tasks[rng.choice(keys)]
        if isinstance(task, Map):
            task["body"] = Text(rng.choice(["a", "long body text", ""]))
        else:
            tasks["k"] = rng.randrange(3)


def causal_history(
    rng: random.Random, *, writers: int = 3, edits: int = 6, sync_chance: float = 0.6
) -> list[bytes]:
    """Incremental updates of ``writers`` clients editing one board, in causal order."""
    clients = [Writer(rng.randrange(1, 2**31)) for _ in range(writers)]
    history: list[bytes] = []
    while len(history) < edits:
        writer = rng.choice(clients)
        for other in clients:
            if other is not writer and rng.random() < sync_chance:
                writer.pull(other)
        update = writer.edit(lambda doc: _random_edit(rng, doc))
        if update is not None:
            history.append(update)
    return history


def one_writer_overwrites() -> list[bytes]:
    """The smallest known out-of-order drop: one writer sets k1=1, k2=2, k1=3."""
    writer = Writer(1)
    history = []
    for key, value in (("k1", 1), ("k2", 2), ("k1", 3)):
        update = writer.edit(lambda doc, k=key, v=value: doc.get("m", type=Map).__setitem__(k, v))
        assert update is not None
        history.append(update)
    return history
