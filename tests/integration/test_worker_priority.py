"""The workers' actor process yields the CPU: opens and edits come before a worker backlog."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway.settings import Settings
from tests.conftest import serve


@pytest.mark.ray
@pytest.mark.parametrize("nice", [5, 0])
async def test_the_workers_actor_runs_at_the_configured_priority(
    tmp_path: Path, ray_session: None, cluster_name: str, nice: int
) -> None:
    async with serve("ray", tmp_path, cluster_name=cluster_name, worker_nice=nice) as server:
        workers = server.cluster.workers  # type: ignore[attr-defined]
        pid = int((await workers.stats.remote())["pid"])
        # Ray's processes start at this process's priority; the actor lowers its own.
        base = os.getpriority(os.PRIO_PROCESS, os.getpid())
        assert os.getpriority(os.PRIO_PROCESS, pid) == min(base + nice, 19)


@pytest.mark.parametrize("nice", ["-1", "20"])
def test_a_priority_outside_what_a_process_can_lower_itself_to_is_refused(
    monkeypatch: pytest.MonkeyPatch, nice: str
) -> None:
    monkeypatch.setenv("BOARDCAST_WORKER_NICE", nice)
    with pytest.raises(ValueError, match="worker_nice"):
        Settings.load()
