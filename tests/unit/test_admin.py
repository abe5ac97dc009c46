"""The offline board commands: history, export and import, as an operator runs them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pycrdt import Doc, Map

from boardcast.admin import parse_time, run_admin
from boardcast.cli import build_parser, settings_from
from persistence.factory import SQLITE_FILENAME, open_store
from tests.persistence_servers import mongo_server, mongo_url  # noqa: F401 - fixtures


async def run(*argv: str) -> int:
    """Run a command as ``main`` does: flags over ``BOARDCAST_*`` variables over defaults."""
    args = build_parser().parse_args(list(argv))
    return await run_admin(args, settings_from(args))


@pytest.fixture(autouse=True)
def no_store_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start each test without the operator's store settings."""
    for name in ("BOARDCAST_STORE", "BOARDCAST_DATA_DIR", "BOARDCAST_HISTORY"):
        monkeypatch.delenv(name, raising=False)


async def write_board(data_dir: Path, board: str, count: int, store_url: str = "sqlite") -> None:
    doc: Doc[Any] = Doc()
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(event.update))
    for index in range(count):
        doc.get("tasks", type=Map)[f"t{index}"] = index
    store = open_store(store_url, data_dir=str(data_dir))
    await store.append({board: updates})
    await store.close()


async def read_tasks(store_url: str, data_dir: Path, board: str) -> dict[str, Any]:
    store = open_store(store_url, data_dir=str(data_dir))
    stored = await store.load(board)
    await store.close()
    doc: Doc[Any] = Doc()
    for update in ([stored.snapshot] if stored.snapshot else []) + [
        e.update for e in stored.updates
    ]:
        doc.apply_update(update)
    return dict(doc.get("tasks", type=Map).to_py() or {})


async def test_export_then_import_under_another_store_and_id(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await write_board(tmp_path, "plan", 5)
    assert await run("history", "plan", "--data-dir", str(tmp_path)) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 5
    exported = tmp_path / "plan.boardcast"
    assert await run("export", "plan", "-o", str(exported), "--data-dir", str(tmp_path)) == 0
    other = f"sqlite:///{tmp_path / 'other.sqlite3'}"
    code = await run("import", str(exported), "--board", "copy", "--store", other)
    assert code == 0
    assert await read_tasks(other, tmp_path, "copy") == {f"t{i}": i for i in range(5)}


async def test_unknown_board_and_bad_file_fail_with_a_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await write_board(tmp_path, "plan", 1)
    assert await run("history", "nothing-here", "--data-dir", str(tmp_path)) == 1
    assert "no stored versions of 'nothing-here'" in capsys.readouterr().err
    bogus = tmp_path / "bogus.boardcast"
    bogus.write_bytes(b"not a board")
    assert await run("import", str(bogus), "--data-dir", str(tmp_path)) == 1
    assert "boardcast import" in capsys.readouterr().err


def test_times_parse_as_unix_seconds_or_iso() -> None:
    assert parse_time("1764176400") == 1764176400.0
    assert parse_time("2025-11-26T17:00:00Z") == 1764176400.0


async def test_the_store_comes_from_the_environment_as_for_serve(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    served = tmp_path / "served"
    await write_board(served, "plan", 3)
    monkeypatch.setenv("BOARDCAST_DATA_DIR", str(served))
    monkeypatch.chdir(tmp_path)  # where a ./data default would silently create an empty store
    exported = tmp_path / "plan.boardcast"
    assert await run("export", "plan", "-o", str(exported)) == 0
    assert not (tmp_path / "data").exists()

    # A flag wins over the variable; import may create the store it names.
    fresh = tmp_path / "fresh"
    assert await run("import", str(exported), "--data-dir", str(fresh)) == 0
    assert str(fresh / SQLITE_FILENAME) in capsys.readouterr().out
    assert await read_tasks("sqlite", fresh, "plan") == {f"t{i}": i for i in range(3)}


async def test_reading_a_missing_store_fails_naming_its_absolute_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert await run("history", "plan") == 1
    expected = str(tmp_path / "data" / SQLITE_FILENAME)
    assert f"boardcast history: no board store at {expected}" in capsys.readouterr().err
    monkeypatch.setenv("BOARDCAST_STORE", "sqlite://typo/boards.sqlite3")
    assert await run("export", "--all", "-o", str(tmp_path / "out")) == 1
    assert str(tmp_path / "data" / "typo" / "boards.sqlite3") in capsys.readouterr().err
    assert not (tmp_path / "data").exists() and not (tmp_path / "out").exists()


async def test_mongodb_from_the_environment_and_a_missing_database(
    tmp_path: Path,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    database_url: str = request.getfixturevalue("mongo_url")
    monkeypatch.setenv("BOARDCAST_STORE", database_url)
    # A MongoDB deployment names its key file (there is no shared data directory).
    monkeypatch.setenv("BOARDCAST_ENCRYPTION_KEY_FILE", str(tmp_path / "secrets" / "ring.json"))
    monkeypatch.chdir(tmp_path)
    assert await run("history", "plan") == 1
    database = database_url.rsplit("/", 1)[1]
    assert f"(database {database!r})" in capsys.readouterr().err

    await write_board(tmp_path, "plan", 4, store_url=database_url)
    assert await run("history", "plan") == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 4
    exported = tmp_path / "plan.boardcast"
    assert await run("export", "plan", "-o", str(exported)) == 0
    assert not (tmp_path / "data").exists()
    assert await run("import", str(exported), "--board", "copy") == 0
    assert await read_tasks(database_url, tmp_path, "copy") == {f"t{i}": i for i in range(4)}
