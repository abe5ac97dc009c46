"""Killing the worker process mid-batch: every notification owed is in the inbox, once.

A real ``boardcast serve --backend local`` (hosts, gateway and workers in one process) is
killed with SIGKILL several times while a script assigns and moves tasks over REST; each
kill is timed from the ``notifications`` consumer's committed offset, half in the pause
before a batch's ``handle()`` and half in the pause after it
(``BOARDCAST_WORKER_BATCH_PAUSE_SECONDS``). At the end the inbox must hold exactly what the
script owes: each assignee told ``assigned`` and ``moved`` once per task.

The check itself is shown to catch what it guards: the same events handled twice by a
worker whose ids are not stable (a random part in each) fail it, while the real worker
handling them twice passes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest

import workers.notification_rules as rules
from persistence.event_log_factory import event_log_for
from persistence.factory import open_store
from persistence.notification_store_sqlite import FILENAME, SqliteNotificationStore
from tests.interop.servers import BoardcastProcess, serve_process
from tests.services import TIMEOUT_SCALE
from workers.notifications import NotificationWorker

pytestmark = pytest.mark.timeout(600)

BOARD = "crash-board"
TASKS = 18
PAUSE = 0.3
BATCH = 3
KILLS = 4
USERS = ("u-ann", "u-ben", "u-cat")


def expected() -> Counter[tuple[str, str, int]]:
    """(user, kind, task number) the script owes, once each."""
    owed: Counter[tuple[str, str, int]] = Counter()
    for n in range(TASKS):
        owed[(USERS[n % 3], "assigned", n)] += 1
        owed[(USERS[n % 3], "moved", n)] += 1
    return owed


def consumer_offsets(data_dir: Path) -> tuple[int, int]:
    """The notifications consumer's committed offset and the log's last."""
    path = data_dir / "events.sqlite3"
    if not path.exists():
        return 0, 0
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)) as db:
        try:
            row = db.execute("SELECT offset FROM consumers WHERE name = 'notifications'").fetchone()
            last = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
        except sqlite3.OperationalError:
            return 0, 0
    return (int(row[0]) if row else 0), (int(last[0]) if last else 0)


async def call(
    http: aiohttp.ClientSession,
    server: BoardcastProcess,
    method: str,
    path: str,
    body: Any,
    **headers: str,
) -> tuple[int, Any]:
    """One REST call, retried (bounded) while the server is down or restarting."""
    for _ in range(int(600 * TIMEOUT_SCALE)):
        try:
            async with http.request(
                method,
                f"http://127.0.0.1:{server.port}{path}",
                json=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(10),
            ) as response:
                answer = await response.json(content_type=None)
                if response.status < 500:
                    return response.status, answer
        except (aiohttp.ClientError, TimeoutError, ConnectionError, ValueError):
            pass
        await asyncio.sleep(0.1)
    raise AssertionError(f"{method} {path} never succeeded")


async def script(http: aiohttp.ClientSession, server: BoardcastProcess) -> dict[str, int]:
    """Create, assign and move each task; the task ids by number."""
    for position, column in enumerate(("todo", "doing")):
        body = {"name": column, "id": column, "position": f"a{position}"}
        status, _ = await call(http, server, "POST", f"/v1/boards/{BOARD}/columns", body)
        assert status in (201, 409)
    numbers: dict[str, int] = {}
    for n in range(TASKS):
        key = {"Idempotency-Key": f"task-{n}"}
        body = {"title": f"task {n}", "column": "todo"}
        status, task = await call(http, server, "POST", f"/v1/boards/{BOARD}/tasks", body, **key)
        assert status in (200, 201), task
        numbers[task["id"]] = n
        path = f"/v1/boards/{BOARD}/tasks/{task['id']}"
        # Each PATCH sets a value: repeated after a crash, it changes nothing more.
        for change in ({"assignees": [USERS[n % 3]]}, {"column": "doing"}):
            status, answer = await call(http, server, "PATCH", path, change)
            assert status == 200, answer
        await asyncio.sleep(0.05)
    return numbers


async def kill_mid_batch(server: BoardcastProcess, data_dir: Path, writing: Any) -> int:
    done = 0
    seen = consumer_offsets(data_dir)[0]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 300 * TIMEOUT_SCALE
    while done < KILLS and loop.time() < deadline:
        committed, last = consumer_offsets(data_dir)
        if writing.done() and committed >= last:
            break
        if committed > seen:
            # A batch was just committed; the next is read at once and paused on.
            await asyncio.sleep(PAUSE / 3 if done % 2 == 0 else PAUSE * 1.5)
            await asyncio.to_thread(server.kill)
            await server.astart()
            done += 1
            seen = consumer_offsets(data_dir)[0]
            continue
        seen = committed
        await asyncio.sleep(0.01)
    return done


def told(path: Path, numbers: dict[str, int]) -> Counter[tuple[str, str, int]]:
    """(user, kind, task number) of every notification in the store's file."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)) as db:
        rows = db.execute("SELECT doc FROM notifications").fetchall()

    found: Counter[tuple[str, str, int]] = Counter()
    for (doc,) in rows:
        note = json.loads(doc)
        if note["task_id"] in numbers:
            found[(note["user"], note["kind"], numbers[note["task_id"]])] += 1
    return found


