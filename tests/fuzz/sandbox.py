"""Run fuzz cases in a forked child, each bounded in time, the child bounded in memory.

A Yrs panic may leave pycrdt's state unsafe for the rest of a process, an update
with a huge length field may allocate gigabytes, a loop may never end: the child
takes each of those with it, and the parent only reads verdicts from a pipe. The
child serves cases until one panics, crashes or hangs; the next case forks a new one.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import select
import signal
import struct
import tempfile
import time
from typing import IO, Any

from pycrdt import Doc, Map

from tests.fuzz.oracle import (
    CRASH,
    HANG,
    LOG_DIFFERS,
    OK,
    SNAPSHOT_DIFFERS,
    UPDATE_DROPPED,
    Verdict,
    evaluate,
)

# A length field mutated to 2**40 must fail as MemoryError in the child, not swap the machine.
MEMORY_LIMIT = 2 * 1024**3
_HEADER = struct.Struct("!I")
# Verdicts reached without any panic: the child may go on serving cases.
NO_PANIC = frozenset({OK, UPDATE_DROPPED, SNAPSHOT_DIFFERS, LOG_DIFFERS})


def _warm_up() -> None:
    # The first Doc of a process costs ~50 ms; paid once here, not in every child.
    doc: Doc[Any] = Doc()
    doc.get("m", type=Map)["k"] = 1
    Doc().apply_update(doc.get_update())


def _write_message(fd: int, payload: dict[str, Any]) -> None:
    data = json.dumps(payload).encode()
    os.write(fd, _HEADER.pack(len(data)) + data)


def _read_exactly(fd: int, size: int) -> bytes | None:
    chunks = []
    while size:
        chunk = os.read(fd, size)
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _capture_panic_messages() -> IO[bytes]:  # pragma: no cover - runs in the child
    # Rust's panic hook writes "panicked at file:line" to fd 2; keep it to name the spot.
    os.environ["RUST_BACKTRACE"] = "0"
    log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the child
    os.dup2(log.fileno(), 2)
    return log


def _last_panic_location(log_fd: int) -> str:  # pragma: no cover - runs in the child
    size = os.lseek(log_fd, 0, os.SEEK_END)
    text = os.pread(log_fd, 4096, max(size - 4096, 0)).decode(errors="replace")
    spots = re.findall(r"panicked at (\S+?):(\d+):\d+", text)
    return f"{spots[-1][0].rsplit('/', 1)[-1]}:{spots[-1][1]}" if spots else "unknown"


def _serve(requests: int, verdicts: int) -> None:  # pragma: no cover - runs in the child
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    log = _capture_panic_messages()
    while True:
        header = _read_exactly(requests, _HEADER.size)
        if header is None:
            return
        body = _read_exactly(requests, _HEADER.unpack(header)[0])
        if body is None:
            return
        case = json.loads(body)
        updates = [bytes.fromhex(u) for u in case["updates"]]
        verdict = evaluate(
            updates,
            expect_complete=case["complete"],
            panic_location=lambda: _last_panic_location(log.fileno()),
        )
        _write_message(verdicts, verdict.to_json())
        if verdict.kind not in NO_PANIC:
            return


class Sandbox:
    """A forked evaluator process, replaced whenever a case panics, crashes or hangs."""

    def __init__(self, *, timeout: float = 2.0, fresh: bool = False) -> None:
        """``fresh``: a new child for every case (slower, nothing carried between cases)."""
        self.timeout = timeout
        self.fresh = fresh
        self.children_started = 0
        self._pid: int | None = None
        self._requests = -1
        self._verdicts = -1
        _warm_up()

    def run(self, updates: list[bytes], *, complete: bool = False) -> Verdict:
        """Evaluate ``updates`` (see :func:`tests.fuzz.oracle.evaluate`) in the child."""
        if self._pid is None:
            self._start()
        try:
            _write_message(
                self._requests, {"updates": [u.hex() for u in updates], "complete": complete}
            )
        except BrokenPipeError:
            return self._reap()
        verdict = self._read_verdict()
        # A finding that may have involved a panic (a poisoned doc panics in get_update)
        # gives the next case a clean process.
        if self.fresh or verdict.kind not in NO_PANIC:
            self.close()
        return verdict

    def close(self) -> None:
        """Stop the child, if one runs."""
        if self._pid is None:
            return
        pid, self._pid = self._pid, None
        os.close(self._requests)
        os.close(self._verdicts)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _start(self) -> None:
        request_read, request_write = os.pipe()
        verdict_read, verdict_write = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            os.close(request_write)
            os.close(verdict_read)
            status = 0
            try:
                _serve(request_read, verdict_write)
            except BaseException:
                status = 3
            finally:
                os._exit(status)
        os.close(request_read)
        os.close(verdict_write)
        self._pid, self._requests, self._verdicts = pid, request_write, verdict_read
        self.children_started += 1

    def _read_verdict(self) -> Verdict:
        deadline = time.monotonic() + self.timeout
        ready, _, _ = select.select([self._verdicts], [], [], self.timeout)
        if not ready:
            return Verdict(HANG, None, f"no verdict within {self.timeout:g} s")
        header = _read_exactly(self._verdicts, _HEADER.size)
        if header is None:
            return self._reap()
        left = max(deadline - time.monotonic(), 0.1)
        ready, _, _ = select.select([self._verdicts], [], [], left)
        body = _read_exactly(self._verdicts, _HEADER.unpack(header)[0]) if ready else None
        if body is None:
            return self._reap()
        fields = json.loads(body)
        return Verdict(fields["kind"], fields["index"], fields["detail"])

    def _reap(self) -> Verdict:
        pid, self._pid = self._pid, None
        assert pid is not None
        os.close(self._requests)
        os.close(self._verdicts)
        _, status = os.waitpid(pid, 0)
        if os.WIFSIGNALED(status):
            return Verdict(CRASH, None, f"killed by {signal.Signals(os.WTERMSIG(status)).name}")
        return Verdict(CRASH, None, f"exit status {os.waitstatus_to_exitcode(status)}")


def run_isolated(updates: list[bytes], *, complete: bool = False, timeout: float = 5.0) -> Verdict:
    """Evaluate one case in a child of its own."""
    with Sandbox(timeout=timeout, fresh=True) as sandbox:
        return sandbox.run(updates, complete=complete)
