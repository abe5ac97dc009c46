"""The read model through a real server: it follows WebSocket edits and REST writes, answers
queries across boards, catches up after it was lost, and rebuilds to the same answers."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from clients.provider import BoardClient
from crdt.board import Board
from persistence.sqlite import READ_MODEL_FILENAME
from tests.conftest import serve

PEOPLE = ["ann", "bob", "cy"]


async def query(http: aiohttp.ClientSession, **params: str) -> list[dict[str, Any]]:
    """Every page of ``GET /v1/tasks`` for ``params``."""
    found: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        page_params = {**params, "limit": "7", **({"cursor": cursor} if cursor else {})}
        async with http.get("/v1/tasks", params=page_params) as response:
            assert response.status == 200, await response.text()
            page = await response.json()
        found += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return found


def held_by(clients: dict[str, BoardClient], assignee: str) -> set[tuple[str, str]]:
    """What the boards themselves say ``assignee`` holds."""
    return {
        (board_id, task.id)
        for board_id, client in clients.items()
        for task in Board(client.doc).tasks()
        if assignee in task.assignees
    }


async def test_the_read_model_follows_a_burst_of_live_edits_and_rebuilds_the_same(
    tmp_path: Path,
) -> None:
    rng = random.Random(11)
    async with serve("local", tmp_path) as server:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{server.port}") as http:
            clients = {
                board_id: BoardClient(server.url, board_id) for board_id in ("alpha", "beta")
            }
            for client in clients.values():
                await client.connect()
                await client.synced()
            boards = {board_id: Board(client.doc) for board_id, client in clients.items()}
            for board in boards.values():
                board.add_column("To do", column_id="todo")
                board.add_column("Done", column_id="done")
            made: dict[str, list[str]] = {board_id: [] for board_id in boards}
            for step in range(150):
                board_id = rng.choice(list(boards))
                board, ids = boards[board_id], made[board_id]
                action = rng.random()
                if action < 0.5 or not ids:
                    ids.append(
                        board.add_task(
                            f"task {step}",
                            "todo",
                            assignees=[rng.choice(PEOPLE)],
                            due=f"2026-12-{rng.randint(1, 28):02d}",
                        )
                    )
                elif action < 0.7:
                    board.update_task(rng.choice(ids), assignees=[rng.choice(PEOPLE)])
                elif action < 0.85:
                    board.move_task(rng.choice(ids), "done")
                else:
                    board.delete_task(ids.pop(rng.randrange(len(ids))))
                if step % 10 == 0:
                    await asyncio.sleep(0)
            for client in clients.values():
                await client.persisted()

            async def converged() -> bool:
                for person in PEOPLE:
                    rows = await query(http, assignee=person)
                    if {(r["board_id"], r["task_id"]) for r in rows} != held_by(clients, person):
                        return False
                return True

            for _ in range(200):
                if await converged():
                    break
                await asyncio.sleep(0.05)
            else:
                pytest.fail("the read model never matched the boards")
            before = {person: await query(http, assignee=person) for person in PEOPLE}
            # Ordered by due date, then board and task id.
            for rows in before.values():
                keys = [(r["due"] or "~", r["board_id"], r["task_id"]) for r in rows]
                assert keys == sorted(keys)
            done = await query(http, column="done")
            assert {(r["board_id"], r["task_id"]) for r in done} == {
                (board_id, task.id)
                for board_id, board in boards.items()
                for task in board.tasks()
                if task.column == "done"
            }
            for client in clients.values():
                await client.close()

    # Lose the read model entirely, rebuild it from the boards: the same answers.
    os.remove(tmp_path / READ_MODEL_FILENAME)
    command = [sys.executable, "-m", "boardcast", "reindex", "--data-dir", str(tmp_path)]
    done = await asyncio.to_thread(
        subprocess.run, command, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "reindexed" in done.stdout and "of 2 boards" in done.stdout, done.stdout
    async with serve("local", tmp_path) as server:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{server.port}") as http:
            after = {person: await query(http, assignee=person) for person in PEOPLE}
    strip = {
        person: [{k: v for k, v in r.items() if k != "version"} for r in rows]
        for person, rows in before.items()
    }
    assert {
        person: [{k: v for k, v in r.items() if k != "version"} for r in rows]
        for person, rows in after.items()
    } == strip


async def test_a_query_can_wait_for_the_version_a_write_returned(tmp_path: Path) -> None:
    async with serve("local", tmp_path) as server:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{server.port}") as http:
            tasks = [{"title": f"t{n}", "column": "c", "assignees": ["ann"]} for n in range(20)]
            async with http.post("/v1/boards/ryw/tasks/bulk", json={"tasks": tasks}) as response:
                version = (await response.json())["version"]
            params = {"board": "ryw", "min_version": str(version), "assignee": "ann"}
            assert len(await query(http, **params)) == 20
            async with http.get(
                "/v1/tasks", params={"board": "ryw", "min_version": "999999", "wait": "0.2"}
            ) as response:
                assert response.status == 503
                assert response.headers["Retry-After"] == "1"


async def test_a_board_whose_rows_were_lost_catches_up_when_it_loads(tmp_path: Path) -> None:
    async with serve("local", tmp_path) as server:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{server.port}") as http:
            tasks = [{"title": f"t{n}", "column": "c", "labels": ["ops"]} for n in range(5)]
            async with http.post("/v1/boards/lost/tasks/bulk", json={"tasks": tasks}):
                pass
            assert len(await query(http, label="ops")) == 5
    os.remove(tmp_path / READ_MODEL_FILENAME)
    async with serve("local", tmp_path) as server:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{server.port}") as http:
            assert await query(http, label="ops") == []
            # Opening the board (any read or client) brings its rows back, soon after.
            async with http.get("/v1/boards/lost"):
                pass
            for _ in range(250):
                if len(await query(http, label="ops")) == 5:
                    break
                await asyncio.sleep(0.02)
            else:
                pytest.fail("the board's rows never came back")


async def test_cached_answers_are_never_older_than_the_read_model(tmp_path: Path) -> None:
    async with serve("local", tmp_path) as server:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{server.port}") as http:

            async def ask() -> tuple[str, list[str]]:
                params = {"label": "hot", "limit": "200"}
                async with http.get("/v1/tasks", params=params) as response:
                    assert response.status == 200
                    titles = [row["title"] for row in (await response.json())["items"]]
                    return response.headers["Boardcast-Cache"], titles

            async with http.post(
                "/v1/boards/cached/tasks/bulk",
                json={"tasks": [{"title": "one", "column": "c", "labels": ["hot"]}]},
            ) as response:
                version = (await response.json())["version"]
            await query(http, board="cached", min_version=str(version))
            assert await ask() == ("miss", ["one"])
            assert await ask() == ("hit", ["one"])
            # A write, through a live client: the cached answer is not served again.
            async with BoardClient(server.url, "cached") as client:
                await client.synced()
                board = Board(client.doc)
                board.add_task("two", board.columns()[0].id, labels=["hot"])
                await client.persisted()
            for _ in range(200):
                state, titles = await ask()
                assert state == "miss" or titles == ["one"], "a stale answer after a write"
                if sorted(titles) == ["one", "two"]:
                    break
                await asyncio.sleep(0.02)
            else:
                pytest.fail("the new task never showed")
            assert (await ask())[0] == "hit"
