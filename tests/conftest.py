"""Shared fixtures: a Boardcast server on loopback port 0, in-process or on real Ray."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from actors.board import EventSink
from actors.cluster import Cluster
from boardcast.deployment import build_cluster
from gateway.app import create_app
from gateway.settings import Settings
from tests.services import TIMEOUT_SCALE


async def wait_until(
    predicate: Callable[[], bool], timeout: float = 10.0, message: str = "condition"
) -> None:
    """Poll ``predicate`` until true; fail the test after ``timeout`` (scaled) seconds."""
    deadline = asyncio.get_running_loop().time() + timeout * TIMEOUT_SCALE
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {message}")
        await asyncio.sleep(0.01)


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    """A local Ray cluster for the whole session, started and shut down by this process.

    ``ray.shutdown()`` stops exactly the processes this ``ray.init()`` started;
    ``ray stop`` is never used (it kills every Ray process of the user).
    """
    from actors import ray_backend

    ray_backend.init_ray(None, num_cpus=2)
    yield
    ray_backend.shutdown_ray()


@dataclass
class RunningServer:
    """A gateway serving on loopback, and the cluster behind it."""

    url: str
    port: int
    cluster: Cluster
    runner: web.AppRunner
    settings: Settings

    async def stop(self) -> None:
        """Stop like SIGTERM would: close sockets, flush and snapshot every board."""
        await self.runner.cleanup()


@contextlib.asynccontextmanager
async def serve(
    backend: str, data_dir: Path, *, event_sink: EventSink | None = None, **overrides: Any
) -> AsyncIterator[RunningServer]:
    """Run a gateway and board hosts; ``backend`` is ``local`` or ``ray``.

    ``event_sink`` (in-process hosts only) receives the domain events of applied updates.
    """
    # Tests of auth pass auth="required"; the rest act as the local administrator.
    overrides.setdefault("auth", "none")
    settings = Settings(port=0, data_dir=str(data_dir), backend=backend, **overrides)
    cluster = await build_cluster(settings, event_sink=event_sink)
    app = create_app(settings, cluster)
    runner = web.AppRunner(app, shutdown_timeout=2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    server = RunningServer(f"ws://127.0.0.1:{port}/ws", port, cluster, runner, settings)
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture(params=["local", pytest.param("ray", marks=pytest.mark.ray)])
def backend(request: pytest.FixtureRequest) -> str:
    """Run the test once with in-process board hosts and once on real Ray."""
    if request.param == "ray":
        request.getfixturevalue("ray_session")
    return str(request.param)


@pytest.fixture
def cluster_name() -> str:
    """A Ray actor name prefix of its own, so tests never share board hosts."""
    return f"bc{uuid.uuid4().hex[:8]}"
