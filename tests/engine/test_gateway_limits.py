"""The gateway's limits on a real server: a flooding client is refused, everyone else served.

Every client here is on loopback; the server trusts 127.0.0.1 as a proxy, so each client
acts as a different address by the ``X-Forwarded-For`` it sends.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from pycrdt import Map

from boardcast.deployment import build_cluster
from clients.provider import BoardClient
from crdt.close_codes import CloseCode
from gateway.app import create_app
from gateway.limits import GatewayLimits
from gateway.limits_middleware import (
    LIMITS,
    admit_user_socket,
    limits_middleware,
    limits_state,
    open_limits,
    runner_options,
)
from gateway.settings import Settings
from tests.conftest import wait_until
from tests.redis_server import redis_server  # noqa: F401 - fixture
from tests.services import TIMEOUT_SCALE

# Once the server has accounts, these tests act as the local administrator.
NO_AUTH: dict[str, Any] = (
    {"auth": "none"} if "auth" in {f.name for f in dataclasses.fields(Settings)} else {}
)
PROXY = ("127.0.0.1/32",)


@dataclass
class LimitedServer:
    """A gateway with board hosts in process, started the way ``boardcast serve`` starts one."""

    http: str
    ws: str
    port: int
    app: web.Application


@contextlib.asynccontextmanager
async def limited_server(
    tmp_path: Path, limits: GatewayLimits, **overrides: Any
) -> AsyncIterator[LimitedServer]:
    """A server applying ``limits`` (given through the app's ``LIMITS`` key)."""
    settings = Settings(
        port=0, data_dir=str(tmp_path), backend="local", hosts=1, **{**NO_AUTH, **overrides}
    )
    cluster = await build_cluster(settings)
    app = create_app(settings, cluster)
    app[LIMITS] = limits
    runner = web.AppRunner(app, shutdown_timeout=2, **runner_options(limits))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield LimitedServer(f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/ws", port, app)
    finally:
        await runner.cleanup()
        await limits_state(app).close()


def as_address(ip: str) -> aiohttp.ClientSession:
    """An HTTP client that a server trusting loopback proxies takes for ``ip``."""
    return aiohttp.ClientSession(headers={"X-Forwarded-For": ip})


async def status_of(http: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, Any], str]:
    async with http.get(url) as response:
        body = await response.json(content_type=None) if response.status == 429 else {}
        return response.status, body, response.headers.get("Retry-After", "")


UPGRADE_HEADERS = {
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Version": "13",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
}


async def refused_upgrade(http: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, Any]]:
    """An upgrade request sent as plain HTTP, to read the refusal's body."""
    async with http.get(url, headers=UPGRADE_HEADERS) as response:
        body = await response.json(content_type=None) if response.status != 101 else {}
        return response.status, body


# -- REST ---------------------------------------------------------------------------------


async def test_a_rest_flood_gets_429_with_retry_after_while_another_client_gets_200(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="boardcast.limits")
    limits = GatewayLimits(rest_per_ip_per_second=1, rest_per_ip_burst=10, trusted_proxies=PROXY)
    async with limited_server(tmp_path, limits) as server:
        url = f"{server.http}/v1/projects"
        async with as_address("198.51.100.7") as flooder, as_address("198.51.100.8") as calm:
            flood: list[tuple[int, dict[str, Any], str]] = []
            calm_statuses: list[int] = []
            for n in range(60):
                flood.append(await status_of(flooder, url))
                if n % 6 == 0:
                    calm_statuses.append((await status_of(calm, url))[0])
            assert calm_statuses == [200] * 10
            assert {status for status, _, _ in flood} == {200, 429}
            refused = [(body, retry) for status, body, retry in flood if status == 429]
            assert len(refused) >= 60 - 10 - 10  # the burst, and at most ten refills
            body, retry = refused[0]
            assert body["type"] == "urn:boardcast:problem:rate-limited"
            assert body["status"] == 429
            assert int(retry) >= 1 and body["retry_after"] == int(retry)
            # One log line for the flooder, not one per refusal.
            lines = [r for r in caplog.records if "refused requests per IP" in r.getMessage()]
            assert len(lines) == 1 and "198.51.100.7" in lines[0].getMessage()
            # This machine's own clients (tests, benchmarks) are not limited by default.
            async with aiohttp.ClientSession() as local:
                for _ in range(30):
                    assert (await status_of(local, url))[0] == 200
            # Health checks are not counted: a load balancer keeps seeing the gateway up.
            for _ in range(30):
                async with flooder.get(f"{server.http}/healthz") as response:
                    assert response.status == 200


