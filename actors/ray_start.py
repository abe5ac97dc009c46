"""Start a local Ray head with only the processes Boardcast uses.

``ray.init()`` on a machine with no cluster starts, beside the GCS and the raylet
(and the raylet's two agents, which it cannot run without), an autoscaler monitor
and an API server (the dashboard process, kept for usage statistics even with
``include_dashboard=False``). Boardcast uses neither: a deployment grows by
``ray start`` on another machine, never by autoscaling, and it reads nothing from
the dashboard's job or state APIs. Together they hold about 105 MB of memory that
no other process shares. :func:`lean_head` starts the head without them; the
log monitor stays, since it is what brings the board hosts' log lines to the
``boardcast serve`` output.

Ray has no public switch for either process, so this swaps Ray's node class for a
subclass while ``ray.init`` runs: everything else (ports, tokens, the reaper that
stops the cluster with this process) stays Ray's own code. The module is imported
only by :mod:`actors.ray_backend`; ``ray`` is pinned, and
``tests/integration/test_lean_ray.py`` fails if a Ray upgrade changes the names
used here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import ray._private.node as ray_node

#: Ray's per-process setting that turns off metrics collection and export in every worker.
METRICS_OFF: dict[str, Any] = {"enable_metrics_collection": False}


class _LeanHeadNode(ray_node.Node):
    """Ray's head node without the autoscaler monitor and the API server."""

    def __init__(self, ray_params: Any, *args: Any, **kwargs: Any) -> None:
        if kwargs.get("head"):
            ray_params.no_monitor = True
        super().__init__(ray_params, *args, **kwargs)

    def start_api_server(self, *, include_dashboard: bool | None, raise_on_failure: bool) -> None:
        # The dashboard URL stays None, as on a node whose dashboard failed to start.
        self._webui_url = None


@contextlib.contextmanager
def lean_head() -> Iterator[None]:
    """While inside, a ``ray.init()`` that starts a local cluster starts a lean one."""
    original = ray_node.Node
    ray_node.Node = _LeanHeadNode  # type: ignore[misc]
    try:
        yield
    finally:
        ray_node.Node = original  # type: ignore[misc]
