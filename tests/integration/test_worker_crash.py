"""Killing the worker process mid-batch while a client writes: no event missed, none twice.

A scripted sequence of REST edits runs against the deployment while the process that runs
the analytics worker is killed with SIGKILL, several times: locally the whole ``boardcast
serve --backend local`` child (hosts, gateway and workers, restarted by the test), on Ray the
worker actor's process (restarted by Ray). Every kill is timed from the worker's committed
offset, which this test watches in the log: half land in the pause before a batch's
``handle()`` and half in the pause after it (``BOARDCAST_WORKER_BATCH_PAUSE_SECONDS``), where
a runtime that committed too early would lose the batch and one that handled without
idempotency would count it twice. At the end the analytics must count exactly what the
script did, and a replay from offset 0 must derive the very same metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from boardcast.events_cli import replay
from persistence.event_log_factory import event_log_for
from persistence.factory import open_store
from tests.conftest import serve
from tests.interop.servers import serve_process
from tests.services import TIMEOUT_SCALE
from workers.analytics_model import board_report
from workers.analytics_store import analytics_store_for

BOARD = "crash-board"
TASKS = 30
PAUSE = 0.3  # seconds before and after each handle()
BATCH = 3
KILLS = 4
COLUMNS = ("todo", "doing", "done")


def expected_columns() -> dict[int, str]:
    """Where the script leaves each task: a third stays, the rest move on, some to done."""
    return {n: "todo" if n % 3 == 0 else "done" if n % 2 == 0 else "doing" for n in range(TASKS)}


def log_offsets(data_dir: Path) -> tuple[int, int]:
    """The analytics consumer's committed offset and the log's last, read from its file."""
    path = data_dir / "events.sqlite3"
    if not path.exists():
        return 0, 0
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)) as db:
        try:
            row = db.execute("SELECT offset FROM consumers WHERE name = 'analytics'").fetchone()
            last = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
        except sqlite3.OperationalError:
            return 0, 0
    return (int(row[0]) if row else 0), (int(last[0]) if last else 0)


def committed_offset(data_dir: Path) -> int:
    return log_offsets(data_dir)[0]


@dataclass
class Deployment:
    """Where the script sends its edits, and how the worker's process is killed."""

    base: Callable[[], str]
    kill_worker: Callable[[], Awaitable[None]]
    data_dir: Path


async def call(
    http: aiohttp.ClientSession,
    deployment: Deployment,
    method: str,
    path: str,
    body: Any,
    **headers: str,
) -> tuple[int, Any]:
    """One REST call, retried (bounded) while the server is down or restarting."""
    timeout = aiohttp.ClientTimeout(10)
    for _ in range(int(600 * TIMEOUT_SCALE)):
        try:
            url = deployment.base() + path
            async with http.request(
                method, url, json=body, headers=headers, timeout=timeout
            ) as response:
                answer = await response.json(content_type=None)
                if response.status < 500:
                    return response.status, answer
        except (aiohttp.ClientError, TimeoutError, ConnectionError, ValueError):
            pass
        await asyncio.sleep(0.1)
    raise AssertionError(f"{method} {path} never succeeded")


async def script(http: aiohttp.ClientSession, deployment: Deployment) -> None:
    """The edits whose analytics are known in advance (see expected_columns)."""
    columns = f"/v1/boards/{BOARD}/columns"
    for position, column in enumerate(COLUMNS):
        body = {"name": column, "id": column, "position": f"a{position}"}
        status, answer = await call(http, deployment, "POST", columns, body)
        assert status in (201, 409), (status, answer)
    for n, final in expected_columns().items():
        # A retry with the same key after a crash returns the task the first call made.
        key = {"Idempotency-Key": f"create-task-{n}"}
        body = {"title": f"task {n}", "column": "todo"}
        status, created = await call(
            http, deployment, "POST", f"/v1/boards/{BOARD}/tasks", body, **key
        )
        assert status in (200, 201), (status, created)
        path = f"/v1/boards/{BOARD}/tasks/{created['id']}"
        # Moving a task where it already is changes nothing: retries are harmless.
        for column in {"todo": (), "doing": ("doing",), "done": ("doing", "done")}[final]:
            status, moved = await call(http, deployment, "PATCH", path, {"column": column})
            assert status == 200, (status, moved)
        await asyncio.sleep(0.05)  # a person's pace, so the kills fall among the edits


async def kill_mid_batch(deployment: Deployment, kills: int, writing: asyncio.Task[None]) -> int:
    """Kill the worker's process ``kills`` times, each timed from a commit of its offset."""
    done = 0
    seen = committed_offset(deployment.data_dir)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 300 * TIMEOUT_SCALE
    while done < kills and loop.time() < deadline:
        committed, last = log_offsets(deployment.data_dir)
        if writing.done() and committed >= last:
            break  # nothing left in flight to kill it over
        now = committed_offset(deployment.data_dir)
        if now > seen:
            # A batch was just committed; the next one is read at once and paused on.
            # Even kills: in the pause before handle(); odd: in the pause after it.
            await asyncio.sleep(PAUSE / 3 if done % 2 == 0 else PAUSE * 1.5)
            await deployment.kill_worker()
            done += 1
            await asyncio.sleep(0.2)
            seen = committed_offset(deployment.data_dir)
            continue
        seen = now
        await asyncio.sleep(0.01)
    return done