async def test_a_slow_request_body_is_answered_408_and_closed(tmp_path: Path) -> None:
    limits = GatewayLimits(body_timeout_seconds=1, trusted_proxies=PROXY)
    async with limited_server(tmp_path, limits) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            writer.write(
                b"POST /v1/projects HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b'Content-Length: 1000\r\n\r\n{"name": '
            )
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(), 30 * TIMEOUT_SCALE)  # until closed
        finally:
            writer.close()
        assert answer.startswith(b"HTTP/1.1 408")
        assert b"urn:boardcast:problem:request-timeout" in answer
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{server.http}/v1/projects", json={"name": "fast"}) as response:
                assert response.status in {200, 201}


# -- WebSockets ---------------------------------------------------------------------------


async def test_a_flood_of_upgrades_is_refused_while_an_open_session_keeps_working(
    tmp_path: Path,
) -> None:
    limits = GatewayLimits(
        ws_upgrades_per_ip_per_second=0.5, ws_upgrades_per_ip_burst=5, trusted_proxies=PROXY
    )
    async with limited_server(tmp_path, limits) as server:
        async with as_address("203.0.113.1") as http:
            async with BoardClient(server.ws, "shared", session=http) as writer:
                async with BoardClient(server.ws, "shared", session=http) as reader:
                    await writer.synced()
                    await reader.synced()
                    opened: list[aiohttp.ClientWebSocketResponse] = []
                    statuses: list[int] = []
                    async with as_address("198.51.100.66") as flooder:
                        for _ in range(40):
                            try:
                                opened.append(await flooder.ws_connect(f"{server.ws}/shared"))
                                statuses.append(101)
                            except aiohttp.WSServerHandshakeError as refused:
                                statuses.append(refused.status)
                        status, body = await refused_upgrade(flooder, f"{server.ws}/shared")
                        assert status == 429
                        assert body["type"] == "urn:boardcast:problem:rate-limited"
                        assert statuses.count(101) <= 5 + 1  # the burst, and one refill
                        assert statuses.count(429) >= 40 - 6
                        # The session opened before the flood still edits and hears edits.
                        tasks = writer.doc.get("tasks", type=Map)
                        tasks["t1"] = "written during the flood"
                        seen = reader.doc.get("tasks", type=Map)
                        await wait_until(lambda: "t1" in seen, 10, "the edit to arrive")
                        assert writer.close_code is None and reader.close_code is None
                        for ws in opened:
                            await ws.close()
        # Another address opens a session as usual.
        async with as_address("203.0.113.2") as http:
            async with BoardClient(server.ws, "shared", session=http) as late:
                await late.synced()
                await wait_until(
                    lambda: "t1" in late.doc.get("tasks", type=Map), 10, "the late sync"
                )


