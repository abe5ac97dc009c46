"""The REST resources of task attachments, under ``/v1/boards/{board}/tasks/{task}/attachments``.

The bytes never pass through here: ``POST`` hands out a pre-signed upload to the file
store, ``POST .../complete`` checks the upload arrived whole and queues its virus scan,
and ``GET .../{id}`` gives a pre-signed download only once the current version is
``clean``. Editors and above upload and delete; anyone who may read the board may
download clean files. docs/files.md tells the whole flow.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from aiohttp import web

from actors.cluster import Cluster
from actors.extensions import Extensions
from actors.host import BoardUnavailable
from auth.roles import Action
from crdt.board import Board
from crdt.errors import BoardcastError
from gateway.auth.guard import Guard
from gateway.rest import attachment_commands
from gateway.rest.access import Caller, board_caller
from gateway.rest.commands import Refusal
from gateway.rest.inputs import RestLimits, an_id, an_object, only_keys, read_json, required_text
from gateway.rest.problems import Problem
from persistence.attachments import AttachmentIndex, AttachmentRecord
from persistence.event_log import EventLog, NewEvent
from persistence.files import (
    FileLimits,
    FileRefused,
    FileState,
    FileStore,
    PresignedRequest,
    check_content_type,
    check_size,
    object_key,
    sanitise_name,
)

T = TypeVar("T")
ATTACHMENTS = "/v1/boards/{board_id}/tasks/{task_id}/attachments"
#: The longest name a client may send; it is then cut to ``files_max_name_chars``.
MAX_RAW_NAME_CHARS = 4096


@dataclass
class Files:
    """What the attachment routes work with: the index, the store, the limits, the queue."""

    index: AttachmentIndex
    store: FileStore
    limits: FileLimits
    wake_scanner: Callable[[], None] = lambda: None
    events: EventLog | None = None  # the deployment's event log, when there is one


class AttachmentsApi:
    """The attachment handlers, bound to a cluster, the guard and the file service."""

    def __init__(
        self,
        cluster: Cluster,
        guard: Guard,
        extensions: Extensions,
        rest_limits: RestLimits,
        files: Files,
        *,
        call_timeout: float = 30.0,
    ) -> None:
        self.cluster = cluster
        self.guard = guard
        self.extensions = extensions
        self.rest_limits = rest_limits
        self.files = files
        self.call_timeout = call_timeout

    def routes(self) -> list[web.RouteDef]:
        """Every attachment route."""
        one = ATTACHMENTS + "/{attachment_id}"
        return [
            web.get(ATTACHMENTS, self.list_attachments),
            web.post(ATTACHMENTS, self.create_attachment),
            web.get(one, self.get_attachment),
            web.delete(one, self.delete_attachment),
            web.post(one + "/complete", self.complete_upload),
            web.get(one + "/versions", self.list_versions),
        ]

    # -- plumbing ----------------------------------------------------------------

    async def _on_board(
        self, board_id: str, function: Callable[[Board], T | Refusal], caller: Caller
    ) -> T:
        try:
            outcome = await asyncio.wait_for(
                self.cluster.run(board_id, function, origin=caller.identity), self.call_timeout
            )
        except (BoardUnavailable, TimeoutError, ConnectionError) as exc:
            raise Problem("unavailable", f"board {board_id!r} is unavailable: {exc}") from None
        except BoardcastError as exc:
            raise Problem("unavailable", str(exc)) from None
        value = outcome.value
        if isinstance(value, Refusal):
            raise Problem(value.problem, value.detail)
        return value  # type: ignore[return-value]  # None only for functions returning None

    async def _target(self, request: web.Request, action: Action) -> tuple[str, str, Caller]:
        board_id = request.match_info["board_id"]
        if board_id.startswith("boardcast."):
            raise Problem("forbidden", f"{board_id!r} is the server's own document")
        board_id = an_id(board_id, "a board id")
        caller = await board_caller(request, board_id, action, self.guard, self.extensions)
        task_id = an_id(request.match_info["task_id"], "a task id")
        return board_id, task_id, caller

    async def _record(self, request: web.Request, board_id: str, task_id: str) -> AttachmentRecord:
        attachment = an_id(request.match_info["attachment_id"], "an attachment id")
        record = await self.files.index.get(attachment)
        if record is None or (record.board_id, record.task_id) != (board_id, task_id):
            raise Problem("not-found", f"no attachment {attachment!r} on task {task_id!r}")
        return record

    async def _require_task(self, board_id: str, task_id: str, caller: Caller) -> None:
        found = await self._on_board(
            board_id, partial(attachment_commands.task_exists, task_id=task_id), caller
        )
        if not found:
            raise Problem("not-found", f"no task {task_id!r}")

    @staticmethod
    def _absolute(request: web.Request, presigned: PresignedRequest) -> dict[str, Any]:
        shown = presigned.to_json()
        if presigned.url.startswith("/"):
            # The embedded store's URLs are the gateway's own: the host the client reached.
            shown["url"] = f"{request.scheme}://{request.host}{presigned.url}"
        return shown

    @staticmethod
    def _refused(refused: FileRefused) -> Problem:
        return Problem(refused.problem, refused.detail)

    # -- handlers ----------------------------------------------------------------

    async def create_attachment(self, request: web.Request) -> web.Response:
        """Start an upload: ``{"name", "size", "content_type"}`` -> a pre-signed upload."""
        board_id, task_id, caller = await self._target(request, Action.WRITE)
        body = an_object(await read_json(request, self.rest_limits))
        only_keys(body, {"name", "size", "content_type"})
        limits = self.files.limits
        try:
            name = sanitise_name(
                required_text(body, "name", MAX_RAW_NAME_CHARS), limits.max_name_chars
            )
            content_type = check_content_type(
                required_text(body, "content_type", 255), limits.allowed_types
            )
            size = check_size(body.get("size"), limits.max_bytes)
        except FileRefused as refused:
            raise self._refused(refused) from None
        await self._require_task(board_id, task_id, caller)
        now = time.time()
        try:
            attachment, upload = await self.files.index.begin_upload(
                board_id=board_id,
                task_id=task_id,
                name=name,
                content_type=content_type,
                size=size,
                by=caller.identity,
                now=now,
                max_per_task=limits.max_per_task,
                upload_expired_before=now - limits.upload_url_seconds,
            )
        except FileRefused as refused:
            raise self._refused(refused) from None
        presigned = await self.files.store.presign_upload(
            object_key(attachment),
            upload,
            size=size,
            content_type=content_type,
            expires_in=limits.upload_url_seconds,
        )
        record = await self.files.index.get(attachment)
        assert record is not None
        body_out = {
            **record.to_json(),
            "upload_id": upload,
            "upload": self._absolute(request, presigned),
        }
        location = f"/v1/boards/{board_id}/tasks/{task_id}/attachments/{attachment}"
        return web.json_response(body_out, status=201, headers={"Location": location})

    async def complete_upload(self, request: web.Request) -> web.Response:
        """The client says its upload is done: check it arrived whole, then queue its scan."""
        board_id, task_id, caller = await self._target(request, Action.WRITE)
        record = await self._record(request, board_id, task_id)
        body = an_object(await read_json(request, self.rest_limits)) if request.body_exists else {}
        only_keys(body, {"upload_id"})
        waiting = [v for v in record.versions if v.state is FileState.UPLOADING]
        if "upload_id" in body:
            upload = an_id(body["upload_id"], "an upload id")
        elif waiting:
            upload = waiting[-1].upload_id
        else:
            return web.json_response(record.to_json())  # nothing waits: done before
        found = await self.files.index.upload_state(record.id, upload)
        if found is None:
            raise Problem("not-found", f"no upload {upload!r} of this attachment")
        if found.state is FileState.UPLOADING:
            key = object_key(record.id)
            stored = await self.files.store.stat(key, upload)
            if stored is None:
                raise Problem("not-uploaded", "nothing has arrived for this upload yet")
            if stored.size != found.size:
                await self.files.store.discard(key, stored.version)
                await self.files.index.drop_upload(record.id, upload)
                raise Problem(
                    "size-mismatch", f"{stored.size} bytes arrived, {found.size} were declared"
                )
            await self.files.index.complete(
                record.id, upload, version=stored.version, now=time.time()
            )
            self.files.wake_scanner()
        done = await self.files.index.get(record.id)
        assert done is not None
        project = await self._show(done, caller)
        await self._announce_added(done, upload, project, caller)
        return web.json_response(done.to_json())

    async def _show(self, record: AttachmentRecord, caller: Caller) -> str:
        """Put the attachment on its task, so everyone on the board sees it; the project."""
        current = record.current
        entry = {
            **{name: None for name in attachment_commands.FIELDS},
            "id": record.id,
            "name": record.name,
            "state": record.state.value,
            "added_by": record.created_by,
            "added_at": record.created_at,
        }
        if current is not None:
            entry.update(
                size=current.size, content_type=current.content_type, version=current.version
            )
        return await self._on_board(
            record.board_id,
            partial(attachment_commands.show_attachment, task_id=record.task_id, entry=entry),
            caller,
        )

    async def _announce_added(
        self, record: AttachmentRecord, upload: str, project: str, caller: Caller
    ) -> None:
        """Append ``attachment.added`` to the event log (the one place that does)."""
        if self.files.events is None:
            return
        version = next(v for v in record.versions if v.upload_id == upload)
        event = NewEvent(
            # Stable for this upload: completing it again appends nothing new.
            id=f"{record.board_id}:attachment:{record.id}:{upload}",
            board_id=record.board_id,
            project=project,
            type="attachment.added",
            data={
                "task": record.task_id,
                "attachment": record.id,
                "name": record.name,
                "size": version.size,
                "content_type": version.content_type,
                "version": version.version,
            },
            actor=caller.identity,
        )
        await self.files.events.append([event])

    async def list_attachments(self, request: web.Request) -> web.Response:
        """The task's attachments with their states."""
        board_id, task_id, caller = await self._target(request, Action.READ)
        await self._require_task(board_id, task_id, caller)
        found = await self.files.index.of_task(board_id, task_id)
        return web.json_response({"items": [r.to_json() for r in found], "next_cursor": None})

    async def get_attachment(self, request: web.Request) -> web.Response:
        """The attachment; with a pre-signed download only when its current version is clean."""
        board_id, task_id, _caller = await self._target(request, Action.READ)
        record = await self._record(request, board_id, task_id)
        shown = record.to_json()
        current = record.current
        if current is not None and current.state is FileState.CLEAN and current.version:
            presigned = await self.files.store.presign_download(
                object_key(record.id),
                current.version,
                filename=record.name,
                expires_in=self.files.limits.download_url_seconds,
            )
            shown["download"] = self._absolute(request, presigned)
        return web.json_response(shown)

    async def list_versions(self, request: web.Request) -> web.Response:
        """Every stored version of the attachment, oldest first, each with its state."""
        board_id, task_id, _caller = await self._target(request, Action.READ)
        record = await self._record(request, board_id, task_id)
        items = [v.to_json() for v in record.versions if v.completed_at is not None]
        return web.json_response({"items": items, "next_cursor": None})

    async def delete_attachment(self, request: web.Request) -> web.Response:
        """Delete the attachment, every version of its bytes, and its entry on the task."""
        board_id, task_id, caller = await self._target(request, Action.WRITE)
        record = await self._record(request, board_id, task_id)
        await self.files.index.delete(record.id)
        await self.files.store.delete(object_key(record.id))
        await self._on_board(
            board_id,
            partial(attachment_commands.hide_attachment, task_id=task_id, attachment_id=record.id),
            caller,
        )
        return web.Response(status=204)
