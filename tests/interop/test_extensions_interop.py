"""Extensions against stock JavaScript clients: a refused connection and a read-only session.

A real `boardcast serve` on Ray loads docs/extensions.md's examples by name
(`--extension module:factory`); the clients are y-websocket in Node, unchanged.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from crdt.close_codes import CloseCode
from tests.interop.jsclient import JsClients
from tests.interop.servers import TIMEOUT_SCALE, BoardcastProcess, serve_process
from tests.interop.test_interop import eventually, new_board_id

pytestmark = pytest.mark.interop

DOC = Path(__file__).parents[2] / "docs" / "extensions.md"
MODULE = "boardcast_doc_extensions"


@pytest.fixture
def guarded_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[BoardcastProcess]:
    """`boardcast serve` with the token and viewer examples of docs/extensions.md."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    examples = tmp_path / "examples"
    examples.mkdir()
    (examples / f"{MODULE}.py").write_text("\n\n".join(blocks))
    # The server, its Ray workers and its hosts all import the extensions by name.
    monkeypatch.setenv("PYTHONPATH", f"{examples}:{Path.cwd()}")
    server = serve_process(
        tmp_path / "data",
        "--extension",
        f"{MODULE}:RequireToken",
        "--extension",
        f"{MODULE}:ViewersReadOnly",
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_stock_clients_are_refused_or_read_only_as_the_extensions_say(
    guarded_server: BoardcastProcess, js_clients: JsClients
) -> None:
    url, board_id = guarded_server.url, new_board_id("guarded")
    stranger = await js_clients.new("stranger")
    await stranger.connect(url, board_id)
    for _ in range(int(200 * TIMEOUT_SCALE)):
        if (await stranger.status())["last_close_code"] is not None:
            break
        await asyncio.sleep(0.05)
    assert (await stranger.status())["last_close_code"] == CloseCode.UNAUTHORIZED

    editor = await js_clients.new("editor")
    await editor.connect(url, board_id, params={"token": "let-me-in"})
    await editor.wait_synced()
    viewer = await js_clients.new("viewer")
    await viewer.connect(url, board_id, params={"token": "let-me-in", "role": "viewer"})
    await viewer.wait_synced()

    await editor.set_map("tasks", "t1", "from the editor")
    await viewer.wait_until(["tasks", "t1"], "from the editor")
    await viewer.set_map("tasks", "t2", "from the viewer")
    await eventually(
        lambda: any("Permission denied" in line for line in viewer.stderr_lines),
        "the viewer is told its edit is refused",
    )
    # Expected: the stock client logs the permission-denied message it was sent.
    viewer.stderr_lines.clear()
    assert (await viewer.status())["connected"], "a read-only session stays open"
    await asyncio.sleep(0.5)
    assert "t2" not in (await editor.get_json())["tasks"]
    # A newcomer sees only the editor's task: the viewer's edit never reached the board.
    late = await js_clients.new("late")
    await late.connect(url, board_id, params={"token": "let-me-in"})
    await late.wait_synced()
    assert (await late.get_json())["tasks"] == {"t1": "from the editor"}
