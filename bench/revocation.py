"""How long a revoked user's open socket stays open, measured across two gateways.

Two gateways share one data directory and one set of in-process board hosts. Each
trial logs a user in on the first gateway, opens a board socket on the second with
that token, then logs out on the first and times until the second gateway closes
the socket (4401). The same for a role lowered by the project's owner (4403).

    python -m bench revocation --trials 30 --out docs/benchmarks/revocation.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pyotp
from aiohttp import web

from boardcast.deployment import build_cluster
from gateway.app import GUARD, create_app
from gateway.settings import Settings

PASSWORD = "a long enough password"


async def _gateway(settings: Settings, cluster: Any) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(create_app(settings, cluster, own_cluster=False), shutdown_timeout=2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"127.0.0.1:{runner.addresses[0][1]}"


async def _login(http: aiohttp.ClientSession, base: str, name: str, totp: str | None = None) -> str:
    body = {"username": name, "password": PASSWORD}
    if totp is not None:
        body["totp"] = pyotp.TOTP(totp).now()
    async with http.post(f"http://{base}/v1/auth/login", json=body) as response:
        assert response.status == 200, await response.text()
        return str((await response.json())["access_token"])


async def _put_role(
    http: aiohttp.ClientSession, url: str, owner: dict[str, str], role: str
) -> None:
    async with http.put(url, json={"role": role}, headers=owner) as response:
        assert response.status == 200, await response.text()


async def _open(http: aiohttp.ClientSession, url: str) -> aiohttp.ClientWebSocketResponse:
    """A socket the server accepted: it has sent its first sync message."""
    ws = await http.ws_connect(url)
    message = await ws.receive()
    assert message.type is aiohttp.WSMsgType.BINARY, f"refused: {ws.close_code}"
    return ws


async def _closed_after(ws: aiohttp.ClientWebSocketResponse, started: float) -> tuple[float, int]:
    while True:
        message = await ws.receive()
        if message.type in {aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED}:
            return time.perf_counter() - started, int(ws.close_code or 0)


async def measure(trials: int, poll_seconds: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as data_dir:
        settings = Settings(
            port=0,
            data_dir=data_dir,
            backend="local",
            auth="required",
            auth_revocation_poll_seconds=poll_seconds,
            login_per_username_per_hour=0.0,  # each trial logs the member in again
        )
        cluster = await build_cluster(settings)
        first, first_base = await _gateway(settings, cluster)
        second, second_base = await _gateway(settings, cluster)
        service = first.app[GUARD].service
        assert service is not None
        logout: list[float] = []
        role: list[float] = []
        codes: set[int] = set()
        try:
            owner_user = await asyncio.to_thread(service.create_user, "owner", PASSWORD)
            # Changing roles is sensitive: the owner logs in with a second factor.
            secret = pyotp.random_base32()
            service.store.set_totp(owner_user.id, secret)
            await asyncio.to_thread(service.create_user, "member", PASSWORD)
            member = service.store.find_user("member")
            assert member is not None
            async with aiohttp.ClientSession() as http:
                owner = {
                    "Authorization": f"Bearer {await _login(http, first_base, 'owner', secret)}"
                }
                async with http.post(
                    f"http://{first_base}/v1/projects", json={"name": "P"}, headers=owner
                ) as response:
                    project = (await response.json())["id"]
                async with http.post(
                    f"http://{first_base}/v1/projects/{project}/boards",
                    json={"name": "B"},
                    headers=owner,
                ) as response:
                    board = (await response.json())["id"]
                members = f"http://{first_base}/v1/projects/{project}/members/{member.id}"
                for _ in range(trials):
                    await _put_role(http, members, owner, "editor")
                    token = await _login(http, first_base, "member")
                    ws = await _open(http, f"ws://{second_base}/ws/{board}?token={token}")
                    started = time.perf_counter()
                    async with http.post(
                        f"http://{first_base}/v1/auth/logout",
                        headers={"Authorization": f"Bearer {token}"},
                    ):
                        pass
                    elapsed, code = await _closed_after(ws, started)
                    logout.append(elapsed)
                    codes.add(code)
                    token = await _login(http, first_base, "member")
                    ws = await _open(http, f"ws://{second_base}/ws/{board}?token={token}")
                    started = time.perf_counter()
                    await _put_role(http, members, owner, "viewer")
                    elapsed, code = await _closed_after(ws, started)
                    role.append(elapsed)
                    codes.add(code)
        finally:
            await second.cleanup()
            await first.cleanup()
            await cluster.close()
    return {
        "trials": trials,
        "poll_seconds": poll_seconds,
        "close_codes": sorted(codes),
        "logout_to_close_ms": _summary(logout),
        "role_lowered_to_close_ms": _summary(role),
    }


def _summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(value * 1000 for value in values)
    return {
        "p50": round(statistics.median(ordered), 1),
        "p99": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 1),
        "max": round(ordered[-1], 1),
    }


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench revocation", description=__doc__)
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--poll-seconds", type=float, default=0.25)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    report = asyncio.run(measure(args.trials, args.poll_seconds))
    text = json.dumps(report, indent=2)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0
