"""Signed, expiring URLs for the embedded file store: what the gateway hands out and checks.

A URL is ``<path>?expires=<unix seconds>&size=<bytes>&sig=<hex>``, where ``sig`` is an
HMAC-SHA256, under the deployment's file-URL key, of the method, the path, the expiry and
the size. So a URL made for a download cannot upload, one made for one file cannot reach
another, and nobody can stretch its life or the size it may upload. The check compares in
constant time (``hmac.compare_digest``) and refuses an expired URL even when its signature
holds. Real S3 does the same for its own URLs; moto does not, so these are the checks the
tests exercise.

Apart from reading and writing the key file this module does no I/O.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

#: The most a signed URL may say about its expiry or size (keeps parsing bounded).
_MAX_FIELD_CHARS = 20
KEY_BYTES = 32


class SignatureRefused(Exception):
    """A signed URL that does not hold; ``reason`` is ``expired`` or ``invalid``."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class SignedGrant:
    """What a URL that holds allows: this method on this path, up to ``size`` bytes."""

    method: str
    path: str
    expires: int
    size: int


def _message(method: str, path: str, expires: int, size: int) -> bytes:
    # Unit separators keep the fields apart: no path can pass for another method or size.
    return "\x1f".join((method.upper(), path, str(expires), str(size))).encode()


def signature(key: bytes, method: str, path: str, expires: int, size: int) -> str:
    """The hex HMAC-SHA256 of one grant."""
    return hmac.new(key, _message(method, path, expires, size), hashlib.sha256).hexdigest()


def signed_query(key: bytes, method: str, path: str, *, expires: int, size: int) -> str:
    """The query string that signs ``method path`` until ``expires`` for ``size`` bytes."""
    sig = signature(key, method, path, expires, size)
    return urlencode({"expires": expires, "size": size, "sig": sig})


def verify(
    key: bytes, method: str, path: str, query: Mapping[str, str], *, now: float
) -> SignedGrant:
    """The grant a request's URL carries, or :class:`SignatureRefused`."""
    raw_expires, raw_size, sig = query.get("expires", ""), query.get("size", ""), query.get("sig")
    if (
        sig is None
        or not raw_expires.isdecimal()
        or not raw_size.isdecimal()
        or len(raw_expires) > _MAX_FIELD_CHARS
        or len(raw_size) > _MAX_FIELD_CHARS
        or not raw_expires.isascii()
        or not raw_size.isascii()
    ):
        raise SignatureRefused("invalid", "the URL is not signed")
    expires, size = int(raw_expires), int(raw_size)
    expected = signature(key, method, path, expires, size)
    # Compare bytes of equal meaning in constant time: never short-circuit on a prefix.
    if not hmac.compare_digest(expected.encode(), sig.encode("utf-8", "replace")):
        raise SignatureRefused("invalid", "the URL's signature does not hold")
    if now > expires:
        raise SignatureRefused("expired", "the URL has expired; ask for a new one")
    return SignedGrant(method.upper(), path, expires, size)


def load_or_create_key(path: Path) -> bytes:
    """The URL-signing key in ``path`` (hex), made on first use; mode 0600."""
    with contextlib.suppress(FileNotFoundError):
        return _parse_key(path.read_text().strip(), path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".files-url-")
    try:
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_hex(KEY_BYTES) + "\n")
        os.chmod(temporary, 0o600)
        # link() fails if another process made the key first: both then read its key.
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
    finally:
        os.unlink(temporary)
    return _parse_key(path.read_text().strip(), path)


def parse_key(text: str) -> bytes:
    """A key given in settings: hex, at least 32 bytes."""
    return _parse_key(text, None)


def _parse_key(text: str, path: Path | None) -> bytes:
    where = f" in {path}" if path is not None else ""
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise ValueError(f"the file-URL key{where} is not hex") from None
    if len(key) < KEY_BYTES:
        raise ValueError(f"the file-URL key{where} must hold at least {KEY_BYTES} bytes")
    return key
