"""Two gateways share who is on a board through a real Redis."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import aiohttp
from aiohttp import web

from actors.local import LocalCluster
from clients.provider import BoardClient
from gateway.app import create_app
from gateway.settings import Settings
from persistence.factory import open_store
from persistence.store import BoardStore
from tests.redis_server import redis_server  # noqa: F401 - fixture


async def start_gateway(
    cluster: LocalCluster, settings: Settings, *, owner: bool
) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(create_app(settings, cluster, own_cluster=owner))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"127.0.0.1:{runner.addresses[0][1]}"


async def sessions(
    session: aiohttp.ClientSession, address: str, board: str
) -> list[dict[str, str]]:
    async with session.get(f"http://{address}/boards/{board}/sessions") as reply:
        assert reply.status == 200
        return list((await reply.json())["sessions"])


async def test_each_gateway_sees_sessions_held_by_the_other(
    tmp_path: Path,
    redis_server: str,  # noqa: F811 - fixture
) -> None:
    async def store() -> BoardStore:
        return open_store("memory", data_dir=str(tmp_path))

    cluster = LocalCluster(store)
    prefix = f"redis-test-{uuid.uuid4().hex[:6]}"
    first_settings = Settings(port=0, redis=redis_server, gateway_id=f"{prefix}-a", auth="none")
    second_settings = Settings(port=0, redis=redis_server, gateway_id=f"{prefix}-b", auth="none")
    first, first_address = await start_gateway(cluster, first_settings, owner=True)
    second, second_address = await start_gateway(cluster, second_settings, owner=False)
    board = f"presence-{prefix}"
    try:
        async with aiohttp.ClientSession() as http:
            alice = BoardClient(f"ws://{first_address}/ws", board)
            bob = BoardClient(f"ws://{second_address}/ws", board)
            await alice.connect()
            await bob.connect()
            await alice.synced()
            await bob.synced()

            async def gateways_seen(expected: set[str]) -> set[str]:
                # Registration is asynchronous: poll, bounded.
                for _ in range(100):
                    found = {e["gateway"] for e in await sessions(http, first_address, board)}
                    if found == expected:
                        break
                    await asyncio.sleep(0.02)
                return found

            both = {f"{prefix}-a", f"{prefix}-b"}
            assert await gateways_seen(both) == both
            await bob.close()
            assert await gateways_seen({f"{prefix}-a"}) == {f"{prefix}-a"}
            assert len(await sessions(http, second_address, board)) == 1
            await alice.close()
    finally:
        await second.cleanup()
        await first.cleanup()
