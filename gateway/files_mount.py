"""Task attachments on a gateway: the file store, the attachment index, the scan queue, routes.

Built from the settings (``files_*``, docs/settings.md): the embedded store in the data
directory unless ``files_store`` is ``s3``. The scan queue runs in the gateway's process
for as long as the app does; it picks up, at start, every scan an earlier run left.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

from aiohttp import web

from actors.cluster import Cluster
from actors.extensions import Extensions
from gateway.auth.guard import Guard
from gateway.files_route import FilesRoute
from gateway.rest import attachment_commands
from gateway.rest.attachments import AttachmentsApi, Files
from gateway.rest.inputs import RestLimits
from gateway.settings import Settings
from persistence.attachments import AttachmentIndex, ScanJob
from persistence.event_log import EventLog, ManagedEventLog
from persistence.event_log_factory import event_log_for
from persistence.factory import open_store
from persistence.file_signing import load_or_create_key, parse_key
from persistence.file_store_local import LocalFileStore
from persistence.files import FileLimits, FileState, FileStore
from workers.scan import ClamdScanner, ScanQueue, ScanTimings, Verdict

log = logging.getLogger("boardcast.files")

FILES = web.AppKey("files", Files)


def file_limits(settings: Settings) -> FileLimits:
    """The attachment limits ``settings`` names."""
    return FileLimits(
        max_bytes=settings.files_max_bytes,
        max_per_task=settings.files_max_per_task,
        max_name_chars=settings.files_max_name_chars,
        allowed_types=tuple(t.strip().lower() for t in settings.files_allowed_types if t.strip()),
        upload_url_seconds=settings.files_upload_url_seconds,
        download_url_seconds=settings.files_download_url_seconds,
    )


def scan_timings(settings: Settings) -> ScanTimings:
    """How the scan queue polls and backs off."""
    return ScanTimings(
        poll_seconds=settings.files_scan_poll_seconds,
        retry_seconds=settings.files_scan_retry_seconds,
        max_retry_seconds=settings.files_scan_max_retry_seconds,
        lease_seconds=max(60.0, 2 * settings.files_scan_timeout_seconds),
    )


def url_key(settings: Settings) -> bytes:
    """The key that signs the embedded store's URLs: the setting, or a file in the data dir."""
    if settings.files_url_key:
        return parse_key(settings.files_url_key)
    return load_or_create_key(Path(settings.data_dir) / "keys" / "files-url.key")


def open_file_store(settings: Settings, key: bytes) -> FileStore:
    """The store ``files_store`` names."""
    if settings.files_store == "s3":
        if not settings.files_s3_bucket:
            raise ValueError("files_store is s3 but files_s3_bucket is empty")
        from persistence.file_store_s3 import S3FileStore, S3Settings

        return S3FileStore(
            S3Settings(
                bucket=settings.files_s3_bucket,
                endpoint_url=settings.files_s3_endpoint_url or None,
                region=settings.files_s3_region,
                access_key_id=settings.files_s3_access_key_id or None,
                secret_access_key=settings.files_s3_secret_access_key or None,
                timeout_seconds=settings.files_s3_timeout_seconds,
            )
        )
    if settings.files_store != "local":
        raise ValueError(f"files_store must be local or s3, not {settings.files_store!r}")
    root = Path(settings.files_dir) if settings.files_dir else Path(settings.data_dir) / "files"
    return LocalFileStore(root, key)


class _NoScanner:
    """No clamd configured: every scan fails, so nothing becomes downloadable."""

    async def scan(self, chunks: AsyncIterator[bytes]) -> Verdict:
        from workers.scan import ScanFailed

        raise ScanFailed("no virus scanner is configured (files_clamd)")


def add_attachments(
    app: web.Application,
    cluster: Cluster,
    settings: Settings,
    guard: Guard,
    extensions: Extensions,
    rest_limits: RestLimits,
    *,
    events: EventLog | None = None,
) -> None:
    """Serve the attachment routes (and the local store's URLs) and run the scan queue.

    ``attachment.added`` goes to ``events``, by default the event log beside the board store.
    """
    own_log: ManagedEventLog | None = None
    board_store = None
    if events is None:
        board_store = open_store(settings.store, data_dir=settings.data_dir)
        try:
            events = own_log = event_log_for(board_store)
        except NotImplementedError:
            events = None
    key = url_key(settings)
    store = open_file_store(settings, key)
    index = AttachmentIndex(Path(settings.data_dir) / "attachments.sqlite3")
    scanner = (
        ClamdScanner(
            settings.files_clamd,
            timeout=settings.files_scan_timeout_seconds,
            max_bytes=settings.files_max_bytes,
        )
        if settings.files_clamd
        else _NoScanner()
    )

    async def show_state(job: ScanJob, state: FileState) -> None:
        await cluster.run(
            job.board_id,
            partial(
                attachment_commands.show_state,
                task_id=job.task_id,
                attachment_id=job.attachment_id,
                state=state.value,
            ),
            origin="boardcast.files",
        )

    queue = ScanQueue(index, store, scanner, timings=scan_timings(settings), on_state=show_state)
    files = app[FILES] = Files(index, store, file_limits(settings), queue.wake, events)
    api = AttachmentsApi(
        cluster,
        guard,
        extensions,
        rest_limits,
        files,
        call_timeout=settings.store_timeout_seconds,
    )
    app.add_routes(api.routes())
    if isinstance(store, LocalFileStore):
        app.add_routes(FilesRoute(store, index, key).routes())

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await store.setup()
        await queue.start()
        yield
        await queue.stop()
        await store.close()
        await index.close()
        if own_log is not None:
            await own_log.close()
        if board_store is not None:
            await board_store.close()

    app.cleanup_ctx.append(lifecycle)
