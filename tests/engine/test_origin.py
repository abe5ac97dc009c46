"""Browser pages from other sites cannot open board sessions (cross-site WebSocket hijacking)."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from gateway.ws import origin_allowed
from tests.conftest import serve


async def status_for(url: str, origin: str | None) -> int:
    headers = {"Origin": origin} if origin is not None else {}
    async with aiohttp.ClientSession() as session:
        try:
            ws = await session.ws_connect(url, headers=headers)
        except aiohttp.WSServerHandshakeError as refused:
            return refused.status
        await ws.close()
        return 101


async def test_only_the_gateways_own_pages_and_listed_origins_may_connect(tmp_path: Path) -> None:
    allowed = ("https://boards.example.com",)
    async with serve("local", tmp_path, allowed_origins=allowed) as server:
        url = f"{server.url}/b"
        own = f"http://127.0.0.1:{server.port}"
        assert await status_for(url, None) == 101  # not a browser
        assert await status_for(url, own) == 101  # the board app served by this gateway
        assert await status_for(url, "https://boards.example.com") == 101
        assert await status_for(url, "https://evil.example") == 403
        assert await status_for(url, f"http://127.0.0.1:{server.port + 1}") == 403
        assert await status_for(url, "null") == 403  # sandboxed frames, file:// pages


@pytest.mark.parametrize(
    ("origin", "host", "allowed", "expected"),
    [
        ("http://a:1", "a:1", (), True),
        ("https://A:1", "a:1", (), True),
        ("http://a:1", "a:2", (), False),
        ("ftp://a:1", "a:1", (), False),
        ("http://b", "a:1", ("http://b",), True),
        ("http://b", "a:1", ("*",), True),
        ("http://b.evil", "a:1", ("http://b",), False),
    ],
)
def test_origin_rules(origin: str, host: str, allowed: tuple[str, ...], expected: bool) -> None:
    assert origin_allowed(origin, host, allowed) is expected
