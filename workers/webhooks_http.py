"""Sending one webhook attempt: bounded in time and size, to permitted addresses only.

The policy (``workers/webhooks_policy.py``) is applied inside the connector's resolver:
aiohttp connects to exactly the addresses the resolver returns, so the address checked is
the address connected to, with no second lookup a rebinding DNS server could answer
differently. An address written in the URL skips the resolver and is checked here first.
Redirects are not followed, proxies from the environment are not used, cookies are not
kept, and at most ``max_response_bytes`` of an answer are read (then dropped).
"""

from __future__ import annotations

import ipaddress
import socket
import time
from dataclasses import dataclass

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

from workers.webhooks_policy import AddressPolicy


class RefusedAddress(OSError):
    """Every address of a webhook's host is one the policy refuses."""


class PolicyResolver(AbstractResolver):
    """A resolver that returns only the addresses ``policy`` permits."""

    def __init__(self, policy: AddressPolicy, inner: AbstractResolver | None = None) -> None:
        self._policy = policy
        self._inner = inner or DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """The permitted addresses of ``host``; :class:`RefusedAddress` if there are none."""
        found = await self._inner.resolve(host, port, family)
        permitted = [entry for entry in found if self._policy.permits(entry["host"])]
        if not permitted:
            raise RefusedAddress(f"{host} resolves to no permitted address")
        return permitted

    async def close(self) -> None:
        """Close the inner resolver."""
        await self._inner.close()


@dataclass(frozen=True, slots=True)
class SendResult:
    """What one attempt got: a status, or an error (never both)."""

    status: int | None
    error: str | None
    seconds: float


@dataclass(frozen=True, slots=True)
class SenderSettings:
    """Bounds of one attempt (docs/settings.md)."""

    connect_timeout_seconds: float = 5.0
    timeout_seconds: float = 15.0
    max_response_bytes: int = 4096
    max_connections: int = 32


def url_refusal(url: str, policy: AddressPolicy) -> str | None:
    """Why ``url`` may not be called (its scheme, or an address written in it), or None.

    A host name passes here; its addresses are checked when connecting.
    """
    try:
        parsed = URL(url)
    except ValueError:
        return "not a URL"
    if parsed.scheme not in {"http", "https"} or not parsed.host:
        return "only http and https URLs with a host"
    try:
        literal = ipaddress.ip_address(parsed.host.split("%", 1)[0])
    except ValueError:
        return None
    if not policy.permits(literal):
        return f"{literal} is not a permitted address"
    return None


class WebhookSender:
    """Sends attempts over one shared connection pool."""

    def __init__(self, policy: AddressPolicy, settings: SenderSettings | None = None) -> None:
        self._policy = policy
        self._settings = settings or SenderSettings()
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            bounds = self._settings
            connector = aiohttp.TCPConnector(
                resolver=PolicyResolver(self._policy),
                use_dns_cache=False,
                limit=bounds.max_connections,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(
                    total=bounds.timeout_seconds, connect=bounds.connect_timeout_seconds
                ),
                trust_env=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
            )
        return self._session

    def refusal(self, url: str) -> str | None:
        """Why ``url`` may not be called, or None (see :func:`url_refusal`)."""
        return url_refusal(url, self._policy)

    async def send(self, url: str, headers: dict[str, str], body: str) -> SendResult:
        """POST ``body``; the status, or why there is none."""
        started = time.monotonic()
        refused = self.refusal(url)
        if refused is not None:
            return SendResult(None, refused, 0.0)
        try:
            async with self._client().post(
                url, data=body.encode(), headers=headers, allow_redirects=False
            ) as response:
                await response.content.read(self._settings.max_response_bytes)
                status = response.status
        except TimeoutError:
            return SendResult(None, "timed out", time.monotonic() - started)
        except aiohttp.ClientConnectorError as exc:
            reason = exc.os_error
            text = str(reason) if isinstance(reason, RefusedAddress) else f"cannot connect: {exc}"
            return SendResult(None, text[:300], time.monotonic() - started)
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            return SendResult(
                None, f"{type(exc).__name__}: {exc}"[:300], time.monotonic() - started
            )
        return SendResult(status, None, time.monotonic() - started)

    async def close(self) -> None:
        """Close the connection pool."""
        if self._session is not None:
            await self._session.close()
            self._session = None
