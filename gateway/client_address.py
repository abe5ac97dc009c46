"""Who a request comes from: the peer's address, or what trusted proxies say it forwarded.

Free of aiohttp: anything with ``remote`` and ``headers`` (an aiohttp request) will do.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Sequence
from typing import Protocol

from multidict import MultiMapping

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# An address that is not one (a Unix socket's path) is cut to this length.
_MAX_PEER_CHARS = 128


# -- the client's address -------------------------------------------------------------------


class PeerRequest(Protocol):
    """What :func:`client_ip` reads of a request (an aiohttp ``web.Request`` has both)."""

    @property
    def remote(self) -> str | None: ...

    @property
    def headers(self) -> MultiMapping[str]: ...


@functools.lru_cache(maxsize=64)
def trusted_networks(cidrs: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    """Parse trusted-proxy CIDRs (``10.0.0.0/8``, ``::1``); a bad one raises ValueError."""
    networks: list[IPNetwork] = []
    for cidr in cidrs:
        try:
            networks.append(ipaddress.ip_network(cidr.strip(), strict=False))
        except ValueError as exc:
            raise ValueError(f"trusted proxy {cidr!r} is not an address or CIDR: {exc}") from None
    return tuple(networks)


def parse_address(text: str) -> IPAddress | None:
    """One address as proxies write it (``1.2.3.4``, ``1.2.3.4:80``, ``[::1]:80``, ``::1``)."""
    text = text.strip()
    if not text or len(text) > 64 or not text.isascii() or "%" in text:
        return None
    host = text
    if text.startswith("["):
        end = text.find("]")
        port = text[end + 1 :] if end > 0 else "x"
        if port and not (port.startswith(":") and port[1:].isdigit()):
            return None
        host = text[1:end]
    elif text.count(":") == 1:
        host, port = text.split(":")
        if not port.isdigit():
            return None
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _is_trusted(address: IPAddress, networks: tuple[IPNetwork, ...]) -> bool:
    return any(address in network for network in networks)


def address_in(ip: str, cidrs: tuple[str, ...]) -> bool:
    """Whether ``ip`` (as :func:`client_ip` gives it) lies in one of ``cidrs``."""
    address = parse_address(ip)
    return address is not None and _is_trusted(address, trusted_networks(cidrs))


def client_ip_from(
    peer: str | None,
    forwarded_for: Sequence[str],
    trusted_proxies: tuple[str, ...],
    *,
    max_chars: int = 2048,
    max_hops: int = 64,
) -> str:
    """The client's address: the peer's, or when the peer is a trusted proxy, the right-most
    ``X-Forwarded-For`` hop that is not one (each trusted proxy appends who it heard from).

    A malformed hop ends the walk at the trusted proxy that passed it on; a header longer
    than ``max_chars`` is ignored. Never returns a hop left of an untrusted one (a client
    writes whatever it likes there).
    """
    address = parse_address(peer) if peer else None
    if address is None:
        return peer[:_MAX_PEER_CHARS] if peer else "unknown"
    networks = trusted_networks(trusted_proxies)
    if not networks or not _is_trusted(address, networks):
        return str(address)
    if sum(len(value) + 1 for value in forwarded_for) > max_chars + 1:
        return str(address)
    hops = ",".join(forwarded_for).split(",") if forwarded_for else []
    for raw in reversed(hops[-max_hops:]):
        hop = parse_address(raw)
        if hop is None:
            break
        address = hop
        if not _is_trusted(hop, networks):
            break
    return str(address)


def client_ip(request: PeerRequest, trusted_proxies: tuple[str, ...], max_chars: int = 2048) -> str:
    """The address of the client behind ``request`` (see :func:`client_ip_from`)."""
    return client_ip_from(
        request.remote,
        request.headers.getall("X-Forwarded-For", []),
        trusted_proxies,
        max_chars=max_chars,
    )


def ip_limit_key(ip: str, ipv6_prefix_length: int = 64) -> str:
    """The key an address's limits count under: IPv6 by network (one host holds many)."""
    address = parse_address(ip)
    if isinstance(address, ipaddress.IPv6Address) and ipv6_prefix_length < 128:
        network = ipaddress.IPv6Network((address, ipv6_prefix_length), strict=False)
        return str(network)
    return ip
