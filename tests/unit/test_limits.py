"""The gateway's limit decisions without a server: buckets on an injected clock, client IPs."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.client_address import parse_address
from gateway.limits import (
    GatewayLimits,
    LimitsState,
    LogThrottle,
    MemoryConnectionCounter,
    MemoryTokenBucket,
    check_login,
    check_user,
    client_ip,
    client_ip_from,
    ip_limit_key,
)


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- token buckets ------------------------------------------------------------------------


async def test_a_bucket_allows_its_burst_then_refuses_with_the_time_to_the_next_token() -> None:
    clock = FakeClock()
    bucket = MemoryTokenBucket(rate=2.0, burst=5, clock=clock)
    for _ in range(5):
        assert (await bucket.take("a")).allowed
    refused = await bucket.take("a")
    assert not refused.allowed
    assert refused.retry_after_seconds == pytest.approx(0.5)
    clock.now += 0.25
    still = await bucket.take("a")
    assert not still.allowed
    assert still.retry_after_seconds == pytest.approx(0.25)
    clock.now += 0.25
    assert (await bucket.take("a")).allowed


async def test_a_bucket_refills_at_its_rate_and_never_above_its_burst() -> None:
    clock = FakeClock()
    bucket = MemoryTokenBucket(rate=1.0, burst=3, clock=clock)
    for _ in range(3):
        assert (await bucket.take("a")).allowed
    clock.now += 3600  # an hour idle refills three tokens, not 3,600
    allowed = [(await bucket.take("a")).allowed for _ in range(5)]
    assert allowed == [True, True, True, False, False]


async def test_refused_requests_take_nothing() -> None:
    clock = FakeClock()
    bucket = MemoryTokenBucket(rate=1.0, burst=1, clock=clock)
    assert (await bucket.take("a")).allowed
    for _ in range(100):
        assert not (await bucket.take("a")).allowed
    clock.now += 1.0
    assert (await bucket.take("a")).allowed


async def test_keys_have_buckets_of_their_own() -> None:
    bucket = MemoryTokenBucket(rate=1.0, burst=2, clock=FakeClock())
    for _ in range(2):
        assert (await bucket.take("flooder")).allowed
    assert not (await bucket.take("flooder")).allowed
    assert (await bucket.take("someone else")).allowed


async def test_a_cost_takes_that_many_tokens_and_a_cost_over_the_burst_is_an_error() -> None:
    bucket = MemoryTokenBucket(rate=1.0, burst=10, clock=FakeClock())
    assert (await bucket.take("a", cost=7)).allowed
    refused = await bucket.take("a", cost=7)
    assert not refused.allowed
    assert refused.retry_after_seconds == pytest.approx(4.0)
    with pytest.raises(ValueError):
        await bucket.take("a", cost=11)
    with pytest.raises(ValueError):
        await bucket.take("a", cost=0)


async def test_a_clock_going_back_refills_nothing() -> None:
    clock = FakeClock()
    bucket = MemoryTokenBucket(rate=1.0, burst=1, clock=clock)
    assert (await bucket.take("a")).allowed
    clock.now -= 500
    assert not (await bucket.take("a")).allowed


async def test_the_least_recently_used_bucket_is_dropped_past_max_keys() -> None:
    clock = FakeClock()
    bucket = MemoryTokenBucket(rate=0.001, burst=1, max_keys=3, clock=clock)
    for key in ("a", "b", "c"):
        assert (await bucket.take(key)).allowed
    assert not (await bucket.take("a")).allowed  # "a" is now the most recently used
    assert (await bucket.take("d")).allowed  # drops "b"
    assert len(bucket) == 3
    assert not (await bucket.take("a")).allowed  # kept
    assert (await bucket.take("b")).allowed  # forgotten: full again


async def test_long_keys_are_stored_as_digests() -> None:
    bucket = MemoryTokenBucket(rate=1.0, burst=1, clock=FakeClock())
    long_name = "x" * 10_000
    assert (await bucket.take(long_name)).allowed
    assert not (await bucket.take(long_name)).allowed
    assert all(len(key) < 100 for key in bucket._buckets)


def test_a_bucket_needs_a_positive_rate_and_a_burst_of_one() -> None:
    with pytest.raises(ValueError):
        MemoryTokenBucket(rate=0, burst=1)
    with pytest.raises(ValueError):
        MemoryTokenBucket(rate=1, burst=0)


# -- log throttling -----------------------------------------------------------------------


def test_a_key_is_logged_once_per_interval_with_the_count_held_back() -> None:
    clock = FakeClock()
    throttle = LogThrottle(60.0, clock=clock)
    assert throttle.ready("a") == 0
    assert [throttle.ready("a") for _ in range(5)] == [None] * 5
    assert throttle.ready("b") == 0
    clock.now += 60
    assert throttle.ready("a") == 5


def test_the_log_throttle_remembers_a_bounded_number_of_keys() -> None:
    throttle = LogThrottle(60.0, max_keys=10, clock=FakeClock())
    for n in range(1000):
        throttle.ready(f"key{n}")
    assert len(throttle._seen) == 10


# -- socket counts ------------------------------------------------------------------------


async def test_a_connection_counter_caps_each_key_and_frees_a_slot_on_release() -> None:
    counter = MemoryConnectionCounter(limit=2)
    assert await counter.acquire("ip")
    assert await counter.acquire("ip")
    assert not await counter.acquire("ip")
    assert await counter.acquire("other")
    await counter.release("ip")
    assert await counter.acquire("ip")
    assert counter.held("ip") == 2
    for _ in range(5):
        await counter.release("other")  # more releases than acquires never go negative
    assert counter.held("other") == 0
    assert counter._held.keys() == {"ip"}


# -- settings -----------------------------------------------------------------------------


def test_limits_refuse_negative_values_and_bad_proxies() -> None:
    with pytest.raises(ValueError, match="rest_per_ip_per_second"):
        GatewayLimits(rest_per_ip_per_second=-1)
    with pytest.raises(ValueError, match="not an address"):
        GatewayLimits(trusted_proxies=("10.0.0.0/8", "proxy.example"))
    with pytest.raises(ValueError, match="burst"):
        GatewayLimits(rest_per_ip_burst=0)
    GatewayLimits(rest_per_ip_per_second=0, rest_per_ip_burst=0)  # the limit is off


async def test_a_limit_set_to_zero_is_off() -> None:
    state = LimitsState(limits=GatewayLimits(rest_per_ip_per_second=0, max_sockets_per_ip=0))
    for _ in range(1000):
        assert (await state.rest_per_ip.take("ip")).allowed
        assert await state.sockets_per_ip.acquire("ip")


async def test_check_user_and_check_login_spend_their_own_budgets() -> None:
    clock = FakeClock()
    limits = GatewayLimits(
        rest_per_user_per_second=1,
        rest_per_user_burst=3,
        login_per_username_burst=2,
        login_per_ip_burst=5,
    )
    state = LimitsState(limits=limits, clock=clock)
    assert [(await check_user(state, "ada")).allowed for _ in range(4)] == [True] * 3 + [False]
    assert (await check_user(state, "bob")).allowed
    # Two attempts per account, however the name is spelt...
    assert (await check_login(state, "Ada", "198.51.100.1")).allowed
    assert (await check_login(state, " ada ", "198.51.100.2")).allowed
    refused = await check_login(state, "ADA", "198.51.100.3")
    assert not refused.allowed
    # ...one attempt per 6 minutes after that (10 an hour).
    assert refused.retry_after_seconds == pytest.approx(360)
    # Five per address, across accounts.
    for name in ("c1", "c2", "c3", "c4", "c5"):
        await check_login(state, name, "203.0.113.9")
    assert not (await check_login(state, "c6", "203.0.113.9")).allowed
    # This machine's own address has no per-address budget; accounts still do.
    for name in ("d1", "d2", "d3", "d4", "d5", "d6"):
        assert (await check_login(state, name, "127.0.0.1")).allowed


# -- the client's address -----------------------------------------------------------------


def test_the_peer_is_the_client_unless_it_is_a_trusted_proxy() -> None:
    trusted = ("10.0.0.0/8",)
    assert client_ip_from("203.0.113.5", ["1.2.3.4"], trusted) == "203.0.113.5"
    assert client_ip_from("10.0.0.2", ["1.2.3.4"], trusted) == "1.2.3.4"
    assert client_ip_from("10.0.0.2", [], trusted) == "10.0.0.2"
    assert client_ip_from("10.0.0.2", ["1.2.3.4"], ()) == "10.0.0.2"


def test_the_right_most_untrusted_hop_is_the_client() -> None:
    trusted = ("10.0.0.0/8", "192.168.0.0/16")
    # The client wrote "6.6.6.6" itself; 1.2.3.4 is who the first proxy heard from.
    hops = ["6.6.6.6, 1.2.3.4, 192.168.1.1"]
    assert client_ip_from("10.0.0.2", hops, trusted) == "1.2.3.4"
    # Several headers read as one list, in order.
    assert client_ip_from("10.0.0.2", ["6.6.6.6", "1.2.3.4, 10.1.1.1"], trusted) == "1.2.3.4"
    # Every hop a proxy: the left-most one is as close to the client as we know.
    assert client_ip_from("10.0.0.2", ["10.9.9.9, 10.1.1.1"], trusted) == "10.9.9.9"


def test_malformed_forwarded_for_stops_at_the_proxy_that_passed_it_on() -> None:
    trusted = ("10.0.0.0/8",)
    assert client_ip_from("10.0.0.2", ["1.2.3.4, garbage, 10.0.0.3"], trusted) == "10.0.0.3"
    assert client_ip_from("10.0.0.2", ["unknown"], trusted) == "10.0.0.2"
    assert client_ip_from("10.0.0.2", [""], trusted) == "10.0.0.2"
    assert client_ip_from("10.0.0.2", ["1.2.3.4,"], trusted) == "10.0.0.2"
    too_long = ", ".join(["10.0.0.9"] * 500 + ["1.2.3.4"])
    assert client_ip_from("10.0.0.2", [too_long], trusted, max_chars=2048) == "10.0.0.2"


def test_addresses_are_read_as_proxies_write_them() -> None:
    assert str(parse_address("1.2.3.4:8080")) == "1.2.3.4"
    assert str(parse_address("[2001:db8::1]:443")) == "2001:db8::1"
    assert str(parse_address("[2001:db8::1]")) == "2001:db8::1"
    assert str(parse_address("::ffff:10.0.0.1")) == "10.0.0.1"
    for bad in ("1.2.3.4:x", "[::1", "[::1]x", "fe80::1%eth0", "\uff11.2.3.4", "1.2.3", " "):
        assert parse_address(bad) is None, bad


def test_client_ip_reads_an_aiohttp_like_request() -> None:
    class Request:
        remote = "127.0.0.1"
        headers = CIMultiDictProxy(
            CIMultiDict([("X-Forwarded-For", "6.6.6.6"), ("x-forwarded-for", "1.2.3.4")])
        )

    assert client_ip(Request(), ("127.0.0.1",)) == "1.2.3.4"
    assert client_ip(Request(), ()) == "127.0.0.1"


def test_ipv6_clients_share_limits_per_network() -> None:
    assert ip_limit_key("2001:db8:1:2:aaaa::1") == ip_limit_key("2001:db8:1:2:bbbb::9")
    assert ip_limit_key("2001:db8:1:2::1") != ip_limit_key("2001:db8:1:3::1")
    assert ip_limit_key("2001:db8::1", 128) == "2001:db8::1"
    assert ip_limit_key("203.0.113.5") == "203.0.113.5"


ADDRESSES = [
    *("10.0.0.1", "10.2.3.4", "192.168.1.7", "203.0.113.5", "198.51.100.9", "127.0.0.1"),
    *("2001:db8::1", "2001:db8:0:1::5", "::1", "::ffff:10.0.0.1", "fe80::2"),
]
NETWORKS = ["10.0.0.0/8", "192.168.1.0/24", "127.0.0.1", "2001:db8::/48", "::1", "0.0.0.0/0"]

address = st.sampled_from(ADDRESSES)
# Mostly addresses (the walk's decisions are between them), some written with ports, some junk.
hop_text = st.one_of(
    address,
    address,
    address,
    address.map(lambda a: f"[{a}]:80" if ":" in a else f"{a}:8080"),
    st.text(max_size=20),
    st.sampled_from(["", " ", "unknown", "_hidden", "1.2.3.4.5", "[::1", "::1]:80", "a,b"]),
)


def _trusted(address: str, networks: tuple[str, ...]) -> bool:
    parsed = parse_address(address)
    return parsed is not None and any(
        parsed in ipaddress.ip_network(n, strict=False) for n in networks
    )


@settings(max_examples=600, deadline=None, derandomize=True)
@given(
    peer=st.one_of(address, address, address, st.none(), st.text(max_size=30)),
    headers=st.lists(st.lists(hop_text, max_size=6).map(lambda hops: ",".join(hops)), max_size=3),
    trusted=st.lists(st.sampled_from(NETWORKS), max_size=3, unique=True).map(tuple),
    spaces=st.booleans(),
)
@example(peer="10.0.0.1", headers=["203.0.113.5, 10.2.3.4"], trusted=("10.0.0.0/8",), spaces=False)
@example(
    peer="10.0.0.1", headers=["6.6.6.6, 1.2.3.4", "10.2.3.4"], trusted=("10.0.0.0/8",), spaces=True
)
def test_forwarded_for_never_yields_a_hop_left_of_an_untrusted_one(
    peer: str | None, headers: list[str], trusted: tuple[str, ...], spaces: bool
) -> None:
    if spaces:
        headers = [value.replace(",", " , ") for value in headers]
    found = client_ip_from(peer, headers, trusted)
    assert isinstance(found, str) and found
    # What a correct answer may be: the peer, or a hop with only trusted, valid hops (and a
    # trusted peer) to its right -- anything further left may be the client's invention.
    chain = ",".join(headers).split(",") if headers else []
    parsed_peer = parse_address(peer) if peer else None
    if parsed_peer is None:
        assert found == (peer[:128] if peer else "unknown")
        return
    allowed = [str(parsed_peer)]
    if _trusted(peer or "", trusted) and len(",".join(headers)) <= 2048:
        for index in range(len(chain) - 1, -1, -1):
            hop = parse_address(chain[index])
            if hop is None:
                break
            allowed.append(str(hop))
            if not _trusted(chain[index], trusted):
                break
    assert found in allowed
    assert found == allowed[-1]  # the walk goes as far as the proxies vouch, no further
    assert parse_address(found) is not None
    if not _trusted(peer or "", trusted):
        assert found == str(parsed_peer)
