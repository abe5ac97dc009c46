"""Task attachments: the file store interface, their states, and the rules on names.

Bytes never pass through a board: a client asks the REST API for a pre-signed upload,
sends the file straight to the store, and says it is done; the file is then scanned for
viruses and only a clean version is ever handed out, again as a pre-signed URL. Two
stores implement :class:`FileStore`: a directory in the data dir whose URLs the gateway
itself serves (``persistence/file_store_local.py``) and S3 (``file_store_s3.py``).
docs/files.md tells the whole flow.

This module does no I/O.
"""

from __future__ import annotations

import enum
import re
import unicodedata
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable
from urllib.parse import quote

_ID_NAMESPACE = uuid.UUID("3c6f2a4e-8b1d-4f0a-9e57-2d4b6a8c1e90")


class FileState(enum.StrEnum):
    """Where one stored version of an attachment is in its life.

    ``uploading`` (a signed upload was handed out) -> ``pending`` (the upload is complete
    and waits for its scan) -> ``clean`` (downloadable) or ``infected`` (quarantined,
    never served). A scan that could not run (clamd down, a timeout) leaves ``error``,
    which is retried and is never downloadable.
    """

    UPLOADING = "uploading"
    PENDING = "pending"
    CLEAN = "clean"
    INFECTED = "infected"
    ERROR = "error"


#: States the scanner still has to decide.
UNSCANNED = frozenset({FileState.PENDING, FileState.ERROR})


class FileRefused(Exception):
    """A request about a file that cannot be honoured; ``problem`` names its REST problem."""

    def __init__(self, problem: str, detail: str) -> None:
        super().__init__(detail)
        self.problem = problem
        self.detail = detail


@dataclass(frozen=True, slots=True)
class PresignedRequest:
    """What a client sends to the store itself: method, URL, and headers it must set."""

    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    expires_at: float = 0.0  # unix seconds

    def to_json(self) -> dict[str, object]:
        """The request as the REST API shows it."""
        return {
            "method": self.method,
            "url": self.url,
            "headers": dict(self.headers),
            "expires_at": self.expires_at,
        }


@dataclass(frozen=True, slots=True)
class StoredObject:
    """One version of an object as a store holds it."""

    key: str
    version: str  # the store's version id
    size: int
    modified_at: float = 0.0


@runtime_checkable
class FileStore(Protocol):
    """Where attachment bytes live. Every version is kept until the attachment is deleted.

    ``key`` is the attachment's object key; ``upload`` names one upload (the local store
    uses it as the version id; S3 assigns its own version ids, read back by :meth:`stat`).
    """

    async def setup(self) -> None:
        """Create what the store needs (a directory, a versioned bucket); idempotent."""
        ...

    async def close(self) -> None:
        """Release clients and threads."""
        ...

    async def presign_upload(
        self, key: str, upload: str, *, size: int, content_type: str, expires_in: float
    ) -> PresignedRequest:
        """A request that stores at most ``size`` bytes as a new version of ``key``."""
        ...

    async def presign_download(
        self, key: str, version: str, *, filename: str, expires_in: float
    ) -> PresignedRequest:
        """A request that reads that one version of ``key``."""
        ...

    async def stat(self, key: str, upload: str) -> StoredObject | None:
        """The version that ``upload`` stored, or None if nothing arrived."""
        ...

    def read(self, key: str, version: str) -> AsyncIterator[bytes]:
        """The bytes of one version, in chunks (never the whole file in memory)."""
        ...

    async def versions(self, key: str) -> list[StoredObject]:
        """Every version of ``key`` still within reach, oldest first."""
        ...

    async def quarantine(self, key: str, version: str) -> None:
        """Move one version out of reach: no URL, old or new, can fetch it from ``key``."""
        ...

    async def discard(self, key: str, version: str) -> None:
        """Delete one version for good (an upload refused after it arrived)."""
        ...

    async def delete(self, key: str) -> None:
        """Delete every version of ``key`` (quarantined copies stay for the operator)."""
        ...


