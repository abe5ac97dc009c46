"""The key ring that encrypts Boardcast's stored data at rest (AES-256-GCM, keys with ids).

A blob this ring writes describes itself::

    b"\\xb0\\xca\\x57"   magic: no Yjs update, msgpack event list or UTF-8 text starts so
    b"\\x01"           envelope version
    4 bytes           key id (the ring's key that sealed it)
    12 bytes          a random nonce, new for every blob
    ciphertext + 16-byte GCM tag

The header and the caller's ``context`` (which board, which field) are the associated data:
a blob copied to another board or another field, or under a header edited to name another
key, fails to decrypt like a tampered one. Every failure raises
:class:`crdt.errors.DecryptionFailed`; no partial plaintext ever comes out.

The ring lives in one JSON file, mode 0600, replaced atomically on every change::

    {"format": "boardcast-keyring", "version": 1, "active": "1f2e3d4c",
     "keys": [{"id": "1f2e3d4c", "created_at": "2026-12-02T01:50:00Z", "key": "<base64>"}]}

Why a key file beside the data still helps: the store's files (and their backups, copies
sent to someone for debugging, a MongoDB server's disks and its dumps) no longer hold any
task text, and whoever holds only those holds nothing readable. By default the file sits
in ``<data_dir>/keys/at-rest.json``, so a copy of the whole data directory carries its key
with it; for real separation operators point ``BOARDCAST_ENCRYPTION_KEY_FILE`` at a file
mounted from a secret store, backed up apart from the data. Every process of one
deployment (gateways, hosts, every node sharing a MongoDB store) must read the same file.

Apart from reading and writing that file this module does no I/O.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime
import fcntl
import json
import os
import secrets
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from crdt.errors import DecryptionFailed

MAGIC = b"\xb0\xca\x57"
ENVELOPE_VERSION = 1
KEY_ID_BYTES = 4
NONCE_BYTES = 12
TAG_BYTES = 16
HEADER_BYTES = len(MAGIC) + 1 + KEY_ID_BYTES
#: The smallest blob this ring can have written (the sealed plaintext was empty).
MIN_BLOB_BYTES = HEADER_BYTES + NONCE_BYTES + TAG_BYTES

#: The prefix of an encrypted text field (a read-model title, a stored origin).
TEXT_PREFIX = "enc1:"

FILE_FORMAT = "boardcast-keyring"
FILE_VERSION = 1

#: The setting that turns encryption at rest on (the default) or off.
ENCRYPTION_SETTING = "BOARDCAST_ENCRYPTION"
#: The setting that says where the key file is.
KEY_FILE_SETTING = "BOARDCAST_ENCRYPTION_KEY_FILE"
#: Where the key file is by default, under the data directory.
DEFAULT_KEY_FILE = os.path.join("keys", "at-rest.json")

_ON = {"on", "true", "1", "yes"}
_OFF = {"off", "false", "0", "no"}


@dataclass(frozen=True, slots=True)
class EncryptionSettings:
    """Whether stored data is encrypted, and with which key file.

    Attributes:
        enabled: encrypt what is written (old plaintext is still read either way).
        key_file: the key ring's file; None for ``<data_dir>/keys/at-rest.json``.
        refresh_seconds: how often a running process looks for a rotated key file.
        refuse_plaintext: read no record without the envelope (``BOARDCAST_ENCRYPTION=
            strict``), for a store with nothing left from before encryption: then a record
            whose envelope was damaged, or that was replaced by plaintext, fails too.
    """

    enabled: bool = True
    key_file: str | None = None
    refresh_seconds: float = 5.0
    refuse_plaintext: bool = False

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> EncryptionSettings:
        """Read ``BOARDCAST_ENCRYPTION`` (on/off/strict, default on) and the key file."""
        env = os.environ if environ is None else environ
        raw = env.get(ENCRYPTION_SETTING, "on").strip().lower()
        if raw not in _ON | _OFF | {"strict"}:
            raise ValueError(f"{ENCRYPTION_SETTING}={raw!r}: expected 'on', 'off' or 'strict'")
        key_file = env.get(KEY_FILE_SETTING, "").strip() or None
        return cls(enabled=raw not in _OFF, key_file=key_file, refuse_plaintext=raw == "strict")

    def key_path(self, data_dir: str) -> str:
        """The key file these settings name, for a store under ``data_dir``."""
        if self.key_file:
            return os.path.abspath(os.path.join(data_dir, self.key_file))
        return os.path.abspath(os.path.join(data_dir, DEFAULT_KEY_FILE))


#: Store plaintext, as before encryption at rest existed.
PLAINTEXT = EncryptionSettings(enabled=False)


@dataclass(frozen=True, slots=True)
class StoredKey:
    """One key of the ring."""

    key_id: str  # 8 hex digits
    created_at: str  # ISO 8601 UTC
    secret: bytes  # 32 bytes


def is_encrypted(blob: bytes | bytearray | memoryview) -> bool:
    """Whether ``blob`` carries this ring's envelope (else it is plaintext from before)."""
    return bytes(blob[: len(MAGIC)]) == MAGIC


