"""The embedded file store: attachment versions as files in the data directory.

Layout under the store's root (``<data_dir>/files`` by default)::

    objects/<attachment>/<upload>       one file per stored version (the upload id is its version)
    objects/<attachment>/.<upload>.part  an upload still arriving
    quarantine/<attachment>/<upload>    an infected version, moved out of reach

The gateway serves the URLs this store signs (``gateway/files_route.py``): an upload is
streamed to disk chunk by chunk and stops at the signed size; a download is sent from
the file. Only ids (hex) ever reach a path, so no name a user chose can walk the tree.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import time
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path

from persistence.file_signing import signed_query
from persistence.files import FileRefused, PresignedRequest, StoredObject

FILES_ROUTE = "/v1/files"
_ID = re.compile(r"^[0-9a-f]{32}$")
_KEY_PREFIX = "attachments/"
READ_CHUNK_BYTES = 64 * 1024


class UploadTooLarge(Exception):
    """More bytes arrived than the signed URL allows."""


def _attachment_of(key: str) -> str:
    attachment = key.removeprefix(_KEY_PREFIX)
    if not key.startswith(_KEY_PREFIX) or not _ID.match(attachment):
        raise ValueError(f"not an attachment key: {key!r}")
    return attachment


def _checked(upload: str) -> str:
    if not _ID.match(upload):
        raise ValueError(f"not an upload id: {upload!r}")
    return upload


class LocalFileStore:
    """A :class:`~persistence.files.FileStore` in a local directory, URLs signed with ``key``."""

    def __init__(self, root: Path, key: bytes) -> None:
        self.root = root
        self._key = key
        self._objects = root / "objects"
        self._quarantine = root / "quarantine"

    async def setup(self) -> None:
        """Create the directories (0700: only the server reads them)."""
        for directory in (self.root, self._objects, self._quarantine):
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)

    async def close(self) -> None:
        """Nothing to release."""

    # -- signing --------------------------------------------------------------

    def url_path(self, key: str, upload: str) -> str:
        """The gateway path of one version."""
        return f"{FILES_ROUTE}/{_attachment_of(key)}/{_checked(upload)}"

    def _presign(self, method: str, path: str, size: int, expires_in: float) -> PresignedRequest:
        expires = int(time.time() + expires_in)
        query = signed_query(self._key, method, path, expires=expires, size=size)
        return PresignedRequest(method, f"{path}?{query}", {}, float(expires))

    async def presign_upload(
        self, key: str, upload: str, *, size: int, content_type: str, expires_in: float
    ) -> PresignedRequest:
        """A PUT to the gateway that stores at most ``size`` bytes as version ``upload``."""
        request = self._presign("PUT", self.url_path(key, upload), size, expires_in)
        request.headers["Content-Type"] = content_type
        return request

    async def presign_download(
        self, key: str, version: str, *, filename: str, expires_in: float
    ) -> PresignedRequest:
        """A GET from the gateway of that one version (the route adds the file name)."""
        found = self.path_of(key, version)
        size = found.stat().st_size if found is not None else 0
        return self._presign("GET", self.url_path(key, version), size, expires_in)

    # -- bytes ----------------------------------------------------------------

    def path_of(self, key: str, version: str) -> Path | None:
        """The file of a stored (not quarantined) version, if there is one."""
        path = self._objects / _attachment_of(key) / _checked(version)
        return path if path.is_file() else None

    async def receive(
        self, key: str, upload: str, chunks: AsyncIterable[bytes], *, max_bytes: int
    ) -> int:
        """Stream an upload to disk; :class:`UploadTooLarge` past ``max_bytes`` (nothing kept).

        The bytes go to a ``.part`` file first and take the version's name only once all
        of them are there, so no reader ever sees half a file.
        """
        directory = self._objects / _attachment_of(key)
        final = directory / _checked(upload)
        if final.exists():
            raise FileRefused("conflict", "this upload has already been stored")
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        part = directory / f".{upload}.part"
        received = 0
        try:
            with open(part, "wb") as out:
                async for chunk in chunks:
                    received += len(chunk)
                    if received > max_bytes:
                        raise UploadTooLarge(f"the URL allows {max_bytes} bytes")
                    await asyncio.to_thread(out.write, chunk)
                await asyncio.to_thread(out.flush)
                await asyncio.to_thread(os.fsync, out.fileno())
            os.replace(part, final)
        finally:
            with contextlib.suppress(FileNotFoundError):
                part.unlink()
        return received

    async def stat(self, key: str, upload: str) -> StoredObject | None:
        """The version ``upload`` stored, if it arrived in full."""
        path = self.path_of(key, upload)
        if path is None:
            return None
        found = path.stat()
        return StoredObject(key, upload, found.st_size, found.st_mtime)

    async def read(self, key: str, version: str) -> AsyncIterator[bytes]:
        """The version's bytes in chunks of 64 KiB."""
        path = self.path_of(key, version)
        if path is None:
            raise FileNotFoundError(f"{key} has no version {version}")
        with open(path, "rb") as source:
            while chunk := await asyncio.to_thread(source.read, READ_CHUNK_BYTES):
                yield chunk

    async def versions(self, key: str) -> list[StoredObject]:
        """The stored versions of ``key``, oldest first (quarantined ones are out of reach)."""
        directory = self._objects / _attachment_of(key)
        if not directory.is_dir():
            return []
        found = [
            StoredObject(key, entry.name, entry.stat().st_size, entry.stat().st_mtime)
            for entry in directory.iterdir()
            if _ID.match(entry.name) and entry.is_file()
        ]
        return sorted(found, key=lambda item: (item.modified_at, item.version))

    async def quarantine(self, key: str, version: str) -> None:
        """Move the version into ``quarantine/``, which no URL reaches."""
        attachment = _attachment_of(key)
        source = self._objects / attachment / _checked(version)
        target = self._quarantine / attachment / version
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with contextlib.suppress(FileNotFoundError):
            os.replace(source, target)

    async def discard(self, key: str, version: str) -> None:
        """Delete one stored version."""
        path = self.path_of(key, version)
        if path is not None:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    async def delete(self, key: str) -> None:
        """Remove every stored version of ``key``."""
        directory = self._objects / _attachment_of(key)
        await asyncio.to_thread(shutil.rmtree, directory, True)
