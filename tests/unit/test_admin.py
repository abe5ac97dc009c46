"""The offline board commands: history, export and import, as an operator runs them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pycrdt import Doc, Map

from gateway.admin import parse_time, run_admin
from gateway.cli import build_parser
from persistence.factory import open_store


async def run(*argv: str) -> int:
    return await run_admin(build_parser().parse_args(list(argv)))


async def write_board(data_dir: Path, board: str, count: int) -> None:
    doc: Doc[Any] = Doc()
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(event.update))
    for index in range(count):
        doc.get("tasks", type=Map)[f"t{index}"] = index
    store = open_store("sqlite", data_dir=str(data_dir))
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
    assert await run("history", "nothing-here", "--data-dir", str(tmp_path)) == 1
    bogus = tmp_path / "bogus.boardcast"
    bogus.write_bytes(b"not a board")
    assert await run("import", str(bogus), "--data-dir", str(tmp_path)) == 1
    assert "boardcast import" in capsys.readouterr().err


def test_times_parse_as_unix_seconds_or_iso() -> None:
    assert parse_time("1764176400") == 1764176400.0
    assert parse_time("2025-11-26T17:00:00Z") == 1764176400.0
