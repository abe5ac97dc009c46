"""Find every process of a server under test, including the Ray processes it started.

A Boardcast server is its ``boardcast serve`` process, everything that process
started (Ray's GCS, raylet, agents), and Ray's worker processes (board hosts,
the directory) forked by the raylet. Workers run in process groups of their own,
so killing the server's group is not enough: the bench kills them by pid.
Processes are found as the descendants of the server process, plus any process
whose command line names that cluster's Ray session directory (a process that
outlived its parent is re-parented and leaves the tree).
"""

from __future__ import annotations

import contextlib
import re
import time

import psutil

RAY_SESSION = re.compile(r"session_\d{4}-\d\d-\d\d_[\d\-]+_\d+")


def descendants(root: psutil.Process) -> list[psutil.Process]:
    """``root`` and every process below it (missing ones skipped)."""
    try:
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def ray_sessions(processes: list[psutil.Process]) -> set[str]:
    """Names of the Ray sessions (``session_<date>_<pid>``) these processes belong to."""
    sessions: set[str] = set()
    for process in processes:
        with contextlib.suppress(psutil.Error):
            sessions.update(RAY_SESSION.findall(" ".join(process.cmdline())))
    return sessions


def session_members(sessions: set[str]) -> list[psutil.Process]:
    """Every process whose command line names one of ``sessions``."""
    if not sessions:
        return []
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(process.info.get("cmdline") or ())
        if any(session in cmdline for session in sessions):
            found.append(process)
    return found


class ServerTree:
    """The processes of one server under test, refreshed on demand."""

    def __init__(self, root_pid: int) -> None:
        self.root_pid = root_pid
        self._root = psutil.Process(root_pid)
        self._sessions: set[str] = set()
        self._known: dict[int, psutil.Process] = {}
        self._last_session_scan = 0.0

    def refresh(self, *, session_scan_every: float = 5.0) -> list[psutil.Process]:
        """The live processes now (session scans are slower, so done every few seconds)."""
        tree = descendants(self._root)
        self._sessions |= ray_sessions([p for p in tree if p.pid not in self._known])
        now = time.monotonic()
        members: list[psutil.Process] = []
        if self._sessions and now - self._last_session_scan >= session_scan_every:
            members = session_members(self._sessions)
            self._last_session_scan = now
        for process in [*tree, *members]:
            self._known.setdefault(process.pid, process)
        alive = []
        for pid, process in list(self._known.items()):
            if process.is_running():
                alive.append(process)
            else:
                del self._known[pid]
        return alive

    def kill_all(self) -> int:
        """SIGKILL every process of the server still alive; return how many were killed."""
        killed = 0
        for process in self.refresh(session_scan_every=0.0):
            with contextlib.suppress(psutil.Error):
                process.kill()
                killed += 1
        return killed
