"""Real servers the tests start themselves: a free loopback port, a bounded start, stop by pid.

A test that needs a service which is not installed (redis-server, SecantusDB, Node) skips on
a developer's machine, but fails under ``CI=true``: a CI run that skipped them would pass
without testing them. Tests call :func:`service_missing`; skips decided elsewhere (``skipif``
marks, fixtures in other conftests) are turned into failures by this module's
``pytest_runtest_makereport`` hook, which ``tests/integration/conftest.py`` imports and
``./scripts/test`` loads for the whole suite (``-p tests.services``).
"""

from __future__ import annotations

import abc
import contextlib
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Generator
from pathlib import Path
from typing import NoReturn

import pytest

# Slow machines can stretch every bounded wait in the suite.
TIMEOUT_SCALE = float(os.environ.get("BOARDCAST_TEST_TIMEOUT_SCALE", "1"))

# How the suite's skips for a missing service read ("redis-server is not installed",
# "JavaScript Yjs client unavailable: ..."); other skips are left alone.
_MISSING_SERVICE = re.compile(r"not installed|unavailable", re.IGNORECASE)


def running_in_ci() -> bool:
    """Whether the environment says it is CI (``CI=true``, as CI services set it)."""
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def service_missing(reason: str) -> NoReturn:
    """Skip the test because a service is missing; under ``CI=true``, fail it instead."""
    if running_in_ci():
        pytest.fail(f"CI=true and {reason}; ./scripts/test installs it", pytrace=False)
    pytest.skip(reason)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Under ``CI=true``, report a skip for a missing service as a failure."""
    report = yield
    if report.skipped and running_in_ci() and not hasattr(report, "wasxfail"):
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        if _MISSING_SERVICE.search(reason):
            report.outcome = "failed"
            report.longrepr = f"CI=true and a service is missing, so this may not skip: {reason}"
    return report


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class ServiceProcess(abc.ABC):
    """A server process on a loopback port: started, probed until it answers, stopped by pid."""

    name = "service"
    start_timeout = 30.0
    stop_timeout = 15.0

    def __init__(self, port: int | None = None) -> None:
        self.port = port if port is not None else free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """The running server's pid, or None."""
        return self._process.pid if self._process is not None else None

    @abc.abstractmethod
    def command(self) -> list[str]:
        """The command line that runs the server on ``self.port``."""

    @abc.abstractmethod
    def answers(self) -> bool:
        """True once the server serves requests."""

    @abc.abstractmethod
    def log_path(self) -> Path:
        """Where the server's output goes."""

    def start(self) -> None:
        """Launch the server and return once it answers (bounded wait)."""
        with open(self.log_path(), "ab") as log:
            self._process = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + self.start_timeout * TIMEOUT_SCALE
        while not self.answers():
            if self._process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self._process.returncode}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"{self.name} not answering after {self.start_timeout} s")
            time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM the server by its pid; SIGKILL it if it has not exited after a bounded wait."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(self.stop_timeout * TIMEOUT_SCALE)
            except subprocess.TimeoutExpired:
                self.kill()
        self._process = None

    def kill(self) -> None:
        """SIGKILL the server at once, as a crash would."""
        process = self._process
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)
        process.wait(self.stop_timeout * TIMEOUT_SCALE)
        self._process = None
