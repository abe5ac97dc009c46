"""Limits a client can run into on a real server: each refused with its code, others unharmed."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
from pycrdt import Doc, Map, Text

from clients.provider import BoardClient
from crdt.awareness import AwarenessEntry, encode_awareness
from crdt.close_codes import CloseCode
from crdt.protocol import awareness_frame, sync_update
from tests.conftest import serve, wait_until
from tests.services import TIMEOUT_SCALE

MIB = 1024 * 1024


async def refused_with(server_url: str, board: str, frame: bytes) -> int | None:
    """Send ``frame`` on a fresh raw connection; return the close code it earns."""
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(f"{server_url}/{board}", max_msg_size=0)
        await ws.receive()  # sync step 1
        await ws.send_bytes(frame)
        while True:
            message = await asyncio.wait_for(ws.receive(), 30 * TIMEOUT_SCALE)
            if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                return ws.close_code


def notes(client: BoardClient) -> str:
    return str(client.doc.get("notes", type=Text))


async def test_a_24_mib_board_opens_for_three_joiners_at_once(tmp_path: Path) -> None:
    # Bigger than the 16 MiB send buffer: the initial sync must not count as slow reading.
    chunk = "0123456789abcdef" * (MIB // 16)
    async with serve("local", tmp_path, hosts=1) as server:
        async with BoardClient(server.url, "big") as writer:
            await writer.synced()
            text = writer.doc.get("notes", type=Text)
            for _ in range(3):
                text.insert(len(text), chunk * 8)  # 8 MiB per update
            await writer.persisted(timeout=120 * TIMEOUT_SCALE)
        joiners = [BoardClient(server.url, "big", ack=False) for _ in range(3)]
        try:
            await asyncio.gather(*(joiner.connect() for joiner in joiners))
            await asyncio.gather(*(j.synced(timeout=120 * TIMEOUT_SCALE) for j in joiners))
            for joiner in joiners:
                assert len(notes(joiner)) == 24 * MIB
                assert joiner.close_code is None
        finally:
            await asyncio.gather(*(joiner.close() for joiner in joiners))


async def test_an_update_over_the_limit_is_refused_and_the_board_stays_usable(
    tmp_path: Path,
) -> None:
    async with (
        serve("local", tmp_path, max_update_bytes=MIB) as server,
        BoardClient(server.url, "capped") as alice,
    ):
        await alice.synced()
        alice.doc.get("tasks", type=Map)["before"] = "small"
        await alice.persisted()
        big: Doc[Any] = Doc()
        big.get("notes", type=Text).insert(0, "z" * (2 * MIB))
        code = await refused_with(server.url, "capped", sync_update(big.get_update()))
        assert code == CloseCode.UPDATE_TOO_LARGE
        alice.doc.get("tasks", type=Map)["after"] = "still writable"
        await alice.persisted()
        async with BoardClient(server.url, "capped", ack=False) as reader:
            await reader.synced()
            assert reader.doc.get("tasks", type=Map).to_py() == {
                "before": "small",
                "after": "still writable",
            }
            assert notes(reader) == ""


async def test_a_board_at_its_maximum_size_refuses_growth_but_stays_readable(
    tmp_path: Path,
) -> None:
    async with (
        serve("local", tmp_path, max_board_bytes=256 * 1024) as server,
        BoardClient(server.url, "full") as alice,
    ):
        await alice.synced()
        text = alice.doc.get("notes", type=Text)
        text.insert(0, "a" * 200_000)
        await alice.persisted()
        text.insert(0, "b" * 100_000)
        await wait_until(lambda: alice.close_code is not None, message="refused")
        assert alice.close_code == CloseCode.BOARD_FULL
        async with BoardClient(server.url, "full", ack=False) as reader:
            await reader.synced()
            assert notes(reader) == "a" * 200_000


async def test_a_million_entry_presence_frame_is_refused_and_others_carry_on(
    tmp_path: Path,
) -> None:
    # 1,000,000 entries of "{}" under distinct client ids: ~5.7 MiB.
    entries = (AwarenessEntry(client_id, 1, "{}") for client_id in range(1, 1_000_001))
    frame = awareness_frame(encode_awareness(entries))
    async with (
        serve("local", tmp_path) as server,
        BoardClient(server.url, "crowd") as alice,
        BoardClient(server.url, "crowd") as bob,
    ):
        await alice.synced()
        await bob.synced()
        code = await refused_with(server.url, "crowd", frame)
        assert code == CloseCode.AWARENESS_LIMIT
        alice.doc.get("tasks", type=Map)["t"] = "served"
        await wait_until(lambda: "t" in bob.doc.get("tasks", type=Map), message="bob served")
        async with BoardClient(server.url, "crowd", ack=False) as late:
            await late.synced()
            # None of the refused entries was kept or is handed to a newcomer.
            await asyncio.sleep(0.2)
            assert len(late.awareness_states) <= 2


async def test_a_connection_cannot_remove_or_overwrite_anothers_presence(
    tmp_path: Path,
) -> None:
    async with (
        serve("local", tmp_path) as server,
        BoardClient(server.url, "people") as alice,
        BoardClient(server.url, "people") as bob,
    ):
        await alice.synced()
        await bob.synced()
        alice.set_awareness({"user": "alice"})
        await wait_until(lambda: alice.client_id in bob.awareness_states, message="presence")
        forged = [
            AwarenessEntry(alice.client_id, 10_000, '{"user":"mallory"}'),
            AwarenessEntry(alice.client_id, 10_001, "null"),
        ]
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(f"{server.url}/people")
            for entry in forged:
                await ws.send_bytes(awareness_frame(encode_awareness([entry])))
            await ws.close()
        # What the forger sent reaches nobody; a newcomer is shown alice as she is.
        async with BoardClient(server.url, "people", ack=False) as carol:
            await carol.synced()
            await wait_until(lambda: alice.client_id in carol.awareness_states)
            assert carol.awareness_states[alice.client_id] == {"user": "alice"}
        assert bob.awareness_states.get(alice.client_id) == {"user": "alice"}


async def test_a_cluster_that_does_not_answer_closes_the_client_with_1013(
    tmp_path: Path,
) -> None:
    from aiohttp import web

    from actors.local import LocalCluster
    from gateway.app import create_app
    from gateway.settings import Settings
    from persistence.factory import open_store
    from persistence.store import BoardStore

    class SilentCluster(LocalCluster):
        """Its directory never answers, as when the Ray head is unreachable."""

        async def locate(self, board_id: str) -> str:
            await asyncio.Event().wait()
            raise AssertionError("unreachable")

    settings = Settings(port=0, data_dir=str(tmp_path), control_timeout_seconds=0.5, auth="none")

    async def store_factory() -> BoardStore:
        return open_store("memory", data_dir=str(tmp_path))

    cluster = SilentCluster(store_factory, host_count=1, settings=settings.host_settings)
    runner = web.AppRunner(create_app(settings, cluster), shutdown_timeout=2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(f"ws://127.0.0.1:{port}/ws/any")
            message = await asyncio.wait_for(ws.receive(), 30 * TIMEOUT_SCALE)
            assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
            assert ws.close_code == CloseCode.TRY_AGAIN_LATER
    finally:
        await runner.cleanup()
