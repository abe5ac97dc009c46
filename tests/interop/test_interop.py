"""Stock JavaScript Yjs clients (y-websocket in Node) and the Python client against Boardcast.

Every test uses fresh board ids on a shared `boardcast serve` process, so tests do not see each
other's documents.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest
from pycrdt import Doc, Map

from clients.provider import BoardClient
from crdt.board import Board
from tests.interop.jsclient import JsClient, JsClients
from tests.interop.servers import TIMEOUT_SCALE, BoardcastProcess

pytestmark = pytest.mark.interop

BOARD_ROOTS = ("tasks", "columns", "meta")
SYNC_TIMEOUT = 20.0 * TIMEOUT_SCALE
# A client's own awareness timeout is 30 s; a removal seen sooner came from the server.
AWARENESS_REMOVAL_TIMEOUT = 15.0
ONE_MIB = 1024 * 1024


def new_board_id(label: str) -> str:
    """A board id no other test uses."""
    return f"interop-{label}-{uuid.uuid4().hex[:10]}"


def board_json(doc: Doc[Any]) -> dict[str, Any]:
    """The board roots of a pycrdt document, shaped like the driver's `get_json`."""
    return {name: doc.get(name, type=Map).to_py() or {} for name in BOARD_ROOTS}


def board_part(state: dict[str, Any]) -> dict[str, Any]:
    """Only the board roots of a driver's `get_json` result."""
    return {name: state.get(name, {}) for name in BOARD_ROOTS}


