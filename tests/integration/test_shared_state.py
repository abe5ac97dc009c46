"""The contract of the shared state, run in-process and against a real ``redis-server``.

Each test opens several clients on one deployment, as separate gateway and host processes
would. The Redis clients of a test share a key prefix of their own; see
``tests/redis_server.py`` for the server (or ``BOARDCAST_TEST_REDIS_URL``).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis.asyncio as aioredis

from shared.factory import open_shared_state
from shared.memory import MemoryData, MemorySharedState
from shared.redis_state import RedisSharedState
from shared.state import SessionInfo, SharedState, SharedStateUnavailable, keep_gateway_alive
from tests.redis_server import (
    RedisServer,
    redis_installed,
    redis_server,  # noqa: F401 - fixture
)
from tests.services import TIMEOUT_SCALE

T = TypeVar("T")

# Short enough to wait out in a test, long enough that a busy loop never misses a refresh.
SHORT_TTL = 1.0 * TIMEOUT_SCALE
LONG_TTL = 120.0


async def eventually(
    read: Callable[[], Awaitable[T]], check: Callable[[T], bool], timeout: float = 10.0
) -> T:
    """Poll ``read`` until ``check`` holds for its result; fail after ``timeout`` (scaled)."""
    deadline = time.monotonic() + timeout * TIMEOUT_SCALE
    while True:
        value = await read()
        if check(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"still {value!r} after {timeout * TIMEOUT_SCALE} s")
        await asyncio.sleep(0.02)


@dataclass
class Deployment:
    """One shared state, and a way to open another client on it."""

    kind: str
    connect: Callable[[], SharedState]
    # The server restarts empty, as Redis without persistence does.
    lose_everything: Callable[[], Awaitable[None]]


@pytest.fixture(params=["memory", "redis"])
async def deployment(request: pytest.FixtureRequest) -> AsyncIterator[Deployment]:
    """Run the test once in-process and once on Redis."""
    opened: list[SharedState] = []
    admin: aioredis.Redis | None = None
    prefix = f"test-{uuid.uuid4().hex[:12]}:"
    if request.param == "memory":
        data = MemoryData()

        def open_memory() -> SharedState:
            return MemorySharedState(data)

        async def lose_memory() -> None:
            data.clear()

        opened_by, lose = open_memory, lose_memory
    else:
        url = request.getfixturevalue("redis_server")
        admin = aioredis.Redis.from_url(url)

        def open_redis() -> SharedState:
            return RedisSharedState(url, prefix=prefix)

        async def lose_redis() -> None:
            assert admin is not None
            keys = [key async for key in admin.scan_iter(match=prefix + "*")]
            if keys:
                await admin.delete(*keys)
            await admin.script_flush()

        opened_by, lose = open_redis, lose_redis

    def connect() -> SharedState:
        state = opened_by()
        opened.append(state)
        return state

    yield Deployment(str(request.param), connect, lose)
    for state in opened:
        await state.close()
    if admin is not None:
        await lose()
        await admin.aclose()


async def warmed_up(clients: list[SharedState], calls: int) -> list[SharedState]:
    """Open ``calls`` connections per client first: opening them serializes the first calls."""
    await asyncio.gather(*(c.get_token("warm-up") for c in clients for _ in range(calls)))
    return clients


def session(gateway: str, board: str, session_id: str, **info: Any) -> SessionInfo:
    return SessionInfo(gateway, board, session_id, info)


# -- sessions and presence ----------------------------------------------------------------


async def test_every_process_sees_every_gateways_sessions(deployment: Deployment) -> None:
    gateway_a, gateway_b, reader = (deployment.connect() for _ in range(3))
    await gateway_a.refresh_gateway("gw-a", LONG_TTL)
    await gateway_b.refresh_gateway("gw-b", LONG_TTL)
    await gateway_a.register_session("gw-a", "board-1", "1", {"user": "ann", "tags": ["x"]})
    await gateway_a.register_session("gw-a", "board-2", "2", {"user": "bob"})
    await gateway_b.register_session("gw-b", "board-1", "1", {"user": "cyd"})

    assert await reader.board_sessions("board-1") == [
        session("gw-a", "board-1", "1", user="ann", tags=["x"]),
        session("gw-b", "board-1", "1", user="cyd"),
    ]
    assert await reader.gateway_sessions("gw-a") == [
        session("gw-a", "board-1", "1", user="ann", tags=["x"]),
        session("gw-a", "board-2", "2", user="bob"),
    ]
    assert await reader.live_gateways() == ["gw-a", "gw-b"]
    assert await reader.board_sessions("board-3") == []


async def test_ended_and_moved_sessions_leave_their_board(deployment: Deployment) -> None:
    gateway, reader = deployment.connect(), deployment.connect()
    await gateway.refresh_gateway("gw-a", LONG_TTL)
    await gateway.register_session("gw-a", "board-1", "1", {"user": "ann"})
    await gateway.register_session("gw-a", "board-1", "2", {"user": "bob"})
    await gateway.register_session("gw-a", "board-1", "3", {"user": "cyd"})

    await gateway.unregister_session("gw-a", "board-1", "1")
    await gateway.unregister_session("gw-a", "board-1", "unknown")
    await gateway.register_session("gw-a", "board-2", "3", {"user": "cyd"})

    assert await reader.board_sessions("board-1") == [session("gw-a", "board-1", "2", user="bob")]
    assert await reader.board_sessions("board-2") == [session("gw-a", "board-2", "3", user="cyd")]
    await gateway.unregister_session("gw-a", "board-1", "2")
    await gateway.unregister_session("gw-a", "board-2", "3")
    assert await reader.board_sessions("board-1") == []
    assert await reader.gateway_sessions("gw-a") == []
    assert await reader.live_gateways() == ["gw-a"]


async def test_a_dead_gateways_sessions_vanish_after_its_ttl(deployment: Deployment) -> None:
    dying, surviving, reader = (deployment.connect() for _ in range(3))
    await dying.refresh_gateway("gw-dying", SHORT_TTL)
    await dying.register_session("gw-dying", "board-1", "1", {"user": "ann"})
    await surviving.refresh_gateway("gw-alive", LONG_TTL)
    await surviving.register_session("gw-alive", "board-1", "1", {"user": "bob"})
    assert len(await reader.board_sessions("board-1")) == 2

    # gw-dying never refreshes again.
    await eventually(lambda: reader.board_sessions("board-1"), lambda found: len(found) == 1)
    assert await reader.board_sessions("board-1") == [
        session("gw-alive", "board-1", "1", user="bob")
    ]
    assert await reader.live_gateways() == ["gw-alive"]
    assert await reader.gateway_sessions("gw-dying") == []


async def test_a_refreshing_gateway_stays_and_vanishes_once_it_stops(
    deployment: Deployment,
) -> None:
    gateway, reader = deployment.connect(), deployment.connect()
    await gateway.register_session("gw-a", "board-1", "1", {"user": "ann"})
    keeper = asyncio.create_task(
        keep_gateway_alive(gateway, "gw-a", ttl_s=SHORT_TTL, every_s=SHORT_TTL / 10)
    )
    try:
        await asyncio.sleep(3 * SHORT_TTL)
        assert await reader.board_sessions("board-1") == [
            session("gw-a", "board-1", "1", user="ann")
        ]
        assert await reader.live_gateways() == ["gw-a"]
    finally:
        keeper.cancel()
    await eventually(reader.live_gateways, lambda live: live == [])
    assert await reader.board_sessions("board-1") == []


@pytest.mark.parametrize("first_call", ["refresh", "register"])
async def test_a_restarted_gateway_replaces_what_its_last_process_left(
    deployment: Deployment, first_call: str
) -> None:
    earlier, reader = deployment.connect(), deployment.connect()
    await earlier.refresh_gateway("gw-a", LONG_TTL)
    await earlier.register_session("gw-a", "board-1", "1", {"user": "ann"})
    await earlier.register_session("gw-a", "board-2", "2", {"user": "bob"})
    await earlier.close()  # the process dies without unregistering anything

    restarted = deployment.connect()
    if first_call == "refresh":
        await restarted.refresh_gateway("gw-a", LONG_TTL)
        assert await reader.gateway_sessions("gw-a") == []
    # Session ids restart too: "1" now names another client, on another board.
    await restarted.register_session("gw-a", "board-2", "1", {"user": "dan"})

    assert await reader.board_sessions("board-1") == []
    assert await reader.board_sessions("board-2") == [session("gw-a", "board-2", "1", user="dan")]
    assert await reader.gateway_sessions("gw-a") == [session("gw-a", "board-2", "1", user="dan")]


async def test_a_gateway_that_stops_cleanly_vanishes_at_once(deployment: Deployment) -> None:
    gateway, other, reader = (deployment.connect() for _ in range(3))
    await gateway.refresh_gateway("gw-a", LONG_TTL)
    await other.refresh_gateway("gw-b", LONG_TTL)
    await gateway.register_session("gw-a", "board-1", "1", {"user": "ann"})
    await other.register_session("gw-b", "board-1", "1", {"user": "bob"})

    await gateway.drop_gateway("gw-a")

    assert await reader.board_sessions("board-1") == [session("gw-b", "board-1", "1", user="bob")]
    assert await reader.live_gateways() == ["gw-b"]


async def test_the_owner_writes_its_sessions_again_after_the_server_lost_them(
    deployment: Deployment,
) -> None:
    gateway, reader = deployment.connect(), deployment.connect()
    await gateway.refresh_gateway("gw-a", LONG_TTL)
    await gateway.register_session("gw-a", "board-1", "1", {"user": "ann"})
    await gateway.register_session("gw-a", "board-2", "2", {"user": "bob"})

    await deployment.lose_everything()
    assert await reader.board_sessions("board-1") == []
    await gateway.refresh_gateway("gw-a", LONG_TTL)

    assert await reader.board_sessions("board-1") == [session("gw-a", "board-1", "1", user="ann")]
    assert await reader.board_sessions("board-2") == [session("gw-a", "board-2", "2", user="bob")]
    assert await reader.live_gateways() == ["gw-a"]


async def test_concurrent_registrations_on_a_fresh_gateway_all_land(
    deployment: Deployment,
) -> None:
    gateway, reader = deployment.connect(), deployment.connect()
    await warmed_up([gateway], 10)
    # The first call replaces what an earlier process left; none of the others may be lost.
    await asyncio.gather(
        *(gateway.register_session("gw-a", f"board-{n % 3}", str(n), {"n": n}) for n in range(50))
    )
    assert len(await reader.gateway_sessions("gw-a")) == 50
    await gateway.refresh_gateway("gw-a", LONG_TTL)
    assert len(await reader.board_sessions("board-0")) == 17


class FlakyMemoryState(MemorySharedState):
    """Writes fail while ``down`` is set, as they do when the network to Redis is cut."""

    down = False

    def _check(self) -> None:
        if self.down:
            raise SharedStateUnavailable("cut off")

    async def _put_session(self, *args: Any) -> None:
        self._check()
        await super()._put_session(*args)

    async def _delete_session(self, *args: Any) -> None:
        self._check()
        await super()._delete_session(*args)

    async def _touch_gateway(self, gateway_id: str, ttl_s: float) -> int:
        self._check()
        return await super()._touch_gateway(gateway_id, ttl_s)

    async def _replace_gateway(self, *args: Any, **options: Any) -> None:
        self._check()
        await super()._replace_gateway(*args, **options)


async def test_writes_that_failed_are_made_good_by_the_next_refresh() -> None:
    data = MemoryData()
    gateway, reader = FlakyMemoryState(data), MemorySharedState(data)
    await gateway.refresh_gateway("gw-a", LONG_TTL)
    await gateway.register_session("gw-a", "board-1", "1", {"user": "ann"})

    gateway.down = True
    with pytest.raises(SharedStateUnavailable):
        await gateway.register_session("gw-a", "board-1", "2", {"user": "bob"})
    with pytest.raises(SharedStateUnavailable):
        await gateway.unregister_session("gw-a", "board-1", "1")
    gateway.down = False
    # One session is stored and one is owned, but not the same one.
    await gateway.refresh_gateway("gw-a", LONG_TTL)

    assert await reader.board_sessions("board-1") == [session("gw-a", "board-1", "2", user="bob")]


async def test_gateway_ids_that_could_collide_are_refused(deployment: Deployment) -> None:
    gateway = deployment.connect()
    with pytest.raises(ValueError):
        await gateway.register_session("gw:a", "board-1", "1")
    with pytest.raises(ValueError):
        await gateway.refresh_gateway("", LONG_TTL)


# -- directory cache ----------------------------------------------------------------------


async def test_board_host_cache(deployment: Deployment) -> None:
    writer, reader = deployment.connect(), deployment.connect()
    assert await reader.cached_board_host("board-1") is None
    await writer.cache_board_host("board-1", "host-0", LONG_TTL)
    assert await reader.cached_board_host("board-1") == "host-0"

    # Only the host that failed is forgotten: a newer answer stays.
    await reader.forget_board_host("board-1", host_name="host-1")
    assert await reader.cached_board_host("board-1") == "host-0"
    await reader.forget_board_host("board-1", host_name="host-0")
    assert await reader.cached_board_host("board-1") is None

    await writer.cache_board_host("board-2", "host-1", LONG_TTL)
    await writer.forget_board_host("board-2")
    assert await reader.cached_board_host("board-2") is None

    await writer.cache_board_host("board-3", "host-2", SHORT_TTL / 2)
    await eventually(lambda: reader.cached_board_host("board-3"), lambda host: host is None)


# -- rate limiting ------------------------------------------------------------------------


async def test_rate_limit_allows_limit_hits_per_window(deployment: Deployment) -> None:
    first, second = deployment.connect(), deployment.connect()
    window = SHORT_TTL / 2
    decisions = [
        await client.hit("login:ann", limit=3, window_s=window)
        for client in (first, second, first, second)
    ]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0]
    assert all(0 < d.reset_after_s <= window for d in decisions)
    assert (await first.hit("login:bob", limit=3, window_s=window)).allowed

    # The next window starts afresh.
    decision = await eventually(
        lambda: first.hit("login:ann", limit=3, window_s=window), lambda d: d.allowed
    )
    assert decision.remaining == 2


async def test_concurrent_hits_never_pass_the_limit(deployment: Deployment) -> None:
    clients = await warmed_up([deployment.connect() for _ in range(5)], 10)
    decisions = await asyncio.gather(
        *(
            client.hit("ws:gw-a", limit=10, window_s=LONG_TTL)
            for client in clients
            for _ in range(10)
        )
    )
    allowed = [d for d in decisions if d.allowed]
    assert len(allowed) == 10
    # Each allowed hit saw a count of its own.
    assert sorted(d.remaining for d in allowed) == list(range(10))


# -- tokens -------------------------------------------------------------------------------


async def test_a_token_is_stored_read_and_taken_once(deployment: Deployment) -> None:
    issuer, user = deployment.connect(), deployment.connect()
    data = {"user": "ann", "scopes": ["read", "write"], "family": 7}
    await issuer.put_token("refresh-1", data, LONG_TTL)
    assert await user.get_token("refresh-1") == data
    assert await user.pop_token("refresh-1") == data
    assert await user.pop_token("refresh-1") is None
    assert await issuer.get_token("refresh-1") is None
    assert await issuer.get_token("never-issued") is None

    await issuer.put_token("refresh-2", data, SHORT_TTL / 2)
    await eventually(lambda: user.get_token("refresh-2"), lambda found: found is None)


async def test_concurrent_use_of_a_refresh_token_has_one_winner(deployment: Deployment) -> None:
    clients = await warmed_up([deployment.connect() for _ in range(5)], 10)
    await clients[0].put_token("refresh-1", {"user": "ann"}, LONG_TTL)
    taken = await asyncio.gather(
        *(client.pop_token("refresh-1") for client in clients for _ in range(10))
    )
    assert [found for found in taken if found is not None] == [{"user": "ann"}]


async def test_revoked_tokens(deployment: Deployment) -> None:
    auth, checker = deployment.connect(), deployment.connect()
    await auth.put_token("token-1", {"user": "ann"}, LONG_TTL)
    await auth.revoke_token("token-1", LONG_TTL)
    await auth.revoke_token("token-2", SHORT_TTL / 2)

    assert await checker.is_revoked("token-1")
    assert await checker.get_token("token-1") is None
    assert await checker.pop_token("token-1") is None
    assert not await checker.is_revoked("token-3")
    # A revocation lasts as long as the token would have.
    await eventually(lambda: checker.is_revoked("token-2"), lambda revoked: not revoked)


async def test_tokens_older_than_the_revocation_list_count_as_revoked(
    deployment: Deployment,
) -> None:
    gateway, auth = deployment.connect(), deployment.connect()
    await gateway.refresh_gateway("gw-a", LONG_TTL)  # the list begins by this time
    assert await auth.is_revoked("old", issued_at=time.time() - 3600)
    assert not await auth.is_revoked("new", issued_at=time.time())

    issued = time.time()
    await auth.revoke_token("token-1", LONG_TTL)
    await deployment.lose_everything()
    await asyncio.sleep(0.01)  # the restarted list begins strictly after `issued`

    # The revocation is gone; a token issued before the loss is refused all the same.
    assert not await auth.is_revoked("token-1")
    assert await auth.is_revoked("token-1", issued_at=issued)
    assert not await auth.is_revoked("token-4", issued_at=time.time() + 1)


# -- opening, and a real Redis restart ----------------------------------------------------


async def test_open_shared_state_picks_the_implementation_by_url() -> None:
    for url in (None, "memory", " memory "):
        state = open_shared_state(url)
        assert isinstance(state, MemorySharedState)
        await state.close()
    state = open_shared_state("redis://127.0.0.1:1/0", prefix="other:")
    assert isinstance(state, RedisSharedState)
    assert state.prefix == "other:"
    await state.close()
    with pytest.raises(ValueError):
        open_shared_state("mongodb://127.0.0.1/boardcast")


@pytest.mark.skipif(not redis_installed(), reason="redis-server is not installed")
async def test_shared_state_recovers_by_itself_after_a_redis_restart(tmp_path: Path) -> None:
    server = RedisServer(log_dir=tmp_path)
    server.start()
    gateway = RedisSharedState(server.url, timeout_s=0.5)
    reader = RedisSharedState(server.url, timeout_s=0.5)
    keeper = asyncio.create_task(keep_gateway_alive(gateway, "gw-a", ttl_s=LONG_TTL, every_s=0.05))
    try:
        await gateway.register_session("gw-a", "board-1", "1", {"user": "ann"})
        await gateway.cache_board_host("board-1", "host-0", LONG_TTL)
        assert (await gateway.hit("login:ann", limit=1, window_s=LONG_TTL)).allowed
        assert not (await gateway.hit("login:ann", limit=1, window_s=LONG_TTL)).allowed

        server.stop()
        with pytest.raises(SharedStateUnavailable):
            await reader.board_sessions("board-1")
        # A client that arrives during the outage is remembered by its gateway.
        with pytest.raises(SharedStateUnavailable):
            await gateway.register_session("gw-a", "board-1", "2", {"user": "bob"})
        with pytest.raises(SharedStateUnavailable):
            await gateway.hit("login:ann", limit=1, window_s=LONG_TTL)

        server.start()  # same port, no data
        await eventually(
            lambda: reader.board_sessions("board-1"),
            lambda found: (
                found
                == [
                    session("gw-a", "board-1", "1", user="ann"),
                    session("gw-a", "board-1", "2", user="bob"),
                ]
            ),
        )
        assert not keeper.done()
        assert await reader.live_gateways() == ["gw-a"]
        # Caches and counters start afresh; that is their documented cost.
        assert await reader.cached_board_host("board-1") is None
        assert (await gateway.hit("login:ann", limit=1, window_s=LONG_TTL)).allowed
    finally:
        keeper.cancel()
        await asyncio.gather(keeper, return_exceptions=True)
        await gateway.close()
        await reader.close()
        server.stop()


async def test_cached_values_are_shared_and_expire(deployment: Deployment) -> None:
    writer, reader = deployment.connect(), deployment.connect()
    await writer.cache_put("query-1", b"\x00answer", LONG_TTL)
    assert await reader.cache_get("query-1") == b"\x00answer"
    assert await reader.cache_get("query-2") is None
    await writer.cache_put("query-1", b"newer", LONG_TTL)
    assert await reader.cache_get("query-1") == b"newer"
    await writer.cache_put("short", b"x", SHORT_TTL)
    await eventually(lambda: reader.cache_get("short"), lambda value: value is None)
