"""The workers' actor process yields the CPU: opens and edits come before a worker backlog."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway.settings import Settings
from tests.conftest import serve


def worker_niceness() -> int:
    """The priority Ray gives its worker processes (hosts' and workers' actors alike)."""
    return os.nice(0)


@pytest.mark.ray
@pytest.mark.parametrize("nice", [5, 0])
async def test_the_workers_actor_runs_at_the_configured_priority(
    tmp_path: Path, ray_session: None, cluster_name: str, nice: int
) -> None:
    async with serve("ray", tmp_path, cluster_name=cluster_name, worker_nice=nice) as server:
        workers = server.cluster.workers  # type: ignore[attr-defined]
        stats = await workers.stats.remote()
        # Ray starts its workers at a priority of its own (15 by default); the workers'
        # actor lowers its own from there, below the board hosts'.
        # (Ray is imported here, after actors.ray_backend has set its auth mode.)
        import ray

        base = await ray.remote(num_cpus=0)(worker_niceness).remote()
        # The thread its workers run on (Linux keeps a priority per thread).
        assert stats["nice"] == min(base + nice, 19)


@pytest.mark.parametrize("nice", ["-1", "20"])
def test_a_priority_outside_what_a_process_can_lower_itself_to_is_refused(
    monkeypatch: pytest.MonkeyPatch, nice: str
) -> None:
    monkeypatch.setenv("BOARDCAST_WORKER_NICE", nice)
    with pytest.raises(ValueError, match="worker_nice"):
        Settings.load()