def assert_each_once(found: Counter[tuple[str, str, int]]) -> None:
    """The check: every notification owed, and each exactly once."""
    missing = expected() - found
    doubled = {key: count for key, count in found.items() if count > 1}
    assert not missing, f"never told: {sorted(missing)[:5]}"
    assert not doubled, f"told twice: {sorted(doubled)[:5]}"
    assert set(found) == set(expected())


async def settled(data_dir: Path) -> None:
    deadline = asyncio.get_running_loop().time() + 120 * TIMEOUT_SCALE
    while True:
        committed, last = consumer_offsets(data_dir)
        if last and committed >= last:
            return
        assert asyncio.get_running_loop().time() < deadline, "the worker never caught up"
        await asyncio.sleep(0.1)


async def handled_twice(data_dir: Path, into: Path, *, stable: bool) -> None:
    """Every logged event handled twice (as after crashes), by the real worker or by one
    whose ids are not stable."""
    board_store = open_store("sqlite", data_dir=str(data_dir))  # its keys open the log
    log = event_log_for(board_store)
    store = SqliteNotificationStore(str(into))
    events = await log.read(0, 100_000)
    original = rules.notification_id
    if not stable:
        rules.notification_id = lambda event_id, user: f"n_{uuid.uuid4().hex}"
    try:
        for _ in range(2):
            # A fresh worker each time: what a restarted process is.
            worker = NotificationWorker(store)
            for start in range(0, len(events), BATCH):
                await worker.handle(events[start : start + BATCH])
            # The crash that matters: notifications recorded, task states not saved, so
            # the batch comes again to a worker that has not seen it.
            await _forget_every_task(into)
    finally:
        rules.notification_id = original
        await store.close()
        await log.close()
        await board_store.close()


async def _forget_every_task(path: Path) -> None:
    with contextlib.closing(sqlite3.connect(path, timeout=5)) as db:
        db.execute("DELETE FROM notification_tasks")
        db.commit()


async def test_killing_serve_mid_batch_leaves_every_notification_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BOARDCAST_WORKER_BATCH_PAUSE_SECONDS", str(PAUSE))
    monkeypatch.setenv("BOARDCAST_WORKER_BATCH_SIZE", str(BATCH))
    monkeypatch.setenv("BOARDCAST_WORKER_POLL_SECONDS", "0.05")
    data_dir = tmp_path / "data"
    server = serve_process(data_dir, "--backend", "local")
    await server.astart()
    try:
        async with aiohttp.ClientSession() as http:
            writing = asyncio.create_task(script(http, server))
            killed = await kill_mid_batch(server, data_dir, writing)
            numbers = await asyncio.wait_for(writing, 600 * TIMEOUT_SCALE)
            assert killed == KILLS, f"only {killed} kills landed"
            # Events of updates stored just before a kill reach the log when their board
            # next loads (docs/events.md): a read loads it.
            status, _ = await call(http, server, "GET", f"/v1/boards/{BOARD}/tasks", None)
            assert status == 200
            await settled(data_dir)
    finally:
        await server.astop()
    assert_each_once(told(data_dir / FILENAME, numbers))

    # The test of the test: the same log handled twice by the real worker passes the check;
    # by one whose ids are not stable, it fails it.
    await handled_twice(data_dir, tmp_path / "stable.sqlite3", stable=True)
    assert_each_once(told(tmp_path / "stable.sqlite3", numbers))
    await handled_twice(data_dir, tmp_path / "unstable.sqlite3", stable=False)
    with pytest.raises(AssertionError, match="told twice"):
        assert_each_once(told(tmp_path / "unstable.sqlite3", numbers))
