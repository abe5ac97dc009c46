"""The embedded file store's signed URLs, served by the gateway at ``/v1/files/{id}/{upload}``.

``PUT`` stores an upload, ``GET`` sends a stored version. Neither needs a login: the URL
itself is the permission, signed by the REST API that handed it out
(``persistence/file_signing.py``). Each request is refused with a problem document when
the signature does not hold (403 ``signature-invalid``) or has expired (403
``url-expired``). On top of the signature:

- an upload is streamed to disk and cut off with 413 ``file-too-large`` past the size
  signed into its URL; it is accepted only while its version is still ``uploading``, so a
  URL cannot replace a file after it was completed or scanned;
- a download is served only while the attachment index says the version is ``clean``,
  so a URL handed out before a version was found infected fetches nothing.
"""

from __future__ import annotations

import time

from aiohttp import web

from gateway.rest.problems import Problem
from persistence.attachments import AttachmentIndex
from persistence.file_signing import SignatureRefused, verify
from persistence.file_store_local import FILES_ROUTE, LocalFileStore, UploadTooLarge
from persistence.files import FileRefused, FileState, content_disposition, object_key

UPLOAD_CHUNK_BYTES = 64 * 1024


class FilesRoute:
    """The handlers of the local store's URLs."""

    def __init__(self, store: LocalFileStore, index: AttachmentIndex, key: bytes) -> None:
        self.store = store
        self.index = index
        self._key = key

    def routes(self) -> list[web.RouteDef]:
        """``PUT`` and ``GET`` of one version."""
        path = FILES_ROUTE + "/{attachment_id:[0-9a-f]{32}}/{upload_id:[0-9a-f]{32}}"
        return [web.put(path, self.upload), web.get(path, self.download)]

    def _grant(self, request: web.Request) -> tuple[str, str, int]:
        try:
            grant = verify(self._key, request.method, request.path, request.query, now=time.time())
        except SignatureRefused as refused:
            name = "url-expired" if refused.reason == "expired" else "signature-invalid"
            raise Problem(name, str(refused)) from None
        return request.match_info["attachment_id"], request.match_info["upload_id"], grant.size

    async def upload(self, request: web.Request) -> web.Response:
        """Stream the body to disk, at most the signed size; 201 once it is all there."""
        attachment, upload, size = self._grant(request)
        if request.content_length is not None and request.content_length > size:
            raise Problem("file-too-large", f"this URL allows {size} bytes")
        found = await self.index.upload_state(attachment, upload)
        if found is None or found.state is not FileState.UPLOADING:
            raise Problem("conflict", "this upload is not open (completed, or expired)")
        try:
            received = await self.store.receive(
                object_key(attachment),
                upload,
                request.content.iter_chunked(UPLOAD_CHUNK_BYTES),
                max_bytes=size,
            )
        except UploadTooLarge:
            raise Problem("file-too-large", f"this URL allows {size} bytes") from None
        except FileRefused as refused:
            raise Problem(refused.problem, refused.detail) from None
        return web.json_response({"size": received}, status=201)

    async def download(self, request: web.Request) -> web.StreamResponse:
        """Send the version's file, if it is (still) clean."""
        attachment, upload, _size = self._grant(request)
        found = await self.index.upload_state(attachment, upload)
        record = await self.index.get(attachment) if found is not None else None
        path = self.store.path_of(object_key(attachment), upload)
        if found is None or record is None or found.state is not FileState.CLEAN or path is None:
            raise Problem("not-found", "no downloadable file here")
        return web.FileResponse(
            path,
            headers={
                "Content-Type": found.content_type,
                "Content-Disposition": content_disposition(record.name),
                "X-Content-Type-Options": "nosniff",
                # Served from the board app's origin: a file must never run as its page.
                "Content-Security-Policy": "sandbox; default-src 'none'",
                "Cache-Control": "private, no-store",
            },
        )
