"""A multi-node Ray cluster on one machine, each node at its own loopback address.

Every node is `ray start --block` with its own ``--node-ip-address`` (127.0.0.2, .3, ...)
plus a `boardcast serve --address HEAD --node-ip IP` whose gateway listens on that address
and whose board hosts are pinned to that node. A board host that advertised an address
only its own node can reach (127.0.0.1) would be caught: every other node's gateway dials
a different loopback address. Ray runs with token authentication and a token of its own.
The Boardcast processes get the token only (RAY_AUTH_TOKEN), not RAY_AUTH_MODE, as an
operator who set the token would start them. Nodes are stopped by their pids, never with
`ray stop`.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil

from tests.interop.servers import READY_TIMEOUT, BoardcastProcess, boardcast_command
from tests.services import TIMEOUT_SCALE, free_port

RAY = str(Path(sys.executable).with_name("ray"))
START_TIMEOUT = 90.0 * TIMEOUT_SCALE
SERVE_ATTEMPTS = 3


def cluster_env(token: str) -> dict[str, str]:
    """The environment of every process of the test cluster."""
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": token,
        "RAY_USAGE_STATS_ENABLED": "0",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("RAY_ADDRESS", None)
    return env


def kill_tree(pid: int) -> int:
    """SIGKILL a process and every descendant; return how many were signalled."""
    try:
        root = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return 0
    tree = [root, *root.children(recursive=True)]
    for member in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.send_signal(signal.SIGKILL)
    psutil.wait_procs(tree, timeout=10)
    return len(tree)


class RayNode:
    """One `ray start --block` process tree at its own IP."""

    def __init__(self, ip: str, env: dict[str, str], *, head: str | None, temp_dir: Path) -> None:
        self.ip = ip
        self.env = env
        self.head = head
        self.temp_dir = temp_dir
        self.port = free_port() if head is None else None
        self.output: list[str] = []
        self._process: subprocess.Popen[str] | None = None
        self._started = threading.Event()

    @property
    def address(self) -> str:
        """The GCS address other nodes join (head only)."""
        assert self.port is not None
        return f"{self.ip}:{self.port}"

    def start(self) -> None:
        """Start the node and wait (bounded) until Ray says it runs."""
        args = [
            RAY,
            "start",
            "--block",
            "--node-ip-address",
            self.ip,
            "--num-cpus",
            "1",
            "--object-store-memory",
            str(80 * 1024 * 1024),
            "--disable-usage-stats",
        ]
        if self.head is None:
            args += ["--head", "--port", str(self.port), "--include-dashboard", "false"]
            args += ["--temp-dir", str(self.temp_dir)]
        else:
            args += ["--address", self.head]
        self._process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
            env=self.env,
        )
        threading.Thread(target=self._read, args=(self._process,), daemon=True).start()
        deadline = time.monotonic() + START_TIMEOUT
        while not self._started.wait(0.1):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                tail = "\n".join(self.output[-30:])
                raise RuntimeError(f"ray node {self.ip} did not start:\n{tail}")

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self.output.append(line.rstrip())
            if "Ray runtime started" in line:
                self._started.set()

    def kill(self) -> int:
        """SIGKILL every process of the node at once, as a machine loss would."""
        if self._process is None:
            return 0
        count = kill_tree(self._process.pid)
        with contextlib.suppress(Exception):
            self._process.wait(10)
        self._process = None
        return count


class NodeProcess(BoardcastProcess):
    """`boardcast serve` or `gateway` of one node, listening on the node's address."""

    def __init__(self, command: str, ip: str, env: dict[str, str], args: list[str]) -> None:
        super().__init__(command, port=free_port(), extra_args=["--host", ip, *args])
        self.ip = ip
        # Only the token: Boardcast must turn Ray's token mode on by itself.
        self.env = {name: value for name, value in env.items() if name != "RAY_AUTH_MODE"}
        self.env.setdefault("BOARDCAST_AUTH", "none")

    @property
    def url(self) -> str:
        """The y-websocket base URL of this node's gateway."""
        return f"ws://{self.ip}:{self.port}/ws"

    @property
    def http(self) -> str:
        """The gateway's HTTP base URL."""
        return f"http://{self.ip}:{self.port}"

    def start(self) -> None:
        """Start with the cluster's environment (its token) and wait for the ready line."""
        args = [*boardcast_command(), self.command, "--port", str(self.port), *self.extra_args]
        self._ready.clear()
        self.output.append(f"$ {' '.join(args)}")
        self._process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
            env=self.env,
        )
        self._reader = threading.Thread(
            target=self._read_output, args=(self._process,), daemon=True
        )
        self._reader.start()
        deadline = time.monotonic() + READY_TIMEOUT
        while not self._ready.wait(0.1):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"boardcast {self.command} on {self.ip} not ready:\n{self.output_tail()}"
                )

    def get_json(self, path: str) -> Any:
        """GET a JSON endpoint of this node's gateway."""
        with urllib.request.urlopen(self.http + path, timeout=30 * TIMEOUT_SCALE) as reply:
            return json.load(reply)

    def pid(self) -> int | None:
        """The process id, while it runs."""
        return self._process.pid if self._process is not None else None


