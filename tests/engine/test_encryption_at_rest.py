"""Encryption at rest, end to end: what a real server leaves on disk, key rotation and
re-encryption across restarts, and a tampered blob answered as an unavailable board.

The store contract suite runs again against stores wrapped explicitly (SQLite, memory,
MongoDB), in ``test_encrypted_store_contract.py``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import hypothesis
import pytest
from hypothesis import strategies as st

from boardcast.keys import reencrypt, remove_key, rotate_keys, run_keys_command
from crdt.close_codes import CloseCode
from crdt.errors import DecryptionFailed
from persistence.encrypted import EncryptedStore
from persistence.factory import SQLITE_FILENAME, open_store
from persistence.keyring import EncryptionSettings, KeyRing, key_id_of, text_key_id
from persistence.read_model import IndexWrite, TaskFilter, TaskRow
from persistence.sqlite import READ_MODEL_FILENAME
from persistence.store import Record
from tests.conftest import TIMEOUT_SCALE, serve
from tests.persistence_servers import mongo_server, mongo_url  # noqa: F401 - fixtures

TITLE = "Zanzibar-quokka-7731 launch plan"
DESCRIPTION = "Negotiate the marmalade-heron clause before Friday"
COMMENT = "Quibble: the vellum-otter budget is too thin"
SECRETS = (TITLE, DESCRIPTION, COMMENT)


def needles(text: str) -> dict[str, bytes]:
    """The encodings a text could sit in on disk; its most distinctive word alone too."""
    word = max(text.split(), key=len)
    found: dict[str, bytes] = {}
    for part in (text, word):
        found[f"{part!r} utf-8"] = part.encode("utf-8")  # also how Yjs stores a string
        found[f"{part!r} utf-16-le"] = part.encode("utf-16-le")
        found[f"{part!r} utf-16-be"] = part.encode("utf-16-be")
    return found


def plaintext_on_disk(data_dir: Path, texts: tuple[str, ...] = SECRETS) -> list[str]:
    """Every (file, encoding) under ``data_dir`` that holds one of ``texts`` in the clear."""
    hits = []
    for root, _, files in os.walk(data_dir):
        for name in files:
            path = Path(root) / name
            try:
                data = path.read_bytes()
            except OSError:
                continue  # removed meanwhile (a -shm or -wal file at close)
            for text in texts:
                for label, needle in needles(text).items():
                    if needle in data:
                        hits.append(f"{path.relative_to(data_dir)}: {label}")
    return hits


def files_under(data_dir: Path) -> list[str]:
    return sorted(
        str((Path(root) / name).relative_to(data_dir))
        for root, _, files in os.walk(data_dir)
        for name in files
    )


@pytest.fixture
def encryption_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("BOARDCAST_ENCRYPTION", raising=False)
    monkeypatch.delenv("BOARDCAST_ENCRYPTION_KEY_FILE", raising=False)
    yield


async def write_secret_task(port: int, board: str = "secret-board") -> str:
    """Create a task with the distinctive title and description, comment on it; its id."""
    async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as http:
        task = {"title": TITLE, "description": DESCRIPTION, "column": "Backlog"}
        async with http.post(f"/v1/boards/{board}/tasks", json=task) as response:
            assert response.status == 201, await response.text()
            task_id = str((await response.json())["id"])
        comments = f"/v1/boards/{board}/tasks/{task_id}/comments"
        async with http.post(comments, json={"text": COMMENT}) as response:
            assert response.status == 201, await response.text()
        # More edits than snapshot_every: compaction writes snapshots and history too.
        for n in range(6):
            change = {"description": f"{DESCRIPTION} (rev {n})"}
            async with http.patch(f"/v1/boards/{board}/tasks/{task_id}", json=change) as response:
                assert response.status == 200, await response.text()
        # The read model is written in the background: wait until a text query finds it.
        word = TITLE.split()[0]

        async def indexed() -> bool:
            async with http.get("/v1/tasks", params={"q": word}) as response:
                found = await response.json()
            return [item["title"] for item in found.get("items", [])] == [TITLE]

        await wait_until_async(indexed)
    return task_id


async def wait_until_async(check: Any, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout * TIMEOUT_SCALE
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


# -- nothing readable on disk ------------------------------------------------------------


@pytest.mark.parametrize("encryption", ["on", "off"])
async def test_no_task_text_is_left_in_plaintext_under_the_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, encryption_env: None, encryption: str
) -> None:
    monkeypatch.setenv("BOARDCAST_ENCRYPTION", encryption)
    data_dir = tmp_path / "data"
    async with serve("local", data_dir, snapshot_every=3) as server:
        await write_secret_task(server.port)
        # While it runs: the write-ahead logs (-wal, -shm) of both SQLite files are there.
        during = plaintext_on_disk(data_dir)
        listed_during = files_under(data_dir)
    after = plaintext_on_disk(data_dir)
    assert SQLITE_FILENAME in listed_during and READ_MODEL_FILENAME in listed_during
    assert any(name.endswith("-wal") for name in listed_during), listed_during
    with sqlite3.connect(data_dir / SQLITE_FILENAME) as db:
        compacted = db.execute("SELECT COUNT(*) FROM update_history").fetchone()[0]
        snapshots = db.execute("SELECT COUNT(*) FROM snapshots").fetchone()[0]
    assert compacted and snapshots, "no compaction happened: history was not searched"
    if encryption == "on":
        assert during == [] and after == []
    else:
        # The control: the same search finds the text of a store kept in plaintext.
        assert any(SQLITE_FILENAME in hit for hit in during + after), during + after
        assert any(READ_MODEL_FILENAME in hit for hit in during + after), during + after


async def test_the_read_model_still_answers_text_title_and_filter_queries(
    tmp_path: Path, encryption_env: None
) -> None:
    async with serve("local", tmp_path / "data") as server:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{server.port}") as http:
            for title, due in (("banana split", "2026-12-03"), ("Apple pie", None)):
                task = {"title": title, "column": "Backlog", "due": due, "assignees": ["ann"]}
                async with http.post("/v1/boards/menu/tasks", json=task) as response:
                    assert response.status == 201, await response.text()

            async def query(**params: str) -> list[str]:
                async with http.get("/v1/tasks", params=params) as response:
                    assert response.status == 200, await response.text()
                    return [item["title"] for item in (await response.json())["items"]]

            async def both_indexed() -> bool:
                return len(await query()) == 2

            await wait_until_async(both_indexed)
            assert await query(sort="title") == ["Apple pie", "banana split"]
            assert await query(q="SPLIT") == ["banana split"]
            assert await query(assignee="ann", due_from="2026-12-01") == ["banana split"]
            assert await query(sort="title", limit="1") == ["Apple pie"]


# -- rotation and re-encryption ----------------------------------------------------------


async def add_tasks(port: int, board: str, titles: list[str]) -> None:
    async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as http:
        for title in titles:
            task = {"title": title, "description": f"about {title}", "column": "Backlog"}
            async with http.post(f"/v1/boards/{board}/tasks", json=task) as response:
                assert response.status == 201, await response.text()


async def titles_of(port: int, board: str) -> list[str]:
    async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as http:
        async with http.get(f"/v1/boards/{board}/tasks") as response:
            assert response.status == 200, await response.text()
            return sorted(item["title"] for item in (await response.json())["items"])


def key_ids_in_store(path: Path) -> set[str | None]:
    """The key id of every stored blob and origin (None for plaintext)."""
    found: set[str | None] = set()
    with sqlite3.connect(path) as db:
        for table, column in (
            ("updates", '"update"'),
            ("update_history", '"update"'),
            ("snapshots", "state"),
            ("snapshot_history", "state"),
            ("update_meta", "events"),
        ):
            for (value,) in db.execute(f"SELECT {column} FROM {table}"):
                if value is not None:
                    found.add(key_id_of(bytes(value)))
    return found


def key_ids_in_read_model(path: Path) -> set[str | None]:
    """The key id of every stored title and description (None for plaintext)."""
    found: set[str | None] = set()
    with sqlite3.connect(path) as db:
        for title, description in db.execute("SELECT title, description FROM tasks"):
            found |= {text_key_id(title), text_key_id(description)}
    return found


async def read_model_titles(data_dir: Path) -> list[str]:
    async with open_store("sqlite", data_dir=str(data_dir)) as store:
        index = store.task_index()
        try:
            rows = await index.rows(TaskFilter(sort="title", limit=1000))
        finally:
            await index.close()
    return [row.title for row in rows]


async def test_rotation_reencryption_and_dropping_the_old_key_keep_everything_readable(
    tmp_path: Path, encryption_env: None
) -> None:
    data_dir = tmp_path / "data"
    store_file = data_dir / SQLITE_FILENAME
    first = [f"first {n}" for n in range(5)]
    second = [f"second {n}" for n in range(5)]

    async with serve("local", data_dir, snapshot_every=4) as server:
        await add_tasks(server.port, "rotating", first)
    key_file = str(data_dir / "keys" / "at-rest.json")
    key_1 = KeyRing.open(key_file, create=False).active_key_id
    assert key_ids_in_store(store_file) == {key_1}

    key_2, ids = rotate_keys(str(data_dir))
    assert ids == [key_1, key_2]
    async with serve("local", data_dir, snapshot_every=4) as server:
        await add_tasks(server.port, "rotating", second)
        await add_tasks(server.port, "other", ["elsewhere"])
    assert key_ids_in_store(store_file) == {key_1, key_2}

    # A restart reads both keys' records.
    async with serve("local", data_dir) as server:
        assert await titles_of(server.port, "rotating") == sorted(first + second)

    report = await reencrypt(str(data_dir))
    assert report.active_key == key_2 and report.store.total_rewritten > 0
    # Hosts may have rewritten read-model rows under key 2 already (a board load catches
    # its rows up); whatever was left is rewritten now.
    assert report.read_model is not None
    assert report.read_model.rewritten + report.read_model.current == 11
    assert key_ids_in_store(store_file) == {key_2}
    assert key_ids_in_read_model(data_dir / READ_MODEL_FILENAME) == {key_2}
    # Running it again finds nothing left to do (it resumes where it stopped).
    again = await reencrypt(str(data_dir))
    assert again.store.total_rewritten == 0 and again.read_model is not None
    assert again.read_model.rewritten == 0

    assert remove_key(str(data_dir), key_1) == [key_2]
    assert sorted(await read_model_titles(data_dir)) == sorted([*first, *second, "elsewhere"])
    async with open_store("sqlite", data_dir=str(data_dir)) as store:
        for version in await store.versions("rotating"):
            past = await store.load_at("rotating", version.at)
            assert past.snapshot is not None or past.updates
    async with serve("local", data_dir) as server:
        assert await titles_of(server.port, "rotating") == sorted(first + second)
        assert await titles_of(server.port, "other") == ["elsewhere"]
    assert plaintext_on_disk(data_dir, ("first 0", "second 4", "elsewhere")) == []


async def test_a_store_sealed_under_a_removed_key_fails_with_the_named_error(
    tmp_path: Path, encryption_env: None
) -> None:
    data_dir = tmp_path / "data"
    async with open_store("sqlite", data_dir=str(data_dir)) as store:
        await store.append({"b": [b"\x00\x00"]})
    old = KeyRing.open(str(data_dir / "keys" / "at-rest.json"), create=False).active_key_id
    rotate_keys(str(data_dir))
    remove_key(str(data_dir), old)  # too early: nothing was re-encrypted
    async with open_store("sqlite", data_dir=str(data_dir)) as store:
        with pytest.raises(DecryptionFailed, match=old):
            await store.load("b")


def test_the_keys_command_refuses_to_remove_the_active_key(tmp_path: Path) -> None:
    lines: list[str] = []
    assert run_keys_command("rotate", str(tmp_path), echo=lines.append) == 0
    active = KeyRing.open(str(tmp_path / "keys" / "at-rest.json")).active_key_id
    assert run_keys_command("remove", str(tmp_path), key_id=active, echo=lines.append) == 1
    assert "active key" in lines[-1]
    assert run_keys_command("list", str(tmp_path), echo=lines.append) == 0
    assert lines[-1].startswith(active) and lines[-1].endswith("(active)")


# -- a tampered blob ---------------------------------------------------------------------


def tamper_with_board(path: Path, board: str) -> int:
    """Flip one ciphertext byte of every stored update and snapshot of ``board``."""
    changed = 0
    with sqlite3.connect(path) as db:
        for table, column in (("updates", '"update"'), ("snapshots", "state")):
            rows = db.execute(
                f"SELECT rowid, {column} FROM {table} WHERE board_id = ?", (board,)
            ).fetchall()
            for rowid, value in rows:
                blob = bytearray(value)
                blob[len(blob) // 2 + 10] ^= 0x01
                db.execute(f"UPDATE {table} SET {column} = ? WHERE rowid = ?", (bytes(blob), rowid))
                changed += 1
    return changed


async def test_a_tampered_blob_makes_its_board_unavailable_and_no_other(
    tmp_path: Path, encryption_env: None
) -> None:
    data_dir = tmp_path / "data"
    async with serve("local", data_dir) as server:
        await add_tasks(server.port, "tampered", ["will not open"])
        await add_tasks(server.port, "intact", ["still fine"])
    assert tamper_with_board(data_dir / SQLITE_FILENAME, "tampered") > 0

    async with open_store("sqlite", data_dir=str(data_dir)) as store:
        assert isinstance(store, EncryptedStore)
        with pytest.raises(DecryptionFailed, match="does not authenticate"):
            await store.load("tampered")

    async with serve("local", data_dir) as server:
        # Bounded, so a stuck step fails here, named, rather than at the suite's timeout.
        bound = aiohttp.ClientTimeout(total=60 * TIMEOUT_SCALE)
        async with aiohttp.ClientSession(f"http://127.0.0.1:{server.port}", timeout=bound) as http:
            async with http.get("/v1/boards/tampered/tasks") as response:
                body = await response.json(content_type=None)
                assert response.status == 503, body
                assert body["type"] == "urn:boardcast:problem:unavailable"
            ws = await http.ws_connect(f"ws://127.0.0.1:{server.port}/ws/tampered")
            message = await asyncio.wait_for(ws.receive(), 30 * TIMEOUT_SCALE)
            assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
            assert ws.close_code == CloseCode.TRY_AGAIN_LATER
        # The other board, on the same host, answers as before.
        assert await titles_of(server.port, "intact") == ["still fine"]
        await add_tasks(server.port, "intact", ["and writable"])
        assert await titles_of(server.port, "intact") == ["and writable", "still fine"]


async def test_reencrypt_rewrites_a_mongodb_store(
    tmp_path: Path,
    mongo_url: str,  # noqa: F811 - the fixture
    encryption_env: None,
) -> None:
    key_file = str(tmp_path / "secrets" / "ring.json")
    settings = EncryptionSettings(key_file=key_file)
    row = TaskRow("b", "t", "p", "Mongo title", "c", "a0", "Mongo text", (), (), None, "x", "x", 1)
    async with open_store(mongo_url, data_dir=str(tmp_path), encryption=settings) as store:
        await store.append({"b": [Record(b"\x01first", origin="ann", events=b"\x90")]})
        await store.write_snapshot("b", b"\x02snapshot", 1)
        await store.append({"b": [b"\x03second"]})
        index = store.task_index()
        await index.write([IndexWrite("b", 1, upserts=[row])])
        await index.close()
    old = KeyRing.open(key_file, create=False).active_key_id
    new, _ = rotate_keys(str(tmp_path), key_file=key_file)

    report = await reencrypt(str(tmp_path), mongo_url, key_file=key_file)
    assert report.store.total_rewritten >= 4 and not report.store.left
    remove_key(str(tmp_path), old, key_file=key_file)
    async with open_store(mongo_url, data_dir=str(tmp_path), encryption=settings) as store:
        assert isinstance(store, EncryptedStore)
        raw = await store.inner.load("b")
        assert raw.snapshot is not None and key_id_of(raw.snapshot) == new
        assert [key_id_of(entry.update) for entry in raw.updates] == [new]
        board = await store.load("b")
        assert board.snapshot == b"\x02snapshot"
        assert [entry.update for entry in board.updates] == [b"\x03second"]
        index = store.task_index()
        try:
            assert await index.rows(TaskFilter()) == [row]
        finally:
            await index.close()


# -- any damaged record, in a store read strictly ------------------------------------------

DAMAGEABLE = (
    ("updates", '"update"'),
    ("snapshots", "state"),
    ("update_meta", "events"),
    ("update_meta", "origin"),
)
BASE64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


@pytest.fixture(scope="module")
def sealed_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir whose board has a snapshot, an update with origin and events, another."""
    data_dir = tmp_path_factory.mktemp("sealed") / "data"

    async def write() -> None:
        settings = EncryptionSettings()
        async with open_store("sqlite", data_dir=str(data_dir), encryption=settings) as store:
            await store.append({"b": [b"\x01one"]})
            await store.write_snapshot("b", b"\x02snapshot", 1)
            record = Record(b"\x03two", origin="ann@example.org", events=b"\x91\x80")
            await store.append({"b": [record]})

    asyncio.run(write())
    return data_dir