async def eventually(
    predicate: Callable[[], bool], what: str, timeout: float = SYNC_TIMEOUT
) -> None:
    """Wait until `predicate()` holds, polling; fail the test after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            pytest.fail(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.05)


@asynccontextmanager
async def python_client(url: str, board_id: str) -> AsyncIterator[BoardClient]:
    """A synced Python client on the board."""
    async with BoardClient(url, board_id) as client:
        await client.synced(timeout=SYNC_TIMEOUT)
        yield client


@asynccontextmanager
async def python_clients(url: str, board_ids: list[str]) -> AsyncIterator[list[BoardClient]]:
    """One synced Python client per board, connected concurrently."""
    async with AsyncExitStack() as stack:
        clients = await asyncio.gather(
            *(stack.enter_async_context(python_client(url, board_id)) for board_id in board_ids)
        )
        yield list(clients)


def js_task(title: str, column: str, position: str, **extra: Any) -> dict[str, Any]:
    """Fields of a schema-conforming task written by a JS client."""
    fields: dict[str, Any] = {
        "title": title,
        "column": column,
        "position": position,
        "description": "",
        "assignees": [],
        "labels": [],
        "due": None,
        "created_at": "2026-01-01T00:00:00.000Z",
        "updated_at": "2026-01-01T00:00:00.000Z",
    }
    fields.update(extra)
    return fields


async def test_two_js_clients_and_a_python_client_converge(
    boardcast_server: BoardcastProcess, js_clients: JsClients
) -> None:
    url, board_id = boardcast_server.url, new_board_id("converge")
    alice = await js_clients.joined(url, board_id, "alice")
    bob = await js_clients.joined(url, board_id, "bob")
    async with python_client(url, board_id) as carol:
        await alice.create_column("todo", name="To do", position="a0")
        await alice.create_task("shared", **js_task("Shared", "todo", "a0", description="plan"))
        await bob.wait_until(["tasks", "shared", "title"], "Shared")
        await eventually(lambda: "shared" in board_json(carol.doc)["tasks"], "python sees task")

        # Everyone edits at once: new tasks, the same title, the same text and the same list.
        board = Board(carol.doc)
        await asyncio.gather(
            alice.create_task("from-alice", **js_task("A", "todo", "a1")),
            bob.create_task("from-bob", **js_task("B", "todo", "a2")),
            alice.update_task("shared", title="Alice's title"),
            bob.update_task("shared", title="Bob's title"),
            alice.insert_text(["tasks", "shared", "description"], " alpha"),
            bob.insert_text(["tasks", "shared", "description"], "beta ", index=0),
            alice.push_array(["tasks", "shared", "assignees"], ["alice"]),
            bob.push_array(["tasks", "shared", "assignees"], ["bob"]),
        )
        board.add_task("C", "todo", task_id="from-carol", description="python")
        board.assign("shared", "carol")
        board.update_task("shared", title="Carol's title")

        expected_ids = {"shared", "from-alice", "from-bob", "from-carol"}
        await alice.wait_for(lambda s: set(s["tasks"]) == expected_ids)
        await eventually(lambda: set(board_json(carol.doc)["tasks"]) == expected_ids, "python")
        state_a = await alice.wait_for(
            lambda s: board_part(s) == board_json(carol.doc), timeout=SYNC_TIMEOUT
        )
        state_b = await bob.wait_for(lambda s: board_part(s) == board_part(state_a))
        assert board_part(state_b) == board_json(carol.doc)

        shared = state_a["tasks"]["shared"]
        assert shared["title"] in {"Alice's title", "Bob's title", "Carol's title"}
        assert sorted(shared["assignees"]) == ["alice", "bob", "carol"]
        # Both concurrent text inserts survive; neither overwrote the other.
        assert "plan" in shared["description"]
        assert "alpha" in shared["description"]
        assert shared["description"].startswith("beta ")
        # The Python schema layer reads tasks written by the JavaScript clients.
        assert board.get_task("from-bob").title == "B"
        assert board.get_task("shared").assignees == tuple(shared["assignees"])


async def test_late_joiner_gets_full_state_after_the_writer_left(
    boardcast_server: BoardcastProcess, js_clients: JsClients
) -> None:
    url, board_id = boardcast_server.url, new_board_id("late")
    writer = await js_clients.joined(url, board_id, "writer")
    await writer.create_column("todo", name="To do", position="a0")
    for index in range(30):
        await writer.create_task(f"t{index}", **js_task(f"task {index}", "todo", f"a{index}"))
    await writer.insert_text(["tasks", "t0", "description"], "written before anyone else came")
    await writer.set_map("meta", "title", "Late joiners")
    written = board_part(await writer.get_json())
    # The Python client sees it all, so the server has it before the writer leaves.
    async with python_client(url, board_id) as witness:
        await eventually(lambda: board_json(witness.doc) == written, "server holds the board")
    await writer.disconnect()
    await writer.close()

    late_js = await js_clients.joined(url, board_id, "late")
    assert board_part(await late_js.get_json()) == written
    async with python_client(url, board_id) as late_python:
        assert board_json(late_python.doc) == written


async def test_awareness_appears_and_goes_on_clean_disconnect(
    boardcast_server: BoardcastProcess, js_clients: JsClients
) -> None:
    url, board_id = boardcast_server.url, new_board_id("aware-clean")
    alice = await js_clients.joined(url, board_id, "alice")
    bob = await js_clients.joined(url, board_id, "bob")
    async with python_client(url, board_id) as carol:
        await alice.set_awareness({"user": "alice", "cursor": {"task": "t1"}})
        carol.set_awareness({"user": "carol"})

        seen = await bob.wait_for(
            lambda s: (
                s.get(alice.client_id) == {"user": "alice", "cursor": {"task": "t1"}}
                and s.get(carol.client_id) == {"user": "carol"}
            ),
            source="awareness",
            timeout=SYNC_TIMEOUT,
        )
        assert seen[alice.client_id]["user"] == "alice"
        await eventually(
            lambda: carol.awareness_states.get(alice.client_id, {}).get("user") == "alice",
            "python sees alice",
        )

        await alice.disconnect()
        others = await bob.wait_for(
            lambda s: alice.client_id not in s,
            source="awareness",
            timeout=AWARENESS_REMOVAL_TIMEOUT,
        )
        await eventually(
            lambda: alice.client_id not in carol.awareness_states,
            "python sees alice leave",
            AWARENESS_REMOVAL_TIMEOUT,
        )
        # Only the client that left is gone.
        assert others.get(carol.client_id) == {"user": "carol"}


@pytest.mark.parametrize("reset", [False, True], ids=["fin", "rst"])
async def test_awareness_goes_when_the_socket_is_cut(
    boardcast_server: BoardcastProcess, js_clients: JsClients, reset: bool
) -> None:
    url, board_id = boardcast_server.url, new_board_id("aware-cut")
    alice = await js_clients.joined(url, board_id, "alice")
    bob = await js_clients.joined(url, board_id, "bob")
    dave = await js_clients.joined(url, board_id, "dave")
    await alice.set_awareness({"user": "alice"})
    await dave.set_awareness({"user": "dave"})
    await bob.wait_for(
        lambda s: alice.client_id in s and dave.client_id in s,
        source="awareness",
        timeout=SYNC_TIMEOUT,
    )

    # No close frame and no awareness "null" from alice: only the server can tell bob.
    await alice.cut(reset=reset)
    others = await bob.wait_for(
        lambda s: alice.client_id not in s,
        source="awareness",
        timeout=AWARENESS_REMOVAL_TIMEOUT,
    )
    assert others.get(dave.client_id) == {"user": "dave"}

    # The board still works for those who stayed.
    await dave.set_map("meta", "title", "after the cut")
    await bob.wait_until(["meta", "title"], "after the cut", timeout=SYNC_TIMEOUT)


async def test_one_mib_insert_reaches_every_client(
    boardcast_server: BoardcastProcess, js_clients: JsClients
) -> None:
    url, board_id = boardcast_server.url, new_board_id("big")
    alice = await js_clients.joined(url, board_id, "alice")
    bob = await js_clients.joined(url, board_id, "bob")
    await alice.create_column("todo", name="To do", position="a0")
    await alice.create_task("big", **js_task("Big", "todo", "a0"))
    await bob.wait_until(["tasks", "big", "title"], "Big")
    async with python_client(url, board_id) as carol:
        chunk = "0123456789abcdef"
        length = await alice.insert_text(
            ["tasks", "big", "description"], chunk, repeat=ONE_MIB // len(chunk)
        )
        assert length == ONE_MIB
        expected = chunk * (ONE_MIB // len(chunk))
        await bob.wait_until(["tasks", "big", "description"], expected, timeout=SYNC_TIMEOUT)
        await eventually(
            lambda: board_json(carol.doc)["tasks"]["big"]["description"] == expected,
            "python receives 1 MiB",
        )
        # The board keeps working after the large frame.
        await bob.update_task("big", title="Still alive")
        await alice.wait_until(["tasks", "big", "title"], "Still alive")

    # A late joiner gets the large text in its initial sync.
    late = await js_clients.joined(url, board_id, "late")
    assert await late.get_json(["tasks", "big", "description"]) == expected


async def test_twenty_boards_at_once_stay_isolated(
    boardcast_server: BoardcastProcess, js_clients: JsClients
) -> None:
    url = boardcast_server.url
    board_ids = [new_board_id(f"many{index}") for index in range(20)]
    writers = await asyncio.gather(
        *(
            js_clients.joined(url, board_id, f"js{index}")
            for index, board_id in enumerate(board_ids)
        )
    )
    async with python_clients(url, board_ids) as pythons:
        await asyncio.gather(
            *(
                writer.set_map("meta", "title", f"board {index}")
                for index, writer in enumerate(writers)
            )
        )
        for index, python in enumerate(pythons):
            Board(python.doc).set_meta(project=f"project {index}")
            python.doc.get("tasks", type=Map)[f"py{index}"] = Map({"title": f"py {index}"})

        async def check_board(index: int, writer: JsClient, python: BoardClient) -> None:
            state = await writer.wait_for(
                lambda s: (
                    s["meta"].get("project") == f"project {index}" and f"py{index}" in s["tasks"]
                )
            )
            assert state["meta"] == {"title": f"board {index}", "project": f"project {index}"}
            assert set(state["tasks"]) == {f"py{index}"}
            await eventually(
                lambda: board_json(python.doc)["meta"].get("title") == f"board {index}",
                f"python client of board {index}",
            )
            assert board_json(python.doc) == board_part(state)

        await asyncio.gather(
            *(
                check_board(index, writer, python)
                for index, (writer, python) in enumerate(zip(writers, pythons, strict=True))
            )
        )


async def test_offline_edits_merge_on_reconnect(
    boardcast_server: BoardcastProcess, js_clients: JsClients
) -> None:
    url, board_id = boardcast_server.url, new_board_id("offline")
    alice = await js_clients.joined(url, board_id, "alice")
    bob = await js_clients.joined(url, board_id, "bob")
    await alice.create_column("todo", name="To do", position="a0")
    await alice.create_task("t1", **js_task("Original", "todo", "a0", description="middle"))
    await bob.wait_until(["tasks", "t1", "description"], "middle")

    await alice.disconnect()
    # Alice works offline while Bob keeps editing online.
    await alice.update_task("t1", title="Renamed offline")
    await alice.insert_text(["tasks", "t1", "description"], " end")
    await alice.create_task("t2", **js_task("Made offline", "todo", "a1"))
    await bob.insert_text(["tasks", "t1", "description"], "start ", index=0)
    await bob.create_task("t3", **js_task("Made online", "todo", "a2"))
    await bob.set_map("meta", "title", "Bob's board")
    await alice.wait_until(["tasks", "t1", "description"], "middle end")

    await alice.reconnect()
    await alice.wait_synced(timeout=SYNC_TIMEOUT)
    merged = await bob.wait_for(lambda s: {"t1", "t2", "t3"} <= set(s["tasks"]))
    merged = await bob.wait_for(
        lambda s: (
            s["tasks"]["t1"]["title"] == "Renamed offline"
            and s["tasks"]["t1"]["description"] == "start middle end"
        )
    )
    await alice.wait_for(lambda s: board_part(s) == board_part(merged))
    assert merged["meta"]["title"] == "Bob's board"
    async with python_client(url, board_id) as carol:
        assert board_json(carol.doc) == board_part(merged)


async def test_edits_made_while_cut_off_merge_when_the_client_comes_back(
    boardcast_server: BoardcastProcess, js_clients: JsClients
) -> None:
    url, board_id = boardcast_server.url, new_board_id("cut-offline")
    alice = await js_clients.joined(url, board_id, "alice")
    bob = await js_clients.joined(url, board_id, "bob")
    await alice.set_map("meta", "title", "before")
    await bob.wait_until(["meta", "title"], "before")

    await alice.cut()
    await alice.set_map("meta", "project", "written while cut off")
    await bob.set_map("meta", "title", "after")
    await alice.reconnect()
    await alice.wait_synced(timeout=SYNC_TIMEOUT)
    expected = {"title": "after", "project": "written while cut off"}
    await alice.wait_until(["meta"], expected, timeout=SYNC_TIMEOUT)
    await bob.wait_until(["meta"], expected, timeout=SYNC_TIMEOUT)


async def test_clients_on_two_gateways_converge(
    boardcast_server: BoardcastProcess,
    second_gateway: BoardcastProcess,
    js_clients: JsClients,
) -> None:
    board_id = new_board_id("gateways")
    alice = await js_clients.joined(boardcast_server.url, board_id, "alice")
    bob = await js_clients.joined(second_gateway.url, board_id, "bob")
    async with python_client(second_gateway.url, board_id) as carol:
        await asyncio.gather(
            alice.create_task("a", title="from gateway 1"),
            bob.create_task("b", title="from gateway 2"),
            alice.set_awareness({"user": "alice"}),
        )
        carol.doc.get("tasks", type=Map)["c"] = Map({"title": "python on gateway 2"})

        state = await alice.wait_for(lambda s: set(s["tasks"]) == {"a", "b", "c"})
        await bob.wait_for(lambda s: board_part(s) == board_part(state))
        await eventually(lambda: board_json(carol.doc) == board_part(state), "python converges")
        # Awareness crosses gateways too, and so does a departure.
        await bob.wait_for(lambda s: alice.client_id in s, source="awareness", timeout=SYNC_TIMEOUT)
        await alice.disconnect()
        await bob.wait_for(
            lambda s: alice.client_id not in s,
            source="awareness",
            timeout=AWARENESS_REMOVAL_TIMEOUT,
        )


async def test_board_survives_a_server_restart(
    boardcast_server: BoardcastProcess, js_clients: JsClients
) -> None:
    url, board_id = boardcast_server.url, new_board_id("restart")
    alice = await js_clients.joined(url, board_id, "alice")
    await alice.create_column("todo", name="To do", position="a0")
    for index in range(10):
        await alice.create_task(f"t{index}", **js_task(f"task {index}", "todo", f"a{index}"))
    await alice.insert_text(["tasks", "t0", "description"], "kept across restarts")
    before = board_part(await alice.get_json())
    async with python_client(url, board_id) as witness:
        await eventually(lambda: board_json(witness.doc) == before, "server holds the board")
    # Alice leaves before the restart and stays away until the newcomer has read the board:
    # her reconnect would send the server everything it lacks, hiding a loss.
    await alice.disconnect()
    assert not (await alice.status())["connected"]

    await boardcast_server.arestart()

    # A newcomer, with a fresh document, gets the board from storage alone.
    newcomer = await js_clients.joined(url, board_id, "newcomer")
    assert board_part(await newcomer.get_json()) == before
    # The old client comes back and keeps editing.
    await alice.reconnect()
    await alice.wait_synced(timeout=SYNC_TIMEOUT)
    await alice.update_task("t1", title="edited after restart")
    await newcomer.wait_until(["tasks", "t1", "title"], "edited after restart")
