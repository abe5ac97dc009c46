"""The read model in MongoDB: collection ``task_index`` beside the board store's collections.

Documents are ``{board_id, task_id, ...TaskRow fields, title_key, due_key}``, unique on
(board_id, task_id); ``task_index_boards`` keeps each board's newest indexed version.
A write replaces a row only with one read at the same or a newer board version.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pymongo import ASCENDING, DeleteOne, UpdateOne

from persistence.read_model import IndexWrite, TaskFilter, TaskIndex, TaskRow, matches

if TYPE_CHECKING:
    from persistence.mongo import MongoStore

# The document of task_index_boards that counts writes (no board has this id).
_GENERATION = "\x00generation"
_SORT_FIELD = {"due": "due_key", "updated_at": "updated_at", "title": "title_key", "board": None}


class MongoTaskIndex(TaskIndex):
    """The read model in the board store's MongoDB database."""

    def __init__(self, store: MongoStore) -> None:
        self._store = store
        self._ready = False

    async def _collections(self) -> tuple[Any, Any]:
        database = await self._store.database()
        rows, boards = database["task_index"], database["task_index_boards"]
        if not self._ready:
            await rows.create_index([("board_id", ASCENDING), ("task_id", ASCENDING)], unique=True)
            await rows.create_index([("due_key", ASCENDING)])
            await rows.create_index([("project", ASCENDING), ("due_key", ASCENDING)])
            await rows.create_index([("assignees", ASCENDING)])
            self._ready = True
        return rows, boards

    async def write(self, writes: Sequence[IndexWrite]) -> None:
        if not writes:
            return
        rows, boards = await self._collections()
        for write in writes:
            operations: list[Any] = []
            if write.replace:
                await rows.delete_many(
                    {"board_id": write.board_id, "version": {"$lte": write.version}}
                )
            for task_id in write.deletes:
                operations.append(
                    DeleteOne(
                        {
                            "board_id": write.board_id,
                            "task_id": task_id,
                            "version": {"$lte": write.version},
                        }
                    )
                )
            for row in write.upserts:
                document = {
                    **row.to_json(),
                    "title_key": row.title.casefold(),
                    "due_key": row.due if row.due is not None else "~",
                }
                # Only over an older (or no) row: a newer one makes the upsert collide.
                operations.append(
                    UpdateOne(
                        {
                            "board_id": row.board_id,
                            "task_id": row.task_id,
                            "version": {"$lte": row.version},
                        },
                        {"$set": document},
                        upsert=True,
                    )
                )
            if operations:
                try:
                    await rows.bulk_write(operations, ordered=False)
                except Exception as exc:  # a newer row won: the duplicate key is expected
                    if "E11000" not in str(exc) and "duplicate key" not in str(exc):
                        raise
            await boards.update_one(
                {"board_id": write.board_id},
                {"$max": {"version": write.version}},
                upsert=True,
            )
        await boards.update_one({"board_id": _GENERATION}, {"$inc": {"version": 1}}, upsert=True)

    async def rows(self, query: TaskFilter) -> list[TaskRow]:
        rows, _ = await self._collections()
        match: dict[str, Any] = {}
        for field, value in (
            ("project", query.project),
            ("board_id", query.board),
            ("column", query.column),
        ):
            if value is not None:
                match[field] = value
        if query.assignee is not None:
            match["assignees"] = query.assignee
        if query.label is not None:
            match["labels"] = query.label
        due: dict[str, Any] = {}
        if query.due_from is not None:
            due["$gte"] = query.due_from
        if query.due_to is not None:
            due["$lte"] = query.due_to
        if due:
            match["due"] = {"$ne": None, **due}
        if query.text is not None:
            pattern = re.escape(query.text)
            match["$or"] = [
                {"title": {"$regex": pattern, "$options": "i"}},
                {"description": {"$regex": pattern, "$options": "i"}},
            ]
        first = _SORT_FIELD[query.sort]
        keys = [key for key in (first, "board_id", "task_id") if key is not None]
        if query.after is not None:
            values = list(query.after)[-len(keys) :]
            alternatives: list[dict[str, Any]] = []
            for index, key in enumerate(keys):
                clause: dict[str, Any] = {keys[i]: values[i] for i in range(index)}
                clause[key] = {"$gt": values[index]}
                alternatives.append(clause)
            match = {"$and": [match, {"$or": alternatives}]} if match else {"$or": alternatives}
        cursor = rows.find(match, {"_id": 0}).sort([(key, ASCENDING) for key in keys])
        found = [_row(document) for document in await cursor.limit(query.limit + 1).to_list()]
        return [row for row in found if matches(row, query)]

    async def board_version(self, board_id: str) -> int:
        _, boards = await self._collections()
        found = await boards.find_one({"board_id": board_id})
        return int(found["version"]) if found is not None else 0

    async def generation(self) -> int:
        return await self.board_version(_GENERATION)

    async def close(self) -> None:
        return None


def _row(document: dict[str, Any]) -> TaskRow:
    return TaskRow(
        document["board_id"],
        document["task_id"],
        document.get("project", ""),
        document.get("title", ""),
        document.get("column", ""),
        document.get("position", ""),
        document.get("description", ""),
        tuple(document.get("assignees", ())),
        tuple(document.get("labels", ())),
        document.get("due"),
        document.get("created_at", ""),
        document.get("updated_at", ""),
        int(document.get("version", 0)),
    )