def damage(path: Path, table: str, column: str, position: int, flip: int, cut: bool) -> None:
    with sqlite3.connect(path) as db:
        rowid, value = db.execute(f"SELECT rowid, {column} FROM {table} LIMIT 1").fetchone()
        if isinstance(value, str):
            index = position % len(value)
            if cut:
                changed: str | bytes = value[:index]
            else:
                others = BASE64.replace(value[index], "")
                changed = value[:index] + others[flip % len(others)] + value[index + 1 :]
        else:
            blob = bytearray(value)
            index = position % len(blob)
            if cut:
                blob = blob[:index]
            else:
                blob[index] ^= flip
            changed = bytes(blob)
        db.execute(f"UPDATE {table} SET {column} = ? WHERE rowid = ?", (changed, rowid))


@hypothesis.settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture],
)
@hypothesis.given(
    target=st.sampled_from(DAMAGEABLE),
    position=st.integers(min_value=0),
    flip=st.integers(min_value=1, max_value=255),
    cut=st.booleans(),
)
def test_a_damaged_record_is_always_the_named_error_in_a_strict_store(
    sealed_store: Path,
    tmp_path_factory: pytest.TempPathFactory,
    target: tuple[str, str],
    position: int,
    flip: int,
    cut: bool,
) -> None:
    copy = tmp_path_factory.mktemp("damaged") / "data"
    shutil.copytree(sealed_store, copy)
    damage(copy / SQLITE_FILENAME, *target, position, flip, cut)
    strict = EncryptionSettings(refuse_plaintext=True)

    async def load() -> None:
        async with open_store("sqlite", data_dir=str(copy), encryption=strict) as store:
            await store.load("b")

    with pytest.raises(DecryptionFailed):
        asyncio.run(load())


def test_strict_reads_refuse_plaintext_and_on_reads_it(tmp_path: Path) -> None:
    async def scenario() -> None:
        plain = EncryptionSettings(enabled=False)
        async with open_store("sqlite", data_dir=str(tmp_path), encryption=plain) as store:
            await store.append({"b": [b"\x01from before"]})
        async with open_store("sqlite", data_dir=str(tmp_path)) as store:
            assert [e.update for e in (await store.load("b")).updates] == [b"\x01from before"]
        strict = EncryptionSettings(refuse_plaintext=True)
        async with open_store("sqlite", data_dir=str(tmp_path), encryption=strict) as store:
            with pytest.raises(DecryptionFailed, match="strict"):
                await store.load("b")
        await reencrypt(str(tmp_path))
        async with open_store("sqlite", data_dir=str(tmp_path), encryption=strict) as store:
            assert [e.update for e in (await store.load("b")).updates] == [b"\x01from before"]

    asyncio.run(scenario())
