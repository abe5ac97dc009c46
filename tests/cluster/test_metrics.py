"""``/metrics``: what an operator scrapes matches the traffic that was sent."""

from __future__ import annotations

import asyncio
import json
import re
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
            # The board, and the server's own documents the session's checks read.
            in_memory = [len(host.board_ids()) for host in server.cluster.hosts.values()]

    def delta(name: str) -> float:
        return after[(name, ())] - before[(name, ())]

    assert after[("boardcast_gateway_connections", ())] == 2
    # Each update is one frame in, relayed once (to the reader): the writer is excluded.
    assert delta("boardcast_gateway_frames_in_total") == UPDATES
    assert delta("boardcast_gateway_frames_out_total") == UPDATES
    assert delta("boardcast_gateway_acks_out_total") >= 1
    assert after[("boardcast_hosts_up", ())] == 1
    host_boards = [v for (n, _), v in after.items() if n == "boardcast_host_boards"]
    assert host_boards == in_memory and in_memory[0] >= 1
    host_connections = [v for (n, _), v in after.items() if n == "boardcast_host_connections"]
    assert host_connections == [2]


def total(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str) -> float:
    """The sum of a metric's samples over all its labels (0 if it has none yet)."""
    return sum(value for (found, _), value in samples.items() if found == name)


async def test_fanout_latency_updates_and_every_close_code_are_counted(tmp_path: Path) -> None:
    async with serve("local", tmp_path, hosts=1, idle_seconds=0.2) as server:
        async with (
            BoardClient(server.url, "timed") as writer,
            BoardClient(server.url, "timed") as reader,
        ):
            await writer.synced()
            await reader.synced()
            before = await scrape(server.port)
            tasks = writer.doc.get("tasks", type=Map)
            seen = reader.doc.get("tasks", type=Map)
            for index in range(UPDATES):
                # One at a time, as people type: each relay is timed once.
                tasks[f"k{index}"] = index
                await wait_until(lambda i=index: len(seen) == i + 1, message="update relayed")
            await writer.persisted()
            after = await scrape(server.port)
            loaded = sum(len(host.board_ids()) for host in server.cluster.hosts.values())
            async with aiohttp.ClientSession() as http:
                async with http.ws_connect(f"{server.url}/timed") as text_client:
                    await text_client.send_str("not a y-protocol frame")
                    await text_client.receive(timeout=5)
                async with http.ws_connect(f"{server.url}/timed") as garbage_client:
                    await garbage_client.send_bytes(b"\x00\x02\xff\xff\xff\xff\xff")
                    while not garbage_client.closed:
                        await garbage_client.receive(timeout=5)
                    host_code = garbage_client.close_code
            closed = await scrape(server.port)

        def delta(name: str) -> float:
            return total(after, name) - total(before, name)

        assert delta("boardcast_gateway_fanout_seconds_count") == UPDATES
        assert delta("boardcast_gateway_fanout_seconds_sum") > 0
        assert after[("boardcast_gateway_fanout_seconds_bucket", (("le", "+Inf"),))] >= UPDATES
        assert delta("boardcast_gateway_updates_in_total") == UPDATES
        assert delta("boardcast_gateway_updates_out_total") == UPDATES  # one recipient each
        assert total(after, "boardcast_host_activations_total") == loaded >= 1
        assert total(after, "boardcast_host_persistence_lag_seconds") == 0
        assert total(after, "boardcast_host_store_reachable") == 1
        # Closes decided in the gateway (1003, text frame) and by the host (a bad update).
        assert host_code is not None and host_code != 1003
        assert closed.get(("boardcast_gateway_closes_total", (("code", "1003"),))) == 1
        assert closed.get(("boardcast_gateway_closes_total", (("code", str(host_code)),))) == 1
        # Every client gone: the idle board is passivated by the next sweep (every 5 s).
        for _ in range(150):
            idle = await scrape(server.port)
            if total(idle, "boardcast_host_passivations_total") == loaded:
                break
            await asyncio.sleep(0.1)
        assert total(idle, "boardcast_host_passivations_total") == loaded
        assert total(idle, "boardcast_host_boards") == 0


DASHBOARD = Path(__file__).parents[2] / "deploy" / "grafana" / "boardcast.json"
# PromQL words that are not metric names.
PROMQL_WORDS = {"sum", "by", "rate", "max", "min", "histogram_quantile", "le", "code", "host"}


def dashboard_metric_names() -> set[str]:
    """Every metric name the dashboard's PromQL expressions use."""
    dashboard = json.loads(DASHBOARD.read_text())
    names: set[str] = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            names.update(re.findall(r"\b(boardcast_[a-z_]+)\b", target["expr"]))
            words = set(re.findall(r"\b([a-z_]+)\s*\(", target["expr"]))
            assert words <= PROMQL_WORDS, words
    return names


async def test_the_dashboard_only_uses_metrics_the_server_exposes(tmp_path: Path) -> None:
    used = dashboard_metric_names()
    assert len(used) >= 15
    async with serve("local", tmp_path, hosts=1) as server:
        async with BoardClient(server.url, "dashboard") as client:
            await client.synced()
            async with aiohttp.ClientSession() as http:
                async with http.get(f"http://127.0.0.1:{server.port}/metrics") as reply:
                    text = await reply.text()
    exposed: set[str] = set()
    for family in text_string_to_metric_families(text):
        # A family with no sample yet (no close so far) still names its series.
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}
        exposed.update(family.name + suffix for suffix in suffixes.get(family.type, [""]))
        exposed.update(sample.name for sample in family.samples)
    assert used <= exposed, f"the dashboard uses metrics /metrics lacks: {sorted(used - exposed)}"