async def settled_report(deployment: Deployment, http: aiohttp.ClientSession) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 120 * TIMEOUT_SCALE
    while True:
        with contextlib.suppress(aiohttp.ClientError, TimeoutError, ConnectionError):
            async with http.get(
                f"{deployment.base()}/v1/boards/{BOARD}/analytics?days=2",
                timeout=aiohttp.ClientTimeout(10),
            ) as response:
                if response.status == 200:
                    body = await response.json()
                    if body["staleness"]["lag_events"] == 0 and body["tasks"] == TASKS:
                        return dict(body)
        assert loop.time() < deadline, "analytics never caught up"
        await asyncio.sleep(0.1)


def assert_exact(report: dict[str, Any]) -> None:
    final = expected_columns()
    counts = {c: n for c in COLUMNS if (n := sum(1 for v in final.values() if v == c))}
    done = counts["done"]
    assert report["cumulative_flow"][-1]["columns"] == counts
    assert sum(day["done"] for day in report["throughput"]) == done
    assert (report["tasks"], report["done"]) == (TASKS, done)
    assert report["lead_time"]["count"] == done
    assert report["cycle_time"]["count"] == done


async def run_crashing(deployment: Deployment) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http:
        writing = asyncio.create_task(script(http, deployment))
        killed = await kill_mid_batch(deployment, KILLS, writing)
        await asyncio.wait_for(writing, 600 * TIMEOUT_SCALE)
        assert killed == KILLS, f"only {killed} kills landed"
        # Events of updates stored just before a kill reach the log when their board next
        # loads (docs/events.md): a read loads it, as the next person to open it would.
        status, _ = await call(http, deployment, "GET", f"/v1/boards/{BOARD}/tasks", None)
        assert status == 200
        report = await settled_report(deployment, http)
    assert_exact(report)
    return report


async def replayed_report(data_dir: Path) -> dict[str, Any]:
    """Metrics derived again from offset 0 (offline), as ``boardcast events replay`` does."""
    store = open_store("sqlite", data_dir=str(data_dir))
    log = event_log_for(store)
    try:
        await replay(store, log, "analytics", 0)
        metrics = analytics_store_for(store)
        found = (await metrics.load([BOARD]))[BOARD]
        await metrics.close()
    finally:
        await log.close()
        await store.close()
    return board_report(found, today=expected_today(), days=2)


def expected_today() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).date().isoformat()


async def test_killing_serve_mid_batch_loses_and_doubles_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BOARDCAST_WORKER_BATCH_PAUSE_SECONDS", str(PAUSE))
    monkeypatch.setenv("BOARDCAST_WORKER_BATCH_SIZE", str(BATCH))
    monkeypatch.setenv("BOARDCAST_WORKER_POLL_SECONDS", "0.05")
    server = serve_process(tmp_path, "--backend", "local")
    await server.astart()

    async def kill_and_restart() -> None:
        await asyncio.to_thread(server.kill)  # SIGKILL of the whole process group
        await server.astart()

    deployment = Deployment(lambda: f"http://127.0.0.1:{server.port}", kill_and_restart, tmp_path)
    try:
        report = await run_crashing(deployment)
    finally:
        await server.astop()
    again = await replayed_report(tmp_path)
    for key in ("cumulative_flow", "throughput", "cycle_time", "lead_time", "tasks", "done"):
        assert again[key] == report[key], key


@pytest.mark.ray
async def test_killing_the_ray_worker_actor_mid_batch_loses_and_doubles_nothing(
    tmp_path: Path, ray_session: None, cluster_name: str
) -> None:
    overrides: dict[str, Any] = {
        "worker_batch_pause_seconds": PAUSE,
        "worker_batch_size": BATCH,
        "worker_poll_seconds": 0.05,
    }
    async with serve("ray", tmp_path, cluster_name=cluster_name, **overrides) as server:
        workers = server.cluster.workers  # type: ignore[attr-defined]
        pids: list[int] = []

        async def kill_actor() -> None:
            pid = int((await workers.stats.remote())["pid"])
            pids.append(pid)
            os.kill(pid, signal.SIGKILL)  # Ray restarts the actor: it resumes from its offset

        deployment = Deployment(lambda: f"http://127.0.0.1:{server.port}", kill_actor, tmp_path)
        await run_crashing(deployment)
        assert len(set(pids)) == KILLS  # a new process each time
        assert int((await workers.stats.remote())["pid"]) not in pids
