"""In-process links end to end: a local deployment's gateway reaches its hosts without a socket."""

from __future__ import annotations

from pathlib import Path

import pytest
from pycrdt import Map

from actors.memory_link import MemoryLink
from actors.stream import StreamLink
from clients.provider import BoardClient
from gateway.app import ROUTER
from tests.conftest import serve, wait_until


@pytest.mark.parametrize("in_process", [True, False])
async def test_a_local_deployment_links_its_gateway_to_its_hosts_without_a_socket(
    tmp_path: Path, in_process: bool
) -> None:
    async with serve("local", tmp_path, in_process_links=in_process) as server:
        async with BoardClient(server.url, "b1") as alice, BoardClient(server.url, "b1") as bob:
            await alice.synced()
            await bob.synced()
            alice.doc.get("tasks", type=Map)["t1"] = "linked"
            await wait_until(lambda: bob.doc.get("tasks", type=Map).to_py() == {"t1": "linked"})
            await alice.persisted()
            router = server.runner.app[ROUTER]
            kinds = {type(link.stream) for link in router.links.values()}
            assert kinds == ({MemoryLink} if in_process else {StreamLink})
    # Stopped like SIGTERM: the update acknowledged over the link is in the store.
    async with serve("local", tmp_path) as again, BoardClient(again.url, "b1") as carol:
        await carol.synced()
        assert carol.doc.get("tasks", type=Map).to_py() == {"t1": "linked"}
