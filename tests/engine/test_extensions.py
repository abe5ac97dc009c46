"""Extensions through a real server: the code blocks of docs/extensions.md, loaded by name."""

from __future__ import annotations

import asyncio
import importlib
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pycrdt import Map

from actors.extensions import Extensions, Refused, load_extensions
from clients.provider import BoardClient
from crdt.close_codes import CloseCode
from tests.conftest import serve, wait_until

DOC = Path(__file__).parents[2] / "docs" / "extensions.md"
MODULE = "boardcast_doc_extensions"


@pytest.fixture
def doc_examples(tmp_path: Path) -> Iterator[str]:
    """docs/extensions.md's Python blocks as an importable module; yields its name."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) >= 3, "docs/extensions.md lost its examples"
    (tmp_path / f"{MODULE}.py").write_text("\n\n".join(blocks))
    sys.path.insert(0, str(tmp_path))
    try:
        yield MODULE
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop(MODULE, None)


def spec(module: str, name: str) -> str:
    return f"{module}:{name}"


async def close_code_of(url: str) -> int | None:
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(url)
        message = await asyncio.wait_for(ws.receive(), 30)
        while message.type not in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
            message = await asyncio.wait_for(ws.receive(), 30)
        return ws.close_code


async def test_a_refused_connection_gets_the_extensions_close_code(
    tmp_path: Path, doc_examples: str
) -> None:
    extensions = (spec(doc_examples, "RequireToken"),)
    async with serve("local", tmp_path, extensions=extensions) as server:
        assert await close_code_of(f"{server.url}/guarded") == CloseCode.UNAUTHORIZED
        async with BoardClient(server.url, "guarded", params={"token": "let-me-in"}) as ok:
            await ok.synced()
            ok.doc.get("tasks", type=Map)["t1"] = "let in"
            await ok.persisted()


async def test_a_read_only_session_reads_but_its_edits_reach_no_one(
    tmp_path: Path, doc_examples: str
) -> None:
    extensions = (spec(doc_examples, "ViewersReadOnly"),)
    async with serve("local", tmp_path, extensions=extensions) as server:
        async with (
            BoardClient(server.url, "shared") as editor,
            BoardClient(server.url, "shared", params={"role": "viewer"}) as viewer,
        ):
            await editor.synced()
            await viewer.synced()
            editor.doc.get("tasks", type=Map)["t1"] = "from the editor"
            await wait_until(lambda: "t1" in viewer.doc.get("tasks", type=Map))
            viewer.doc.get("tasks", type=Map)["t2"] = "from the viewer"
            await wait_until(lambda: viewer.denied_reason is not None, message="denied")
            assert viewer.connected, "a read-only session stays open"
            await editor.persisted()
            await asyncio.sleep(0.3)
            assert "t2" not in editor.doc.get("tasks", type=Map)
        # Nor is it stored: a fresh server on the same data sees only the editor's task.
    async with serve("local", tmp_path) as server:
        async with BoardClient(server.url, "shared", ack=False) as reader:
            await reader.synced()
            assert reader.doc.get("tasks", type=Map).to_py() == {"t1": "from the editor"}


async def test_on_change_sees_each_durable_change_with_its_version_and_events(
    tmp_path: Path, doc_examples: str
) -> None:
    extensions = (spec(doc_examples, "ChangeLog"),)
    async with serve("local", tmp_path, extensions=extensions) as server:
        log: list[Any] = importlib.import_module(doc_examples).ChangeLog.seen
        log.clear()
        async with BoardClient(server.url, "logged") as writer:
            await writer.synced()
            tasks = writer.doc.get("tasks", type=Map)
            tasks["t1"] = Map({"title": "first", "column": "todo", "position": "a"})
            await writer.persisted()
            tasks["t2"] = Map({"title": "second", "column": "todo", "position": "b"})
            await writer.persisted()
            await wait_until(lambda: len(log) >= 2, message="two changes")
        versions = [change.version for change in log if change.board_id == "logged"]
        assert versions == sorted(versions) and versions[-1] >= 2
        kinds = {type(event).__name__ for change in log for event in change.events}
        assert "TaskCreated" in kinds


def test_a_malformed_spec_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match="module:factory"):
        load_extensions(["no-colon-here"])
    with pytest.raises(ValueError, match="cannot be loaded"):
        load_extensions(["tests.nowhere:Nothing"])


async def test_hooks_run_in_order_and_the_first_refusal_stops_the_chain() -> None:
    from actors.extensions import ConnectRequest, Session

    calls: list[str] = []

    class Names:
        async def on_connect(self, request: ConnectRequest) -> Session:
            calls.append("names")
            return Session(identity="ann")

    class Viewer:
        async def on_connect(self, request: ConnectRequest) -> Session:
            calls.append("viewer")
            return Session(read_only=True)

    class Refuse:
        async def on_connect(self, request: ConnectRequest) -> Session:
            calls.append("refuse")
            raise Refused(CloseCode.FORBIDDEN)

    request = ConnectRequest("b", {}, {}, None)
    assert await Extensions([Names(), Viewer()]).on_connect(request) == Session("ann", True)
    with pytest.raises(Refused):
        await Extensions([Names(), Refuse(), Viewer()]).on_connect(request)
    assert calls == ["names", "viewer", "names", "refuse"]


async def test_on_change_runs_in_the_board_hosts_on_ray_too(
    backend: str, tmp_path: Path, cluster_name: str
) -> None:
    from tests.engine.changes_to_files import changes_of

    board_id = f"events-{cluster_name}"
    extensions = ("tests.engine.changes_to_files:ChangesToFiles",)
    async with serve(backend, tmp_path, cluster_name=cluster_name, extensions=extensions) as server:
        async with BoardClient(server.url, board_id) as writer:
            await writer.synced()
            tasks = writer.doc.get("tasks", type=Map)
            tasks["t1"] = Map({"title": "first", "column": "todo", "position": "a"})
            await writer.persisted()
            await wait_until(lambda: bool(changes_of(board_id)), timeout=30, message="a change")
    recorded = changes_of(board_id)
    changes = [entry for entry in recorded if "events" in entry]
    assert changes[0]["version"] >= 1
    assert "TaskCreated" in {name for change in changes for name in change["events"]}


async def test_on_message_may_close_a_client_for_a_frame(tmp_path: Path, doc_examples: str) -> None:
    from pycrdt import Text

    extensions = (spec(doc_examples, "SmallFramesOnly"),)
    async with serve("local", tmp_path, extensions=extensions) as server:
        async with (
            BoardClient(server.url, "small") as alice,
            BoardClient(server.url, "small") as bob,
        ):
            await alice.synced()
            await bob.synced()
            alice.doc.get("tasks", type=Map)["t1"] = "small"
            await wait_until(lambda: "t1" in bob.doc.get("tasks", type=Map))
            bob.doc.get("notes", type=Text).insert(0, "x" * 5000)
            await wait_until(lambda: bob.close_code is not None, message="bob closed")
            assert bob.close_code == CloseCode.MESSAGE_TOO_BIG
            await asyncio.sleep(0.2)
            assert str(alice.doc.get("notes", type=Text)) == ""


async def test_on_store_follows_the_snapshot_a_clean_stop_writes(
    tmp_path: Path, cluster_name: str
) -> None:
    from tests.engine.changes_to_files import changes_of

    board_id = f"stored-{cluster_name}"
    extensions = ("tests.engine.changes_to_files:ChangesToFiles",)
    async with serve("local", tmp_path, extensions=extensions) as server:
        async with BoardClient(server.url, board_id) as writer:
            await writer.synced()
            writer.doc.get("tasks", type=Map)["t1"] = "kept"
            await writer.persisted()
    recorded = changes_of(board_id)
    versions = [entry["version"] for entry in recorded if "version" in entry]
    snapshots = [entry["snapshot"] for entry in recorded if "snapshot" in entry]
    assert snapshots and snapshots[-1] == versions[-1]


async def test_the_log_and_on_change_name_who_made_each_change(
    tmp_path: Path, doc_examples: str
) -> None:
    from persistence.factory import open_store

    module = importlib.import_module(doc_examples)
    extensions = (spec(doc_examples, "RequireToken"), spec(doc_examples, "ChangeLog"))
    async with serve("local", tmp_path, extensions=extensions, snapshot_every=1_000_000) as server:
        token = {"token": "let-me-in"}
        async with (
            BoardClient(server.url, "named", params={**token, "user": "ann"}) as ann,
            BoardClient(server.url, "named", params={**token, "user": "bob"}) as bob,
            BoardClient(server.url, "named", params=token) as nobody,
        ):
            for client, key in ((ann, "from-ann"), (bob, "from-bob"), (nobody, "anonymous")):
                await client.synced()
                client.doc.get("tasks", type=Map)[key] = key
                await client.persisted()
        async with open_store("sqlite", data_dir=str(tmp_path)) as store:
            entries = (await store.load("named")).updates
        seen: list[Any] = module.ChangeLog.seen
        await wait_until(lambda: sum(change.updates for change in seen) == len(entries))
    assert [entry.origin for entry in entries] == ["ann", "bob", None]
    # Each change covers the versions of one origin, the last at ``version``.
    by_version = {entry.seq: entry.origin for entry in entries}
    for change in seen:
        covered = range(change.version - change.updates + 1, change.version + 1)
        assert {by_version[seq] for seq in covered} == {change.origin}
