"""On MongoDB, updates and snapshots over its 16 MiB document limit, through a real server.

A real Boardcast server (in-process hosts) on a real MongoDB wire server: an update over
16 MiB is accepted and acknowledged, does not hold up another board on the same host, and
is there after a restart, from the log and then from the snapshot the restart wrote.

Every step has its own deadline, and the deadlines add up to less than pytest's timeout,
so a slow or stuck step fails under its own name with the server's log captured.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from pycrdt import Map, Text

from clients.provider import BoardClient
from tests.conftest import serve
from tests.services import TIMEOUT_SCALE

MIB = 1024 * 1024
# pytest's timeout is 300 s; the two phases (each server's life, its stop included) get
# 150 s and 120 s at most whatever the scale, the steps inside them less.
STEP_CAP = {"sync": 15.0, "big": 80.0, "small": 8.0, "read": 80.0}
PHASE_CAP = {"write": 150.0, "read": 120.0}


def deadline(step: str) -> float:
    base = {"sync": 5.0, "big": 30.0, "small": 2.0, "read": 30.0}[step]
    return min(base * TIMEOUT_SCALE, STEP_CAP[step])


@asynccontextmanager
async def step(name: str, seconds: float) -> AsyncIterator[None]:
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError:
        pytest.fail(f"step {name!r} took over {seconds:.0f} s")


async def test_an_update_over_16_mib_is_stored_and_blocks_no_other_board(
    tmp_path: Path, mongo_url: str
) -> None:
    big_text = "0123456789abcdef" * (17 * MIB // 16)
    options = {
        "store": mongo_url,
        "hosts": 1,  # both boards on one host: one stuck write would block both
        "max_update_bytes": 24 * MIB,
        "max_frame_bytes": 32 * MIB,
    }
    async with step("the first server's life and stop", PHASE_CAP["write"]):
        await write_both(tmp_path, options, big_text)
    async with step("the second server's life and stop", PHASE_CAP["read"]):
        await read_both(tmp_path, options, big_text)


async def write_both(tmp_path: Path, options: dict[str, Any], big_text: str) -> None:
    async with serve("local", tmp_path, **options) as server:
        async with (
            BoardClient(server.url, "huge") as writer,
            BoardClient(server.url, "small") as other,
        ):
            async with step("both clients synced", deadline("sync")):
                await asyncio.gather(writer.synced(None), other.synced(None))
            writer.doc.get("notes", type=Text).insert(0, big_text)
            async with step("the 17 MiB update acknowledged", deadline("big")):
                await writer.persisted(timeout=None)
            for n in range(5):
                other.doc.get("tasks", type=Map)[f"t{n}"] = n
                async with step(f"small update {n} acknowledged", deadline("small")):
                    await other.persisted(timeout=None)
    # Stopping snapshotted both boards (the big one past 16 MiB); a fresh server reads them.


async def read_both(tmp_path: Path, options: dict[str, Any], big_text: str) -> None:
    async with serve("local", tmp_path, **options) as server:
        async with BoardClient(server.url, "huge", ack=False) as reader:
            async with step("the big board read back", deadline("read")):
                await reader.synced(timeout=None)
            assert str(reader.doc.get("notes", type=Text)) == big_text
        async with BoardClient(server.url, "small", ack=False) as reader:
            async with step("the small board read back", deadline("sync")):
                await reader.synced(timeout=None)
            assert reader.doc.get("tasks", type=Map).to_py() == {f"t{n}": n for n in range(5)}
