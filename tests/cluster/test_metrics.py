"""``/metrics``: what an operator scrapes matches the traffic that was sent."""

from __future__ import annotations

from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families
from pycrdt import Map

from clients.provider import BoardClient
from tests.conftest import serve, wait_until

UPDATES = 25


async def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, by name and labels."""
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{port}/metrics") as reply:
            assert reply.status == 200
            assert reply.content_type == "text/plain"
            text = await reply.text()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


async def test_metrics_count_the_traffic_sent(tmp_path: Path) -> None:
    async with serve("local", tmp_path, hosts=1) as server:
        async with (
            BoardClient(server.url, "metered") as writer,
            BoardClient(server.url, "metered") as reader,
        ):
            await writer.synced()
            await reader.synced()
            before = await scrape(server.port)
            tasks = writer.doc.get("tasks", type=Map)
            for index in range(UPDATES):
                tasks[f"k{index}"] = index
            seen = reader.doc.get("tasks", type=Map)
            await wait_until(lambda: len(seen) == UPDATES, message="every update relayed")
            await writer.persisted()
            after = await scrape(server.port)

    def delta(name: str) -> float:
        return after[(name, ())] - before[(name, ())]

    assert after[("boardcast_gateway_connections", ())] == 2
    # Each update is one frame in, relayed once (to the reader): the writer is excluded.
    assert delta("boardcast_gateway_frames_in_total") == UPDATES
    assert delta("boardcast_gateway_frames_out_total") == UPDATES
    assert delta("boardcast_gateway_acks_out_total") >= 1
    assert after[("boardcast_hosts_up", ())] == 1
    host_boards = [v for (n, _), v in after.items() if n == "boardcast_host_boards"]
    assert host_boards == [1]
    host_connections = [v for (n, _), v in after.items() if n == "boardcast_host_connections"]
    assert host_connections == [2]