async def test_sockets_past_the_per_ip_cap_get_429_until_one_closes(tmp_path: Path) -> None:
    limits = GatewayLimits(max_sockets_per_ip=3, trusted_proxies=PROXY)
    async with limited_server(tmp_path, limits) as server:
        url = f"{server.ws}/capped"
        async with as_address("198.51.100.70") as http, as_address("198.51.100.71") as other:
            sockets = [await http.ws_connect(url) for _ in range(3)]
            status, body = await refused_upgrade(http, url)
            assert status == 429
            assert body["type"] == "urn:boardcast:problem:too-many-connections"
            # Another address is not affected.
            neighbour = await other.ws_connect(url)
            await neighbour.close()
            await sockets.pop().close()
            # The slot is free once the server has seen the close.
            fourth: aiohttp.ClientWebSocketResponse | None = None
            for _ in range(int(50 * TIMEOUT_SCALE)):
                try:
                    fourth = await http.ws_connect(url)
                    break
                except aiohttp.WSServerHandshakeError as refused:
                    assert refused.status == 429
                    await asyncio.sleep(0.1)
            assert fourth is not None
            for ws in [*sockets, fourth]:
                await ws.close()


async def test_a_user_past_the_socket_cap_is_closed_with_4430() -> None:
    # admit_user_socket is what the board socket calls once it knows the user.
    limits = GatewayLimits(max_sockets_per_user=2)
    state = open_limits(None)
    state.configure(limits)

    async def handler(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        refused = await admit_user_socket(request, request.query["user"])
        if refused is not None:
            await ws.close(code=int(refused), message=b"too many connections")
            return ws
        async for _ in ws:
            pass
        return ws

    app = web.Application(middlewares=[limits_middleware(state)])
    app.router.add_get("/ws", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"ws://127.0.0.1:{runner.addresses[0][1]}/ws"
    try:
        async with aiohttp.ClientSession() as http:
            first = await http.ws_connect(f"{url}?user=ada")
            second = await http.ws_connect(f"{url}?user=ada")
            third = await http.ws_connect(f"{url}?user=ada")
            await asyncio.wait_for(third.receive(), 10 * TIMEOUT_SCALE)
            assert third.close_code == CloseCode.TOO_MANY_CONNECTIONS == 4430
            bob = await http.ws_connect(f"{url}?user=bob")
            await first.close()
            await wait_until(lambda: state.sockets_per_user.held("user:ada") == 1)
            again = await http.ws_connect(f"{url}?user=ada")
            for ws in (second, bob, again):
                assert ws.close_code is None
                await ws.close()
    finally:
        await runner.cleanup()
        await state.close()


# -- slow clients -------------------------------------------------------------------------


async def _trickle(port: int, head: bytes, give_up_at: float) -> bool:
    """Send ``head``, then one byte every 0.2 s; True once the server closes the connection."""
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head)
        while loop.time() < give_up_at:
            try:
                data = await asyncio.wait_for(reader.read(1024), 0.2)
            except TimeoutError:
                writer.write(b"a")
                continue
            if not data:
                return True
        return False
    except ConnectionError:
        return True
    finally:
        writer.close()


async def test_connections_that_never_finish_their_request_head_are_closed(
    tmp_path: Path,
) -> None:
    limits = GatewayLimits(handshake_timeout_seconds=1.0, trusted_proxies=PROXY)
    async with limited_server(tmp_path, limits) as server:
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + 60 * TIMEOUT_SCALE
        slow_get = b"GET /v1/projects HTTP/1.1\r\nHost: x\r\nX-Slow: "
        slow_upgrade = (
            b"GET /ws/slow HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nX-Slow: "
        )
        idle = b""  # connects and sends nothing at all
        heads = [slow_get] * 600 + [slow_upgrade] * 200 + [idle] * 200
        trickles = [asyncio.ensure_future(_trickle(server.port, h, give_up_at)) for h in heads]
        try:
            # Meanwhile everyone else is served.
            async with as_address("203.0.113.50") as http:
                for _ in range(5):
                    async with http.get(f"{server.http}/v1/projects") as response:
                        assert response.status == 200
                closed = await asyncio.gather(*trickles)
                assert all(closed), f"{closed.count(False)} slow connections still open"
                async with http.get(f"{server.http}/v1/projects") as response:
                    assert response.status == 200
                async with BoardClient(server.ws, "after", session=http) as client:
                    await client.synced()
        finally:
            for trickle in trickles:
                trickle.cancel()


# -- Redis: one limit across gateways -----------------------------------------------------


async def test_gateways_sharing_redis_share_one_limit(
    tmp_path: Path,
    redis_server: str,  # noqa: F811 - fixture
) -> None:
    cluster_name = f"limits{uuid.uuid4().hex[:8]}"
    limits = GatewayLimits(
        rest_per_ip_per_second=0.01,
        rest_per_ip_burst=10,
        max_sockets_per_ip=2,
        socket_count_ttl_seconds=1.0,
        trusted_proxies=PROXY,
    )
    shared = {"redis": redis_server, "cluster_name": cluster_name}
    async with (
        limited_server(tmp_path / "a", limits, **shared) as first,
        limited_server(tmp_path / "b", limits, **shared) as second,
    ):
        async with as_address("198.51.100.99") as http:
            statuses = []
            for _ in range(8):
                for server in (first, second):
                    statuses.append((await status_of(http, f"{server.http}/v1/projects"))[0])
            # Ten in all, not ten per gateway.
            assert statuses.count(200) == 10
            assert statuses.count(429) == 6

            # Open sockets are counted across gateways too.
            one = await http.ws_connect(f"{first.ws}/room")
            two = await http.ws_connect(f"{second.ws}/room")
            status, body = await refused_upgrade(http, f"{first.ws}/room")
            assert status == 429 and body["type"].endswith(":too-many-connections")
            # A gateway that dies stops renewing its counts: they expire, the slot frees.
            await limits_state(second.app).sockets_per_ip.close()
            three: aiohttp.ClientWebSocketResponse | None = None
            for _ in range(int(100 * TIMEOUT_SCALE)):
                try:
                    three = await http.ws_connect(f"{first.ws}/room")
                    break
                except aiohttp.WSServerHandshakeError:
                    await asyncio.sleep(0.1)
            assert three is not None
            for ws in (one, two, three):
                await ws.close()


@pytest.mark.parametrize("fail_open", [True, False])
async def test_a_redis_outage_fails_open_or_closed_as_configured(
    fail_open: bool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="boardcast.limits")
    # Nothing listens on this port: every Redis call fails at once.
    unreachable = "redis://127.0.0.1:1/0"
    limits = GatewayLimits(rest_per_ip_burst=5, redis_fail_open=fail_open, trusted_proxies=PROXY)
    state = open_limits(unreachable, cluster="outage")
    state.configure(limits)
    try:
        decisions = [await state.rest_per_ip.take("198.51.100.1") for _ in range(20)]
        assert all(d.allowed is fail_open for d in decisions)
        # Logged once (a minute), not once per request.
        warnings = [r for r in caplog.records if "Redis failed" in r.getMessage()]
        assert len(warnings) == 1
        assert await state.sockets_per_ip.acquire("198.51.100.1") is fail_open
    finally:
        await state.close()


async def test_a_redis_that_never_answers_is_waited_for_once_not_per_request() -> None:
    connections = 0

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        with contextlib.suppress(ConnectionError):
            while await reader.read(4096):
                pass  # reads every command, answers none
        writer.close()

    hung = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = hung.sockets[0].getsockname()[1]
    state = open_limits(f"redis://127.0.0.1:{port}/0", cluster="hung")
    state.configure(GatewayLimits(redis_timeout_seconds=0.2))
    try:
        decisions = [await state.rest_per_ip.take("198.51.100.2") for _ in range(20)]
        decisions += [await state.ws_upgrades_per_ip.take("198.51.100.2") for _ in range(20)]
        assert await state.sockets_per_ip.acquire("198.51.100.2")
        assert all(d.allowed for d in decisions)  # failing open, the default
        # One limiter waited out the timeout; the others skipped Redis while it was down.
        assert connections == 1
    finally:
        await state.close()
        hung.close()
