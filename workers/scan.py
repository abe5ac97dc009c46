"""The virus scan: every completed upload is scanned by clamd before anyone may download it.

The queue is the attachment index itself (``persistence/attachments.py``): a version in
``pending`` or ``error`` is due for a scan, so a gateway that restarts finds every scan
it had not finished. :class:`ScanQueue` claims due versions with a lease, streams each
from the file store to clamd (INSTREAM, through aioclamd), and records the verdict:

- ``OK``: ``clean``, downloadable from now on;
- ``FOUND``: ``infected``, then moved to the store's quarantine; never served;
- anything else (clamd down, a timeout, a stream longer than clamd accepts): ``error``,
  tried again later with a growing delay. A failed scan never counts as clean.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import IO, Protocol

import aioclamd

from persistence.attachments import AttachmentIndex, ScanJob
from persistence.files import FileState, FileStore, object_key

log = logging.getLogger("boardcast.files")


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a scanner concluded: ``clean``, or the name of what it found."""

    clean: bool
    finding: str | None = None


class ScanFailed(Exception):
    """The scanner could not decide (unreachable, timed out, refused the stream)."""


class VirusScanner(Protocol):
    """Something that reads a file and says whether it is infected."""

    async def scan(self, chunks: AsyncIterator[bytes]) -> Verdict:
        """The verdict on the bytes; :class:`ScanFailed` when there is none."""
        ...


class ClamdScanner:
    """clamd over TCP (``host:port``), through aioclamd's INSTREAM.

    aioclamd reads a file object, so the bytes are spooled to a temporary file first
    (on disk past 1 MiB): a file never sits in memory whole.
    """

    def __init__(self, address: str, *, timeout: float, max_bytes: int) -> None:
        host, _, port = address.rpartition(":")
        if not host or not port.isdecimal():
            raise ValueError(f"files_clamd must be host:port, not {address!r}")
        self.address = address
        self._client = aioclamd.ClamdAsyncClient(host.strip("[]"), int(port), timeout=timeout)
        self._max_bytes = max_bytes

    async def scan(self, chunks: AsyncIterator[bytes]) -> Verdict:
        """Stream the bytes to clamd and read its one-line answer."""
        with tempfile.SpooledTemporaryFile(max_size=1024 * 1024) as spool:
            async for chunk in chunks:
                await asyncio.to_thread(spool.write, chunk)
            spool.seek(0)
            try:
                answer = await self._client.instream(_LargeReads(spool), max_size=self._max_bytes)
            except (aioclamd.ClamdError, OSError) as error:
                raise ScanFailed(f"clamd at {self.address}: {error}") from error
        if not isinstance(answer, dict) or len(answer) != 1:
            raise ScanFailed(f"clamd at {self.address} answered {answer!r}")
        status, finding = next(iter(answer.values()))
        if status == "OK":
            return Verdict(True)
        if status == "FOUND":
            return Verdict(False, str(finding))
        raise ScanFailed(f"clamd at {self.address} could not scan: {finding}")


#: Bytes per INSTREAM chunk: aioclamd asks for 1 KiB at a time (one thread hop each:
#: 16 MiB took 8 s to scan); clamd takes any chunk below its StreamMaxLength.
INSTREAM_CHUNK_BYTES = 256 * 1024


class _LargeReads:
    """The spool, read in large chunks whatever size aioclamd asks for."""

    def __init__(self, spool: IO[bytes]) -> None:
        self._spool = spool

    def read(self, size: int = -1) -> bytes:
        return self._spool.read(INSTREAM_CHUNK_BYTES)


#: Told of every state a scan decides, to show it on the board.
StateListener = Callable[[ScanJob, FileState], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class ScanTimings:
    """How often the queue looks, and how it backs off (docs/settings.md, ``files_scan_*``)."""

    poll_seconds: float = 1.0
    retry_seconds: float = 5.0
    max_retry_seconds: float = 3600.0
    lease_seconds: float = 300.0
    batch: int = 8

    def retry_delay(self, attempts: int) -> float:
        """The wait before the next try after ``attempts`` failed ones (doubling, capped)."""
        return float(min(self.max_retry_seconds, self.retry_seconds * 2 ** min(attempts, 30)))


class ScanQueue:
    """Drains the scans due in the attachment index, in the gateway's process."""

    def __init__(
        self,
        index: AttachmentIndex,
        store: FileStore,
        scanner: VirusScanner,
        *,
        timings: ScanTimings,
        on_state: StateListener | None = None,
    ) -> None:
        self.index = index
        self.store = store
        self.scanner = scanner
        self.timings = timings
        self._on_state = on_state
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        """Look for due scans now (a new upload was completed)."""
        self._wake.set()

    async def start(self) -> None:
        """Run the loop in the background, starting with every scan left waiting."""
        if self._task is None:
            await self.index.retry_now(time.time())
            self._task = asyncio.ensure_future(self._loop())

    async def stop(self) -> None:
        """Stop the loop; a scan cut short is leased, then claimed again after a restart."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception:
                log.exception("the scan queue failed; trying again")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.timings.poll_seconds)

    async def run_once(self) -> int:
        """Scan every version due now; how many were scanned (or tried)."""
        done = 0
        for _round in range(1000):  # bounded: a batch at a time
            jobs = await self.index.claim_scans(
                now=time.time(), lease_seconds=self.timings.lease_seconds, limit=self.timings.batch
            )
            if not jobs:
                break
            for job in jobs:
                await self.scan(job)
                done += 1
        return done

    async def scan(self, job: ScanJob) -> FileState:
        """Scan one claimed version and record what came of it."""
        key = object_key(job.attachment_id)
        try:
            verdict = await self.scanner.scan(self.store.read(key, job.version))
        except Exception as error:  # clamd, the store, anything: the verdict is missing
            # Not clean: a file nobody could scan stays out of reach, and is tried again.
            delay = self.timings.retry_delay(job.attempts)
            log.warning(
                "scan of %s/%s failed (%s); again in %.0f s", key, job.version, error, delay
            )
            await self.index.finish_scan(
                job,
                state=FileState.ERROR,
                finding=str(error)[:500],
                now=time.time(),
                retry_at=time.time() + delay,
            )
            await self._tell(job, FileState.ERROR)
            return FileState.ERROR
        if verdict.clean:
            await self.index.finish_scan(job, state=FileState.CLEAN, finding=None, now=time.time())
            await self._tell(job, FileState.CLEAN)
            return FileState.CLEAN
        # Marked first, so no download URL is handed out while the move happens.
        await self.index.finish_scan(
            job, state=FileState.INFECTED, finding=verdict.finding, now=time.time()
        )
        log.warning("%s/%s is infected (%s): quarantined", key, job.version, verdict.finding)
        await self.store.quarantine(key, job.version)
        await self._tell(job, FileState.INFECTED)
        return FileState.INFECTED

    async def _tell(self, job: ScanJob, state: FileState) -> None:
        if self._on_state is None:
            return
        try:
            await self._on_state(job, state)
        except Exception:
            # The board shows a copy; the index is the authority and already says it.
            log.exception("could not show %s's state on board %s", job.attachment_id, job.board_id)