def key_id_of(blob: bytes | bytearray | memoryview) -> str | None:
    """The id of the key that sealed ``blob``; None for plaintext or a blob too short."""
    if not is_encrypted(blob) or len(blob) < HEADER_BYTES:
        return None
    return bytes(blob[len(MAGIC) + 1 : HEADER_BYTES]).hex()


def is_encrypted_text(text: str) -> bool:
    """Whether a text field holds an encrypted value (see :meth:`KeyRing.encrypt_text`)."""
    return text.startswith(TEXT_PREFIX)


def text_key_id(text: str) -> str | None:
    """The key id of an encrypted text field; None for plaintext (or a damaged prefix)."""
    if not is_encrypted_text(text):
        return None
    try:
        return key_id_of(base64.b64decode(text[len(TEXT_PREFIX) :][:16], validate=True))
    except (binascii.Error, ValueError):
        return None


class KeyRing:
    """AES-256-GCM keys with ids: one active key seals, every key opens.

    Use :meth:`open`; a ring built directly from keys (tests) has no file behind it.
    """

    def __init__(
        self,
        keys: list[StoredKey],
        active: str,
        *,
        path: str | None = None,
        refresh_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self._refresh_seconds = refresh_seconds
        self._clock = clock
        self._stamp: tuple[int, int, int] | None = None
        self._checked = clock()
        self._install(keys, active)

    def _install(self, keys: list[StoredKey], active: str) -> None:
        if not keys:
            raise ValueError("a key ring needs at least one key")
        by_id = {key.key_id: key for key in keys}
        if active not in by_id:
            raise ValueError(f"the active key {active!r} is not in the ring")
        self._keys = by_id
        self._ciphers = {key.key_id: AESGCM(key.secret) for key in keys}
        self._active = active

    # -- opening, rotating ---------------------------------------------------------

    @classmethod
    def open(cls, path: str, *, create: bool = True, refresh_seconds: float = 5.0) -> KeyRing:
        """Read the ring in ``path``; if there is none and ``create``, make one with one key.

        Two processes creating it at once agree on one ring (the file is created with a
        hard link, which fails if the other got there first). Raises FileNotFoundError if
        the file is missing and ``create`` is false, ValueError if it is not a key ring.
        """
        path = os.path.abspath(path)
        if create and not os.path.exists(path):
            _create_exclusively(path, _serialise([_new_key()], None))
        with open(path, "rb") as file:
            stamp = _stamp(os.fstat(file.fileno()))
            keys, active = _parse(file.read(), path)
        ring = cls(keys, active, path=path, refresh_seconds=refresh_seconds)
        ring._stamp = stamp
        return ring

    def _load_file(self) -> None:
        assert self.path is not None
        with open(self.path, "rb") as file:
            stamp = _stamp(os.fstat(file.fileno()))
            keys, active = _parse(file.read(), self.path)
        self._install(keys, active)
        self._stamp = stamp
        self._checked = self._clock()

    def refresh(self) -> bool:
        """Read the key file again if it changed (another process rotated); True if so."""
        self._checked = self._clock()
        if self.path is None:
            return False
        try:
            stamp = _stamp(os.stat(self.path))
        except OSError:
            return False  # keep serving with the keys already read
        if stamp == self._stamp:
            return False
        self._load_file()
        return True

    def rotate(self) -> str:
        """Add a new key and make it the active one; return its id. Old keys stay for reading."""
        key = _new_key()
        with self._file_lock():
            if self.path is not None:
                self._load_file()
            keys = [*self._keys.values(), key]
            self._write(keys, key.key_id)
        return key.key_id

    def remove(self, key_id: str) -> None:
        """Drop a key nothing is sealed with any more (after ``boardcast reencrypt``).

        Raises ValueError for the active key or an id not in the ring.
        """
        with self._file_lock():
            if self.path is not None:
                self._load_file()
            if key_id == self._active:
                raise ValueError(f"key {key_id} is the active key; rotate first")
            if key_id not in self._keys:
                raise ValueError(f"key {key_id} is not in the ring")
            keys = [key for key in self._keys.values() if key.key_id != key_id]
            self._write(keys, self._active)

    def _write(self, keys: list[StoredKey], active: str) -> None:
        if self.path is not None:
            _replace_atomically(self.path, _serialise(keys, active))
            self._install(keys, active)
            self._stamp = _stamp(os.stat(self.path))
        else:
            self._install(keys, active)

    @contextlib.contextmanager
    def _file_lock(self) -> Iterator[None]:
        if self.path is None:
            yield
            return
        with open(self.path + ".lock", "a+b") as lock:
            os.chmod(lock.name, 0o600)
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    # -- what the ring holds -------------------------------------------------------

    @property
    def active_key_id(self) -> str:
        """The id of the key new blobs are sealed with."""
        if self._clock() - self._checked >= self._refresh_seconds:
            self.refresh()
        return self._active

    @property
    def key_ids(self) -> list[str]:
        """Every key id in the ring, oldest first."""
        return sorted(self._keys, key=lambda key_id: self._keys[key_id].created_at)

    def created_at(self, key_id: str) -> str:
        """When the key was made (ISO 8601 UTC)."""
        return self._keys[key_id].created_at

    # -- sealing and opening -------------------------------------------------------

    def encrypt(self, plaintext: bytes, *, context: bytes) -> bytes:
        """Seal ``plaintext`` under the active key, bound to ``context``."""
        key_id = self.active_key_id
        header = MAGIC + bytes([ENVELOPE_VERSION]) + bytes.fromhex(key_id)
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = self._ciphers[key_id].encrypt(nonce, bytes(plaintext), header + context)
        return header + nonce + sealed

    def decrypt(self, blob: bytes, *, context: bytes) -> bytes:
        """Open a blob :meth:`encrypt` sealed with the same ``context``.

        Raises DecryptionFailed if it is not an envelope of this ring, names a key the
        ring does not hold (after reading the key file again), or was changed.
        """
        data = bytes(blob)
        if len(data) < MIN_BLOB_BYTES or not is_encrypted(data):
            raise DecryptionFailed("not an encrypted blob (too short or no envelope)")
        if data[len(MAGIC)] != ENVELOPE_VERSION:
            raise DecryptionFailed(f"unknown envelope version {data[len(MAGIC)]}")
        key_id = data[len(MAGIC) + 1 : HEADER_BYTES].hex()
        cipher = self._ciphers.get(key_id)
        if cipher is None and self.refresh():
            cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise DecryptionFailed(f"blob sealed with key {key_id}, which the ring does not hold")
        nonce = data[HEADER_BYTES : HEADER_BYTES + NONCE_BYTES]
        try:
            return cipher.decrypt(
                nonce, data[HEADER_BYTES + NONCE_BYTES :], data[:HEADER_BYTES] + context
            )
        except InvalidTag:
            raise DecryptionFailed(
                f"blob under key {key_id} does not authenticate: changed, or another context"
            ) from None

    def is_encrypted(self, blob: bytes | bytearray | memoryview) -> bool:
        """Whether ``blob`` is an envelope (else plaintext written before encryption was on)."""
        return is_encrypted(blob)

    def encrypt_text(self, text: str, *, context: bytes) -> str:
        """A text field sealed like :meth:`encrypt`, as ``enc1:<base64>`` (stays a string)."""
        sealed = self.encrypt(text.encode("utf-8"), context=context)
        return TEXT_PREFIX + base64.b64encode(sealed).decode("ascii")

    def decrypt_text(self, text: str, *, context: bytes) -> str:
        """Open a field :meth:`encrypt_text` sealed; plaintext from before passes unchanged."""
        if not is_encrypted_text(text):
            return text
        try:
            blob = base64.b64decode(text[len(TEXT_PREFIX) :], validate=True)
        except (binascii.Error, ValueError):
            raise DecryptionFailed("an encrypted text field is not base64") from None
        plain = self.decrypt(blob, context=context)
        try:
            return plain.decode("utf-8")
        except UnicodeDecodeError:  # only a forged blob under our own key gets here
            raise DecryptionFailed("an encrypted text field holds no UTF-8") from None

    def text_key_id(self, text: str) -> str | None:
        """The key id of an encrypted text field; None for plaintext."""
        return text_key_id(text)


# -- the key file ---------------------------------------------------------------------


def _new_key() -> StoredKey:
    now = datetime.datetime.now(datetime.UTC)
    return StoredKey(
        key_id=secrets.token_hex(KEY_ID_BYTES),
        created_at=now.isoformat(timespec="microseconds").replace("+00:00", "Z"),
        secret=AESGCM.generate_key(bit_length=256),
    )


def _serialise(keys: list[StoredKey], active: str | None) -> bytes:
    document = {
        "format": FILE_FORMAT,
        "version": FILE_VERSION,
        "active": active if active is not None else keys[-1].key_id,
        "keys": [
            {
                "id": key.key_id,
                "created_at": key.created_at,
                "key": base64.b64encode(key.secret).decode("ascii"),
            }
            for key in keys
        ],
    }
    return (json.dumps(document, indent=2) + "\n").encode("utf-8")


def _parse(data: bytes, path: str) -> tuple[list[StoredKey], str]:
    try:
        document = json.loads(data)
        if document.get("format") != FILE_FORMAT or document.get("version") != FILE_VERSION:
            raise ValueError("not a Boardcast key ring (format/version)")
        keys = []
        for entry in document["keys"]:
            secret = base64.b64decode(entry["key"], validate=True)
            key_id = str(entry["id"])
            if len(secret) != 32 or len(bytes.fromhex(key_id)) != KEY_ID_BYTES:
                raise ValueError(f"key {key_id!r}: expected a 32-byte key and 8 hex digits")
            keys.append(StoredKey(key_id, str(entry["created_at"]), secret))
        active = str(document["active"])
    except (KeyError, TypeError, AttributeError, ValueError, binascii.Error) as exc:
        raise ValueError(f"{path}: not a usable key ring: {exc}") from exc
    if active not in {key.key_id for key in keys}:
        raise ValueError(f"{path}: the active key {active!r} is not in the ring")
    return keys, active


def _stamp(status: os.stat_result) -> tuple[int, int, int]:
    return (status.st_ino, status.st_mtime_ns, status.st_size)


def _temporary_beside(path: str, data: bytes) -> str:
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=".at-rest-", dir=directory)
    try:
        os.fchmod(descriptor, 0o600)
        os.write(descriptor, data)
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    return temporary


def _sync_directory(path: str) -> None:
    descriptor = os.open(os.path.dirname(path), os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _create_exclusively(path: str, data: bytes) -> None:
    """Write a new file at ``path`` whole, or leave the one another process made first."""
    temporary = _temporary_beside(path, data)
    try:
        os.link(temporary, path)
    except FileExistsError:
        pass
    finally:
        os.unlink(temporary)
    _sync_directory(path)


def _replace_atomically(path: str, data: bytes) -> None:
    temporary = _temporary_beside(path, data)
    try:
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
    _sync_directory(path)