@dataclass(frozen=True, slots=True)
class FileLimits:
    """What one attachment and one task may hold (docs/settings.md, ``files_*``)."""

    max_bytes: int = 25 * 1024 * 1024
    max_per_task: int = 50
    max_name_chars: int = 200
    allowed_types: tuple[str, ...] = (
        "application/pdf",
        "application/zip",
        "application/octet-stream",
        "image/png",
        "image/jpeg",
        "image/gif",
        "image/webp",
        "text/plain",
        "text/csv",
        "text/markdown",
    )
    upload_url_seconds: float = 300.0
    download_url_seconds: float = 300.0


# Characters that never belong in a file name: path separators, NUL and other controls
# (a header injection in Content-Disposition), and the ones Windows refuses.
_UNSAFE = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]')
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_CONTENT_TYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]{0,63}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}$")


def sanitise_name(raw: str, max_chars: int) -> str:
    """A file name safe to store and to send back in a header, or :class:`FileRefused`.

    Path separators and control characters become ``_``, leading dots and spaces go (no
    ``..``, no hidden files), the text is NFC-normalised and cut to ``max_chars``
    characters, keeping the extension where it fits.
    """
    name = unicodedata.normalize("NFC", raw)
    name = _UNSAFE.sub("_", name)
    # Other controls (C1), Unicode's line separators, format characters (a bidi override
    # hides an extension) and lone surrogates (not encodable) go too.
    name = "".join("_" if unicodedata.category(ch) in _UNSAFE_CATEGORIES else ch for ch in name)
    name = name.strip().lstrip(". ")
    if not name or set(name) <= {"_", "."}:
        raise FileRefused("validation", "the file name is empty once unsafe characters are gone")
    if len(name) > max_chars:
        stem, dot, extension = name.rpartition(".")
        if dot and 0 < len(extension) <= 16 and stem:
            name = stem[: max_chars - len(extension) - 1].rstrip() + "." + extension
        else:
            name = name[:max_chars]
    return name


def check_content_type(raw: str, allowed: tuple[str, ...]) -> str:
    """The media type, lower-cased without parameters, if it is allowed."""
    media = raw.split(";", 1)[0].strip().lower()
    if not _CONTENT_TYPE.match(media):
        raise FileRefused("validation", "content_type must be a media type such as image/png")
    if "*" not in allowed and media not in allowed:
        raise FileRefused(
            "unsupported-media-type",
            f"{media} files are not accepted here; see files_allowed_types",
        )
    return media


def check_size(size: object, max_bytes: int) -> int:
    """The declared size, if it is a whole number of bytes within the limit."""
    if isinstance(size, float) and size.is_integer() and abs(size) < 2**53:
        size = int(size)  # JSON has one number type: 2048.0 is 2048
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise FileRefused("validation", "size must be a whole number of bytes, at least 1")
    if size > max_bytes:
        raise FileRefused("file-too-large", f"a file may hold at most {max_bytes} bytes")
    return size


def attachment_id(board_id: str, task_id: str, name: str) -> str:
    """The id of the attachment called ``name`` on a task: the same name is the same
    attachment, so uploading it again adds a version."""
    return uuid.uuid5(_ID_NAMESPACE, f"{board_id}\x00{task_id}\x00{name.casefold()}").hex


def object_key(attachment: str) -> str:
    """Where an attachment's bytes live in a store (ids only: no user text in keys)."""
    return f"attachments/{attachment}"


def new_upload_id() -> str:
    """A fresh upload id (hex; safe in a path)."""
    return uuid.uuid4().hex


def content_disposition(filename: str) -> str:
    """``attachment`` with the name as RFC 6266 asks: an ASCII fallback, then UTF-8."""
    fallback = "".join(
        ch if ch.isascii() and ch.isprintable() and ch not in '"\\' else "_" for ch in filename
    )
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"
