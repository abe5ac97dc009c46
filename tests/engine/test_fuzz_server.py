"""The corpus against a real server: the hostile client is closed, everyone else is unharmed.

One raw WebSocket client sends a corpus sequence (tests/corpus/) while a BoardClient edits
the same board. A sequence with a frame pycrdt refuses must get the hostile client closed
with a 44xx code; sequences pycrdt accepts (out-of-order drops, inconsistent states) may
leave it open. Either way the normal client keeps working, its edits are stored, and the
board opens with all of them after the server restarts on the same data directory.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pycrdt import Doc, Map

from clients.provider import BoardClient
from persistence.factory import open_store
from tests.conftest import serve, wait_until
from tests.fuzz.corpus import CorpusCase, load_corpus
from tests.fuzz.oracle import ERROR_PARTIAL, PANIC_CLEAN, PANIC_PARTIAL
from tests.services import TIMEOUT_SCALE

CORPUS = load_corpus()
# Kinds whose sequence holds a frame pycrdt raises on: the server must refuse it.
REFUSED_KINDS = {ERROR_PARTIAL, PANIC_PARTIAL, PANIC_CLEAN}
CLOSE_WAIT = 10.0 * TIMEOUT_SCALE


def normal_tasks(doc: Doc[Any]) -> dict[str, Any]:
    tasks = doc.get("tasks", type=Map).to_py() or {}
    return {key: value for key, value in tasks.items() if key.startswith("normal-")}


async def close_code(ws: aiohttp.ClientWebSocketResponse, timeout: float) -> int | None:
    """Read until the server closes ``ws``; its close code, or None if still open at ``timeout``."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            while True:
                message = await ws.receive()
                if message.type is aiohttp.WSMsgType.CLOSE:
                    # The server's code; ws.close_code turns 1006 when the reply close fails.
                    return int(message.data)
                if message.type in (
                    aiohttp.WSMsgType.CLOSING,
                    aiohttp.WSMsgType.CLOSED,
                    aiohttp.WSMsgType.ERROR,
                ):
                    return ws.close_code
    return None


async def send_hostile(ws: aiohttp.ClientWebSocketResponse, frame: bytes) -> bool:
    """Send one frame; False once the server has closed the connection."""
    if ws.closed:
        return False
    try:
        await ws.send_bytes(frame)
    except (ConnectionError, aiohttp.ClientError):
        return False
    return True


@pytest.mark.parametrize("case", CORPUS, ids=lambda c: c.name)
async def test_a_corpus_sequence_closes_only_the_hostile_client_and_loses_nothing(
    case: CorpusCase, tmp_path: Path
) -> None:
    board = f"fuzz-{case.name}"
    written: dict[str, int] = {}

    async def edit(client: BoardClient) -> None:
        key = f"normal-{len(written)}"
        written[key] = len(written)
        client.doc.get("tasks", type=Map)[key] = written[key]
        await client.persisted()

    async with serve("local", tmp_path) as server:
        async with BoardClient(server.url, board) as normal, aiohttp.ClientSession() as session:
            await normal.synced()
            await edit(normal)
            hostile = await session.ws_connect(f"{server.url}/{board}", max_msg_size=0)
            await hostile.receive()  # the server's sync step 1
            for frame in case.frames:
                if not await send_hostile(hostile, frame):
                    break
                await edit(normal)
            code = await close_code(hostile, CLOSE_WAIT if case.kind in REFUSED_KINDS else 0.5)
            if case.kind in REFUSED_KINDS:
                assert code is not None and 4400 <= code < 4500, f"hostile client got {code}"
            else:
                assert code is None or 4400 <= code < 4500, f"hostile client got {code}"
            await hostile.close()

            await edit(normal)
            assert normal.connected, f"the normal client was closed ({normal.close_code})"
            async with BoardClient(server.url, board) as reader:
                await reader.synced()
                await wait_until(lambda: normal_tasks(reader.doc) == written, message="reader")

    store = open_store("sqlite", data_dir=str(tmp_path))
    try:
        stored = await store.load(board)
    finally:
        await store.close()
    replayed: Doc[Any] = Doc()
    for update in ([stored.snapshot] if stored.snapshot else []) + [
        e.update for e in stored.updates
    ]:
        replayed.apply_update(update)
    assert normal_tasks(replayed) == written, "the store lost normal edits"

    async with serve("local", tmp_path) as server:
        async with BoardClient(server.url, board) as reopened:
            await reopened.synced()
            assert normal_tasks(reopened.doc) == written