class LocalCluster:
    """A head node and worker nodes, each running Ray and `boardcast serve`."""

    def __init__(self, data_dir: Path, *, cluster_name: str, hosts_per_node: int = 1) -> None:
        self.data_dir = data_dir
        self.cluster_name = cluster_name
        self.hosts_per_node = hosts_per_node
        self.env = cluster_env(secrets.token_hex(16))
        self.temp_dir = Path(tempfile.mkdtemp(prefix="bc-ray-", dir="/tmp"))
        self.ray_nodes: dict[str, RayNode] = {}
        self.servers: dict[str, NodeProcess] = {}
        self._next_ip = 2
        self.head: RayNode | None = None

    def _ip(self) -> str:
        ip = f"127.0.0.{self._next_ip}"
        self._next_ip += 1
        return ip

    def start_head(self) -> str:
        """Start the head node's Ray; its IP."""
        ip = self._ip()
        self.head = RayNode(ip, self.env, head=None, temp_dir=self.temp_dir)
        self.head.start()
        self.ray_nodes[ip] = self.head
        return ip

    def add_node(self, *, serve: bool = True) -> str:
        """Start one more Ray node (and its `boardcast serve`); its IP."""
        assert self.head is not None
        ip = self._ip()
        node = RayNode(ip, self.env, head=self.head.address, temp_dir=self.temp_dir)
        node.start()
        self.ray_nodes[ip] = node
        if serve:
            self.serve(ip)
        return ip

    def serve(self, ip: str, *extra: str) -> NodeProcess:
        """Run `boardcast serve` on node ``ip``, joining the cluster.

        The gateway's port is probed free beforehand, but another process's outgoing
        connection can take it on the node's address meanwhile: then once more, elsewhere.
        """
        assert self.head is not None
        for attempt in range(SERVE_ATTEMPTS):
            server = NodeProcess(
                "serve",
                ip,
                self.env,
                [
                    *("--address", self.head.address, "--node-ip", ip),
                    *("--data-dir", str(self.data_dir), "--cluster-name", self.cluster_name),
                    *("--hosts", str(self.hosts_per_node), *extra),
                ],
            )
            try:
                server.start()
            except RuntimeError as exc:
                if "address already in use" not in str(exc) or attempt + 1 == SERVE_ATTEMPTS:
                    raise
                continue
            self.servers[ip] = server
            return server
        raise AssertionError("unreachable")

    def kill_node(self, ip: str) -> int:
        """SIGKILL every process of node ``ip``: Ray's and Boardcast's."""
        count = 0
        server = self.servers.pop(ip, None)
        if server is not None:
            pid = server.pid()
            if pid is not None:
                count += kill_tree(pid)
            server.kill()
        node = self.ray_nodes.pop(ip, None)
        if node is not None:
            count += node.kill()
        return count

    def stop(self) -> None:
        """Stop every Boardcast process (SIGTERM), then kill every Ray node by pid."""
        for server in list(self.servers.values()):
            with contextlib.suppress(Exception):
                server.stop(timeout=20 * TIMEOUT_SCALE)
        self.servers.clear()
        for ip in [ip for ip in self.ray_nodes if self.head is None or ip != self.head.ip]:
            self.ray_nodes.pop(ip).kill()
        if self.head is not None:
            self.head.kill()
            self.ray_nodes.clear()
            self.head = None
