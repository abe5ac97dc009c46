"""The local Ray cluster ``boardcast serve`` starts runs only the processes Boardcast uses.

Each check runs in a child process that starts its own cluster (``init_ray(None)``),
so the session's shared cluster is not involved. The same check against Ray's plain
``ray.init`` must find the autoscaler monitor and the API server: that shows the
check can see them at all.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.ray

# Starts a cluster, runs an actor that logs, lists the cluster's processes, stops it,
# and reports which of those processes outlived the stop.
CHILD = """
import json, logging, sys, time
import psutil
from actors import ray_backend  # first: it sets Ray's auth mode before Ray is imported
import ray

lean = sys.argv[1] == "lean"
if lean:
    ray_backend.init_ray(None, num_cpus=1)
else:
    ray.init(include_dashboard=False, num_cpus=1, logging_level=logging.WARNING)

@ray.remote(num_cpus=0)
class Speaker:
    def speak(self) -> int:
        print("lean-ray-marker from an actor", flush=True)
        return 42

speaker = Speaker.remote()
answer = ray.get(speaker.speak.remote(), timeout=60)
time.sleep(2.0)  # the log monitor forwards actor output about once a second
children = psutil.Process().children(recursive=True)
commands = [" ".join(p.cmdline()) for p in children]
ray.kill(speaker)
ray_backend.shutdown_ray()
deadline = time.monotonic() + 20
while time.monotonic() < deadline and any(p.is_running() and p.status() != "zombie"
                                          for p in children):
    time.sleep(0.2)
left = [p.pid for p in children if p.is_running() and p.status() != "zombie"]
print("RESULT " + json.dumps({"answer": answer, "commands": commands, "left": left}))
"""


def start_cluster(variant: str) -> tuple[dict[str, object], str]:
    """Run the child; its report and everything it printed (actor output included)."""
    done = subprocess.run(
        [sys.executable, "-c", CHILD, variant],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT ")), done.stdout + done.stderr


def started(commands: object, script: str) -> bool:
    assert isinstance(commands, list)
    return any(script in command for command in commands)


def test_serve_starts_ray_without_the_autoscaler_and_the_api_server() -> None:
    report, output = start_cluster("lean")
    assert report["answer"] == 42  # actors run
    assert not started(report["commands"], "autoscaler/_private/monitor.py")
    assert not started(report["commands"], "dashboard/dashboard.py")
    assert started(report["commands"], "gcs_server")
    # The log monitor stays: board hosts' log lines still reach the serve output.
    assert "lean-ray-marker from an actor" in output
    # Stopping leaves nothing behind.
    assert report["left"] == []


def test_the_process_check_sees_what_plain_ray_init_starts() -> None:
    report, _ = start_cluster("plain")
    assert report["answer"] == 42
    assert started(report["commands"], "autoscaler/_private/monitor.py")
    assert started(report["commands"], "dashboard/dashboard.py")
