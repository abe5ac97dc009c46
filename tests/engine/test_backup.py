"""Backing up a running deployment and restoring it elsewhere, with the real command.

A ``boardcast serve`` process (auth required) takes writes from real clients that wait for
the server's acknowledgements; ``boardcast backup`` runs while one of them keeps writing;
the server stops; ``boardcast restore`` fills a new data directory (and, for MongoDB, a new
database); a new server on it must serve every update acknowledged before the backup
began, let the user log in with their password, accept the API token issued before, and
converge with clients that kept a copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from pycrdt import Map

from clients.provider import BoardClient
from gateway.auth import open_auth_service
from tests.interop.servers import BoardcastProcess, boardcast_command
from tests.persistence_servers import mongo_server, mongo_url  # noqa: F401 - fixtures
from tests.services import TIMEOUT_SCALE, free_port

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "a long enough password"
BOARDS = ("backup-a", "backup-b", "backup-c")
COMMAND_TIMEOUT = 120 * TIMEOUT_SCALE


@dataclass
class Deployment:
    """Where a deployment keeps its data: a data directory and a store URL."""

    data_dir: Path
    store: str = "sqlite"
    env: dict[str, str] = field(default_factory=dict)

    def flags(self) -> list[str]:
        return ["--data-dir", str(self.data_dir), "--store", self.store]


def run_command(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``boardcast ARGS`` as an operator would; its output is in the result."""
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [*boardcast_command(), *args],
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        env=environment,
        check=False,
    )


@contextlib.asynccontextmanager
async def running(deployment: Deployment) -> AsyncIterator[BoardcastProcess]:
    server = BoardcastProcess(
        "serve",
        port=free_port(),
        extra_args=["--backend", "local", "--auth", "required", *deployment.flags()],
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTHONPATH", str(ROOT))
        await asyncio.to_thread(server.start)
    try:
        yield server
    finally:
        await asyncio.to_thread(server.stop)


async def log_in(port: int) -> str:
    """Alice's password login against the running server; her access token."""
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"http://127.0.0.1:{port}/v1/auth/login",
            json={"username": "alice", "password": PASSWORD},
        ) as response,
    ):
        assert response.status == 200, await response.text()
        return str((await response.json())["access_token"])


async def write_acknowledged(url: str, board: str, token: str, keys: list[str]) -> None:
    """Write ``keys`` into ``board`` and wait until the server says they are durable."""
    async with BoardClient(url, board, params={"token": token}) as client:
        await client.synced(timeout=20 * TIMEOUT_SCALE)
        tasks = client.doc.get("tasks", type=Map)
        for key in keys:
            tasks[key] = key
        await client.persisted(timeout=20 * TIMEOUT_SCALE)


async def board_keys(url: str, board: str, token: str) -> set[str]:
    async with BoardClient(url, board, params={"token": token}, ack=False) as reader:
        await reader.synced(timeout=30 * TIMEOUT_SCALE)
        return set(reader.doc.get("tasks", type=Map).keys())


class Writer:
    """Keeps writing one board while the backup runs; counts what was acknowledged when."""

    def __init__(self, url: str, board: str, token: str) -> None:
        self.client = BoardClient(url, board, params={"token": token})
        self.sent: list[tuple[int, str]] = []  # (update count, key)

    def acknowledged(self) -> set[str]:
        done = self.client.persisted_seq
        return {key for count, key in self.sent if count <= done}

    async def run(self, stop: asyncio.Event) -> None:
        await self.client.connect()
        await self.client.synced(timeout=20 * TIMEOUT_SCALE)
        tasks = self.client.doc.get("tasks", type=Map)
        number = 0
        while not stop.is_set() and number < 5000:
            key = f"steady-{number}"
            tasks[key] = number
            self.sent.append((self.client.updates_sent, key))
            number += 1
            await asyncio.sleep(0.05)  # few enough commits that SQLite does not checkpoint
        await self.client.persisted(timeout=20 * TIMEOUT_SCALE)
        await self.client.close()


def make_accounts(deployment: Deployment) -> str:
    """Alice (an administrator, with a password) and a scoped editor token on one board."""
    service = open_auth_service(str(deployment.data_dir), store_url=deployment.store)
    try:
        alice = service.create_user("alice", PASSWORD, admin=True)
        scope = {"board": BOARDS[0], "role": "editor", "grant": "operator"}
        _, token = service.issue_api_token(alice, scope, ttl_seconds=86400)
    finally:
        with contextlib.suppress(Exception):
            service.store.close()
    return token


