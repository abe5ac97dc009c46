"""On MongoDB, updates and snapshots over its 16 MiB document limit, through a real server.

A real Boardcast server (in-process hosts) on a real MongoDB wire server: a 20 MiB update
is accepted and acknowledged, does not hold up another board on the same host, and is
there after a restart, from the log and then from the snapshot the restart wrote.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from pycrdt import Map, Text

from clients.provider import BoardClient
from tests.conftest import serve
from tests.services import TIMEOUT_SCALE

MIB = 1024 * 1024


async def test_an_update_over_16_mib_is_stored_and_blocks_no_other_board(
    tmp_path: Path, mongo_url: str
) -> None:
    big_text = "0123456789abcdef" * (20 * MIB // 16)
    options = {
        "store": mongo_url,
        "hosts": 1,  # both boards on one host: one stuck write would block both
        "max_update_bytes": 24 * MIB,
        "max_frame_bytes": 32 * MIB,
    }
    async with serve("local", tmp_path, **options) as server:
        async with (
            BoardClient(server.url, "huge") as writer,
            BoardClient(server.url, "small") as other,
        ):
            await asyncio.gather(writer.synced(), other.synced())
            writer.doc.get("notes", type=Text).insert(0, big_text)
            await writer.persisted(timeout=120 * TIMEOUT_SCALE)
            for n in range(5):
                other.doc.get("tasks", type=Map)[f"t{n}"] = n
                await other.persisted(timeout=30 * TIMEOUT_SCALE)
    # Stopping snapshotted both boards (the big one past 16 MiB); a fresh server reads them.
    async with serve("local", tmp_path, **options) as server:
        async with BoardClient(server.url, "huge", ack=False) as reader:
            await reader.synced(timeout=120 * TIMEOUT_SCALE)
            assert str(reader.doc.get("notes", type=Text)) == big_text
        async with BoardClient(server.url, "small", ack=False) as reader:
            await reader.synced()
            assert reader.doc.get("tasks", type=Map).to_py() == {f"t{n}": n for n in range(5)}
