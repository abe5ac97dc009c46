"""How much one client may ask of a gateway: every limit, and the limiters that apply them.

:class:`GatewayLimits` holds the limits; :class:`LimitsState` builds one limiter per limit:
token buckets (``gateway/buckets.py``) and open-socket counts (``gateway/socket_counts.py``),
in this process, or in Redis when a Redis URL is configured (the same URL as
``settings.redis``), which makes a limit hold across every gateway sharing it. The client's
address comes from ``gateway/client_address.py``. None of it imports aiohttp
(``gateway/limits_middleware.py`` applies it to requests), so it is tested with an injected
clock and plain strings. Every limit, its default and what a client gets past it is listed
in docs/limits.md.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, fields

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from gateway.buckets import (
    ALLOWED,
    Clock,
    Decision,
    LogThrottle,
    MemoryTokenBucket,
    RedisCircuit,
    RedisOutage,
    RedisTokenBucket,
    TokenBucket,
    Unlimited,
)
from gateway.client_address import (
    address_in,
    client_ip,
    client_ip_from,
    ip_limit_key,
    trusted_networks,
)
from gateway.socket_counts import (
    ConnectionCounter,
    MemoryConnectionCounter,
    RedisConnectionCounter,
    UncappedCounter,
)

__all__ = [
    "ALLOWED",
    "ConnectionCounter",
    "Decision",
    "GatewayLimits",
    "LimitsState",
    "LogThrottle",
    "MemoryConnectionCounter",
    "MemoryTokenBucket",
    "RedisConnectionCounter",
    "RedisTokenBucket",
    "TokenBucket",
    "check_login",
    "check_user",
    "client_ip",
    "client_ip_from",
    "ip_limit_key",
]


@dataclass(frozen=True, slots=True)
class GatewayLimits:
    """Every limit the gateway applies to its clients, with its default (docs/limits.md).

    Rates are per second unless named otherwise; a rate or a cap of 0 turns that limit off.
    """

    rest_per_ip_per_second: float = 20.0  # requests of one IP, past them 429 rate-limited
    rest_per_ip_burst: int = 100
    rest_per_user_per_second: float = 20.0  # requests of one signed-in user (check_user)
    rest_per_user_burst: int = 100
    ws_upgrades_per_ip_per_second: float = 5.0  # WebSocket upgrades of one IP; past them 429
    ws_upgrades_per_ip_burst: int = 60  # a NAT full of clients reconnecting after a restart
    max_sockets_per_ip: int = 256  # open WebSockets of one IP; past it 429 before the upgrade
    max_sockets_per_user: int = 32  # open WebSockets of one user; past it close code 4430
    login_per_username_per_hour: float = 10.0  # slow brute force on one account
    login_per_username_burst: int = 10
    login_per_ip_per_hour: float = 100.0  # slow brute force from one address
    login_per_ip_burst: int = 30
    # From TCP accept (or the end of the previous response) to a complete request head,
    # WebSocket upgrade requests included; also how long an idle keep-alive connection stays.
    handshake_timeout_seconds: float = 15.0
    body_timeout_seconds: float = 60.0  # to receive a request body in full; past it 408
    trusted_proxies: tuple[str, ...] = ()  # CIDRs whose X-Forwarded-For is believed
    max_forwarded_for_chars: int = 2048  # a longer X-Forwarded-For is ignored
    ipv6_prefix_length: int = 64  # IPv6 clients share limits per network of this size
    max_tracked_keys: int = 100_000  # buckets kept in process; least recently used dropped
    redis_fail_open: bool = True  # Redis down: allow requests and sockets (False: refuse)
    login_fail_open: bool = False  # Redis down: allow login attempts (False: refuse them)
    redis_timeout_seconds: float = 0.5  # one Redis call of a limiter
    socket_count_ttl_seconds: float = 30.0  # a dead gateway's socket counts vanish after this
    refusal_log_seconds: float = 60.0  # at most one log line per refused key in this time
    exempt_paths: tuple[str, ...] = ("/healthz", "/readyz", "/metrics")
    # Clients no per-address limit applies to: this machine (tests, benchmarks, tools on the
    # host). Behind a proxy on the same host, list it in trusted_proxies, or all are exempt.
    exempt_addresses: tuple[str, ...] = ("127.0.0.0/8", "::1")

    def __post_init__(self) -> None:
        for spec in fields(self):
            value = getattr(self, spec.name)
            if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
                raise ValueError(f"{spec.name} must not be negative, got {value!r}")
        trusted_networks(self.trusted_proxies)  # a bad CIDR fails at start, with its text
        trusted_networks(self.exempt_addresses)
        if not 0 < self.ipv6_prefix_length <= 128:
            raise ValueError("ipv6_prefix_length must be 1-128")
        for rate, burst in (
            ("rest_per_ip_per_second", "rest_per_ip_burst"),
            ("rest_per_user_per_second", "rest_per_user_burst"),
            ("ws_upgrades_per_ip_per_second", "ws_upgrades_per_ip_burst"),
            ("login_per_username_per_hour", "login_per_username_burst"),
            ("login_per_ip_per_hour", "login_per_ip_burst"),
        ):
            if getattr(self, rate) > 0 and getattr(self, burst) < 1:
                raise ValueError(f"{burst} must be at least 1 while {rate} is on")


# -- everything one gateway applies ---------------------------------------------------------


class LimitsState:
    """The limiters of one gateway: in process, or in Redis when ``redis_url`` is set.

    Built empty; :meth:`configure` creates the limiters from a :class:`GatewayLimits` (the
    middleware does it at the first request, from the app's ``LIMITS`` key or the defaults).
    """

    def __init__(
        self,
        redis_url: str | None = None,
        *,
        prefix: str = "boardcast:",
        limits: GatewayLimits | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        url = (redis_url or "").strip()
        self.redis_url = url if url not in {"", "memory"} else None
        self.prefix = prefix
        self.clock = clock
        self.gateway_id = uuid.uuid4().hex[:16]
        self.refusals = LogThrottle(clock=clock)
        self._client: aioredis.Redis | None = None
        # One for all limiters: after a Redis failure, none waits on Redis for a while.
        self._circuit = RedisCircuit(clock=clock)
        self.limits: GatewayLimits | None = None
        if limits is not None:
            self.configure(limits)

    def configure(self, limits: GatewayLimits) -> None:
        """Create every limiter for ``limits`` (once; later calls with other limits refuse)."""
        if self.limits is not None:
            if limits != self.limits:
                raise RuntimeError("limits are configured already; make a new LimitsState")
            return
        self.refusals.interval = limits.refusal_log_seconds
        if self.redis_url is not None and self._client is None:
            timeout = limits.redis_timeout_seconds
            self._client = aioredis.Redis.from_url(
                self.redis_url,
                socket_connect_timeout=timeout,
                socket_timeout=timeout,
                # One quick retry for a connection a Redis restart broke; none for a timeout
                # (the script may have run, and a request must not wait several timeouts).
                retry=Retry(
                    ExponentialBackoff(cap=0.05, base=0.01),
                    retries=1,
                    supported_errors=(RedisConnectionError,),
                ),
            )
        hour = 3600.0
        fail_open = limits.redis_fail_open
        self.rest_per_ip = self._bucket(
            "rest-ip", limits.rest_per_ip_per_second, limits.rest_per_ip_burst, limits, fail_open
        )
        self.rest_per_user = self._bucket(
            "rest-user",
            limits.rest_per_user_per_second,
            limits.rest_per_user_burst,
            limits,
            fail_open,
        )
        self.ws_upgrades_per_ip = self._bucket(
            "ws-ip",
            limits.ws_upgrades_per_ip_per_second,
            limits.ws_upgrades_per_ip_burst,
            limits,
            fail_open,
        )
        login = limits.login_fail_open
        self.login_per_username = self._bucket(
            "login-user",
            limits.login_per_username_per_hour / hour,
            limits.login_per_username_burst,
            limits,
            login,
        )
        self.login_per_ip = self._bucket(
            "login-ip",
            limits.login_per_ip_per_hour / hour,
            limits.login_per_ip_burst,
            limits,
            login,
        )
        self.sockets_per_ip = self._counter("ip", limits.max_sockets_per_ip, limits)
        self.sockets_per_user = self._counter("user", limits.max_sockets_per_user, limits)
        self.limits = limits

    def _bucket(
        self, name: str, rate: float, burst: int, limits: GatewayLimits, fail_open: bool
    ) -> TokenBucket:
        if rate <= 0:
            return Unlimited()
        if self._client is None:
            return MemoryTokenBucket(
                rate=rate, burst=burst, max_keys=limits.max_tracked_keys, clock=self.clock
            )
        outage = RedisOutage(fail_open=fail_open, clock=self.clock, circuit=self._circuit)
        return RedisTokenBucket(
            self._client, name, rate=rate, burst=burst, prefix=self.prefix, outage=outage
        )

    def _counter(self, name: str, limit: int, limits: GatewayLimits) -> ConnectionCounter:
        if limit <= 0:
            return UncappedCounter(limit=0)
        if self._client is None:
            return MemoryConnectionCounter(limit=limit)
        return RedisConnectionCounter(
            self._client,
            name,
            limit=limit,
            prefix=self.prefix,
            gateway_id=self.gateway_id,
            ttl_seconds=limits.socket_count_ttl_seconds,
            outage=RedisOutage(
                fail_open=limits.redis_fail_open, clock=self.clock, circuit=self._circuit
            ),
        )

    def require(self) -> GatewayLimits:
        """The configured limits (the defaults, configured now, if none were)."""
        if self.limits is None:
            self.configure(GatewayLimits())
        assert self.limits is not None
        return self.limits

    async def close(self) -> None:
        """Stop the socket counts' renewal and close the Redis connection, if any."""
        if self.limits is not None:
            await self.sockets_per_ip.close()
            await self.sockets_per_user.close()
        if self._client is not None:
            await self._client.aclose()
            self._client = None


async def check_user(limits_state: LimitsState, user_id: str) -> Decision:
    """One REST request of signed-in ``user_id`` (call it after authentication)."""
    limits_state.require()
    return await limits_state.rest_per_user.take(f"user:{user_id}")


async def check_login(limits_state: LimitsState, username: str, ip: str) -> Decision:
    """One login attempt for ``username`` from ``ip``: both budgets must allow it.

    Call it before checking the password, for every attempt (a success counts too: at the
    default 10 an hour per account, only someone guessing runs out).
    """
    limits = limits_state.require()
    if not address_in(ip, limits.exempt_addresses):
        key = ip_limit_key(ip, limits.ipv6_prefix_length)
        by_ip = await limits_state.login_per_ip.take(key)
        if not by_ip.allowed:
            return by_ip
    account = username.strip().casefold()
    return await limits_state.login_per_username.take(f"login:{account}")
