"""The SSRF address policy, over addresses hypothesis draws (IPv4 and IPv6).

Private, loopback, link-local (metadata service included), multicast, unspecified, shared
and reserved addresses are refused, in every IPv6 form that carries an IPv4 address; public
addresses pass; an allowed network lets its addresses through and nothing else.
"""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from workers.webhooks_policy import AddressPolicy, parse_networks

POLICY = AddressPolicy()
NOT_PUBLIC_V4 = [
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "224.0.0.0/4",
    "240.0.0.0/4",
]
NOT_PUBLIC_V6 = ["::/128", "::1/128", "fc00::/7", "fe80::/10", "ff00::/8", "2001:db8::/32"]


def _mapped(v4: ipaddress.IPv4Address) -> ipaddress.IPv6Address:
    return ipaddress.IPv6Address(f"::ffff:{v4}")


@given(st.sampled_from(NOT_PUBLIC_V4).flatmap(lambda net: st.ip_addresses(network=net)))
def test_non_public_ipv4_is_refused_in_every_form(address: ipaddress.IPv4Address) -> None:
    assert not POLICY.permits(address)
    assert not POLICY.permits(str(address))
    assert not POLICY.permits(_mapped(address))  # ::ffff:a.b.c.d
    assert not POLICY.permits(
        ipaddress.IPv6Address(int(ipaddress.IPv6Address("64:ff9b::")) | int(address))
    )
    assert not POLICY.permits(ipaddress.IPv6Address((0x2002 << 112) | (int(address) << 80)))


@given(st.sampled_from(NOT_PUBLIC_V6).flatmap(lambda net: st.ip_addresses(network=net)))
def test_non_public_ipv6_is_refused(address: ipaddress.IPv6Address) -> None:
    assert not POLICY.permits(address)


@given(st.ip_addresses())
def test_any_address_passes_only_if_it_is_public(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> None:
    inner = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    decided = inner if inner is not None else address
    if POLICY.permits(address):
        assert decided.is_global and not decided.is_multicast and not decided.is_private
    if isinstance(address, ipaddress.IPv4Address):
        assert POLICY.permits(address) == POLICY.permits(_mapped(address))


@given(st.ip_addresses(v=4, network="127.0.0.0/8"), st.ip_addresses(v=4, network="10.0.0.0/8"))
def test_an_allowed_network_lets_only_its_own_addresses_through(
    loopback: ipaddress.IPv4Address, private: ipaddress.IPv4Address
) -> None:
    allowing = AddressPolicy.from_specs(["127.0.0.0/8"])
    assert allowing.permits(loopback) and allowing.permits(_mapped(loopback))
    assert not allowing.permits(private)


def test_well_known_targets() -> None:
    for refused in (
        "169.254.169.254",
        "0.0.0.0",
        "::",
        "127.0.0.1",
        "::1",
        "::ffff:169.254.169.254",
        "fd00:ec2::254",
        "224.0.0.1",
        "255.255.255.255",
        "not an address",
        "fe80::1%eth0",
    ):
        assert not POLICY.permits(refused), refused
    for public in ("93.184.216.34", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"):
        assert POLICY.permits(public), public


def test_networks_are_checked() -> None:
    assert parse_networks(["10.0.0.0/8", " ::1 "])[1] == ipaddress.ip_network("::1/128")
    with pytest.raises(ValueError, match="not a network"):
        parse_networks(["10.0.0.0/33"])
