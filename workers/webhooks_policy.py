"""Which addresses a webhook may be sent to: public ones, and networks an operator allows.

Sans-I/O: the decision takes an address, never a name. The sender checks every address a
name resolves to, and connects only to the addresses that passed (so a name that resolves
to a public address when checked and to 127.0.0.1 a moment later cannot redirect the
connection: there is no second lookup). Refused: private, loopback, link-local (the cloud
metadata service at 169.254.169.254 among them), multicast, unspecified (0.0.0.0, ::),
reserved and shared (100.64.0.0/10) addresses, and IPv6 forms that carry an IPv4 address
inside (IPv4-mapped, NAT64, 6to4, Teredo) unless that address is allowed too.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
# Not public whatever the Python version's tables say (IANA special-purpose registries).
_SPECIAL: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(spec)
    for spec in (
        "0.0.0.0/8",
        "100.64.0.0/10",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "240.0.0.0/4",
        "64:ff9b:1::/48",
        "100::/64",
        "2001::/23",
        "2001:db8::/32",
        "fc00::/7",
        "fe80::/10",
        "fec0::/10",
    )
)


def parse_networks(specs: Iterable[str]) -> tuple[IPNetwork, ...]:
    """Networks from CIDR strings (``"127.0.0.0/8"``, ``"::1"``); ``ValueError`` names a bad one."""
    networks: list[IPNetwork] = []
    for spec in specs:
        try:
            networks.append(ipaddress.ip_network(spec.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{spec!r} is not a network (CIDR)") from None
    return tuple(networks)


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]  # the client's address
    return None


def _public(address: IPAddress) -> bool:
    if any(address.version == net.version and address in net for net in _SPECIAL):
        return False
    return address.is_global and not (
        address.is_multicast
        or address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_reserved
        or address.is_unspecified
    )


@dataclass(frozen=True, slots=True)
class AddressPolicy:
    """Public addresses pass; so do addresses inside ``allowed`` (an operator's choice)."""

    allowed: tuple[IPNetwork, ...] = ()

    @classmethod
    def from_specs(cls, specs: Iterable[str]) -> AddressPolicy:
        """A policy allowing the networks named by CIDR strings."""
        return cls(parse_networks(specs))

    def _explicitly_allowed(self, address: IPAddress) -> bool:
        return any(
            address.version == network.version and address in network for network in self.allowed
        )

    def permits(self, address: IPAddress | str) -> bool:
        """Whether a webhook may connect to ``address``."""
        if isinstance(address, str):
            try:
                address = ipaddress.ip_address(address.split("%", 1)[0])
            except ValueError:
                return False
        if isinstance(address, ipaddress.IPv6Address):
            inner = _embedded_ipv4(address)
            if address.ipv4_mapped is not None:
                # The same destination as the IPv4 address: decided exactly as it is.
                return self.permits(address.ipv4_mapped)
            if inner is not None and not self.permits(inner):
                return self._explicitly_allowed(address)
        return self._explicitly_allowed(address) or _public(address)