async def back_up_and_restore(
    source: Deployment, target: Deployment, archive: Path, *, backup_flags: tuple[str, ...] = ()
) -> None:
    api_token = await asyncio.to_thread(make_accounts, source)
    expected: dict[str, set[str]] = {}
    async with running(source) as server:
        token = await log_in(server.port)
        for number, board in enumerate(BOARDS):
            keys = [f"{board}-{n}" for n in range(10 + number)]
            await write_acknowledged(server.url, board, token, keys)
            expected[board] = set(keys)
        steady = Writer(server.url, BOARDS[1], token)
        stop = asyncio.Event()
        writing = asyncio.create_task(steady.run(stop))
        async with asyncio.timeout(30 * TIMEOUT_SCALE):
            while len(steady.acknowledged()) < 10:
                await asyncio.sleep(0.02)
        before_backup = steady.acknowledged()
        wal = source.data_dir / "boardcast.sqlite3-wal"
        if source.store == "sqlite":
            # Live: what was acknowledged sits in the write-ahead log, not yet in the file.
            assert wal.exists() and wal.stat().st_size > 0
        made = await asyncio.to_thread(
            run_command, "backup", str(archive), *backup_flags, *source.flags()
        )
        during = len(steady.sent)
        stop.set()
        await writing
        assert made.returncode == 0, made.stdout + made.stderr
        assert during > len(before_backup), "the writer did not write while the backup ran"
        expected[BOARDS[1]] |= before_backup

    restored = await asyncio.to_thread(run_command, "restore", str(archive), *target.flags())
    assert restored.returncode == 0, restored.stdout + restored.stderr

    async with running(target) as server:
        token = await log_in(server.port)  # the password still works
        for board in BOARDS:
            present = await board_keys(server.url, board, token)
            lost = expected[board] - present
            assert not lost, f"{board}: {len(lost)} acknowledged updates lost: {sorted(lost)[:5]}"
        # The token issued before the backup opens its board for writing.
        await write_acknowledged(server.url, BOARDS[0], api_token, ["after-restore"])
        # A client that kept its copy converges with the restored board.
        async with BoardClient(server.url, BOARDS[2], params={"token": token}) as kept:
            await kept.synced(timeout=20 * TIMEOUT_SCALE)
            kept.doc.get("tasks", type=Map)["kept"] = "kept"
            await kept.persisted(timeout=20 * TIMEOUT_SCALE)
            fresh = await board_keys(server.url, BOARDS[2], token)
            assert fresh == set(kept.doc.get("tasks", type=Map).keys())
            assert fresh == expected[BOARDS[2]] | {"kept"}


async def test_a_running_sqlite_deployment_restores_elsewhere(tmp_path: Path) -> None:
    source = Deployment(tmp_path / "source")
    target = Deployment(tmp_path / "restored")
    await back_up_and_restore(source, target, tmp_path / "deployment.tar.gz")
    # A second restore into the same, now non-empty, directory is refused.
    again = await asyncio.to_thread(
        run_command, "restore", str(tmp_path / "deployment.tar.gz"), *target.flags()
    )
    assert again.returncode == 1 and "not empty" in again.stdout, again.stdout


async def test_a_running_mongodb_deployment_restores_into_another_database(
    tmp_path: Path,
    mongo_url: str,  # noqa: F811 - fixture
) -> None:
    source = Deployment(tmp_path / "source", store=mongo_url)
    target = Deployment(tmp_path / "restored", store=mongo_url + "_restored")
    try:
        await back_up_and_restore(source, target, tmp_path / "deployment.tar.gz")
    finally:
        import pymongo

        client: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(target.store)
        with contextlib.suppress(Exception):
            client.drop_database(client.get_default_database().name)
        client.close()


async def test_a_backup_without_keys_restores_once_the_key_file_is_put_back(
    tmp_path: Path,
) -> None:
    source = Deployment(tmp_path / "source")
    target = Deployment(tmp_path / "restored")
    archive = tmp_path / "no-keys.tar.gz"
    await asyncio.to_thread(make_accounts, source)
    async with running(source) as server:
        token = await log_in(server.port)
        await write_acknowledged(server.url, BOARDS[0], token, ["sealed"])
    made = await asyncio.to_thread(
        run_command, "backup", str(archive), "--no-keys", *source.flags()
    )
    assert made.returncode == 0 and "without keys" in made.stdout, made.stdout + made.stderr
    refused = await asyncio.to_thread(run_command, "restore", str(archive), *target.flags())
    assert refused.returncode == 1 and "holds no keys" in refused.stdout, refused.stdout
    assert not target.data_dir.exists() or not any(target.data_dir.iterdir())
    # The operator puts the key file (kept apart) in place, then restores.
    key_file = target.data_dir / "keys" / "at-rest.json"
    key_file.parent.mkdir(parents=True)
    key_file.write_bytes((source.data_dir / "keys" / "at-rest.json").read_bytes())
    restored = await asyncio.to_thread(run_command, "restore", str(archive), *target.flags())
    assert restored.returncode == 0, restored.stdout + restored.stderr
    async with running(target) as server:
        token = await log_in(server.port)
        assert await board_keys(server.url, BOARDS[0], token) == {"sealed"}
