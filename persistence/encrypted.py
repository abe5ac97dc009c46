"""Encryption at rest for any board store: :class:`EncryptedStore` seals before the store.

Everything of a board that can hold what people typed is sealed with the key ring
(``persistence/keyring.py``) before it reaches the inner store, and opened on the way out:

    update bytes       context ["update", board]      (the seq is assigned by the store)
    domain events      context ["events", board]
    origin (a name)    context ["origin", board]      (as ``enc1:<base64>`` text)
    snapshots          context ["snapshot", board, seq], current and history alike

Board ids, seqs, times and idempotency keys stay as they are: the store orders, finds and
thins by them, and they are opaque ids, not content. A blob copied to another board or
field, or a snapshot put under another seq, fails with ``DecryptionFailed``.

Blobs without the envelope are plaintext written before encryption was on; they are read
as they are (``boardcast reencrypt`` seals them).

History thinning materialises past versions by merging stored updates, which only this
wrapper can read: so the inner store is opened keeping everything
(``KEEP_EVERYTHING``), and the wrapper thins by the real policy through a decrypting view
of the inner store's history (``persistence.store.thin_history``).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import cast

from crdt.errors import DecryptionFailed
from persistence.coverage import Coverage
from persistence.history import KEEP_EVERYTHING, HistoryPolicy, Thinning
from persistence.keyring import KeyRing, is_encrypted, is_encrypted_text
from persistence.read_model import TaskIndex
from persistence.store import (
    Batches,
    BoardStore,
    HistoryStorage,
    HistoryUnavailable,
    LogEntry,
    Record,
    StoredBoard,
    ThinningInputs,
    Version,
    as_record,
    thin_history,
)


def context(kind: str, board_id: str, detail: int | str | None = None) -> bytes:
    """The associated data a blob is bound to: what it is, of which board (seq, task)."""
    parts: list[str | int] = [kind, board_id] if detail is None else [kind, board_id, detail]
    return json.dumps(parts, ensure_ascii=True).encode("ascii")


class KeySource:
    """The key ring of a store, opened on first need so that opening a store creates nothing.

    Args:
        path: the key file; created (with a first key) by the first write.
        ring: a ring already opened (tests, tools); ``path`` is then ignored.
    """

    def __init__(
        self,
        path: str | None = None,
        *,
        ring: KeyRing | None = None,
        refresh_seconds: float = 5.0,
        refuse_plaintext: bool = False,
    ) -> None:
        if path is None and ring is None:
            raise ValueError("a key source needs a key file or a ring")
        self.path = path if ring is None else ring.path
        self._ring = ring
        self._refresh_seconds = refresh_seconds
        self.refuse_plaintext = refuse_plaintext

    def _plaintext(self) -> None:
        if self.refuse_plaintext:
            raise DecryptionFailed(
                "a record without encryption, refused (BOARDCAST_ENCRYPTION=strict):"
                " its envelope was damaged, or it was written in plaintext"
            )

    def for_writing(self) -> KeyRing:
        """The ring, made if there is no key file yet."""
        if self._ring is None:
            assert self.path is not None
            self._ring = KeyRing.open(self.path, refresh_seconds=self._refresh_seconds)
        return self._ring

    def for_reading(self) -> KeyRing:
        """The ring; DecryptionFailed if there is no key file (encrypted data needs one)."""
        if self._ring is None:
            assert self.path is not None
            try:
                self._ring = KeyRing.open(
                    self.path, create=False, refresh_seconds=self._refresh_seconds
                )
            except FileNotFoundError:
                raise DecryptionFailed(
                    f"encrypted data but no key file at {self.path} (BOARDCAST_ENCRYPTION_KEY_FILE)"
                ) from None
            except ValueError as exc:
                raise DecryptionFailed(str(exc)) from None
        return self._ring

    def exists(self) -> bool:
        """Whether there is a ring to read (an opened one, or a key file)."""
        return self._ring is not None or (self.path is not None and os.path.exists(self.path))

    # -- sealing helpers used by the store, the read model and reencrypt -------------

    def seal(self, data: bytes, ctx: bytes) -> bytes:
        """``data`` sealed under the active key."""
        return self.for_writing().encrypt(data, context=ctx)

    def open_blob(self, blob: bytes, ctx: bytes) -> bytes:
        """The plaintext of a stored blob; plaintext from before encryption passes (not strict)."""
        if not is_encrypted(blob):
            self._plaintext()
            return bytes(blob)
        return self.for_reading().decrypt(blob, context=ctx)

    def seal_text(self, text: str, ctx: bytes) -> str:
        """``text`` sealed as ``enc1:<base64>``."""
        return self.for_writing().encrypt_text(text, context=ctx)

    def open_text(self, text: str, ctx: bytes) -> str:
        """The plaintext of a stored text field; plaintext from before passes (not strict)."""
        if not is_encrypted_text(text):
            self._plaintext()
            return text
        return self.for_reading().decrypt_text(text, context=ctx)


class EncryptedStore(BoardStore):
    """A board store whose contents are sealed at rest (see the module docstring).

    Args:
        inner: the store that holds the sealed bytes. Open it with ``KEEP_EVERYTHING``
            when ``history`` is given: its own thinning cannot read sealed updates.
        keys: where the key ring comes from.
        encrypt: seal what is written; False only reads what was sealed before
            (``BOARDCAST_ENCRYPTION=off`` over a store that was encrypted).
        history: the retention policy this wrapper thins by; None leaves thinning to
            the inner store (which then must not be asked to materialise versions).
        clock: the time thinning measures ages from (the inner store's clock).
    """

    def __init__(
        self,
        inner: BoardStore,
        keys: KeySource,
        *,
        encrypt: bool = True,
        history: HistoryPolicy | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.inner = inner
        self.keys = keys
        self.encrypt = encrypt
        self._history = history
        self._clock = clock

    # -- sealing -------------------------------------------------------------------

    def _seal(self, data: bytes, ctx: bytes) -> bytes:
        return self.keys.seal(data, ctx) if self.encrypt else bytes(data)

    def _seal_record(self, board_id: str, item: bytes | Record) -> Record:
        record = as_record(item)
        origin = record.origin
        if origin is not None and self.encrypt:
            origin = self.keys.seal_text(origin, context("origin", board_id))
        events = record.events
        if events:
            events = self._seal(events, context("events", board_id))
        return Record(
            self._seal(record.update, context("update", board_id)), origin, record.key, events
        )

    def _open_entry(self, board_id: str, entry: LogEntry) -> LogEntry:
        origin = entry.origin
        if origin is not None:
            origin = self.keys.open_text(origin, context("origin", board_id))
        events = entry.events
        if events:
            events = self.keys.open_blob(events, context("events", board_id))
        return LogEntry(
            entry.seq,
            self.keys.open_blob(entry.update, context("update", board_id)),
            entry.at,
            origin,
            entry.key,
            events,
        )

    def _open_board(self, stored: StoredBoard) -> StoredBoard:
        board_id = stored.board_id
        snapshot = stored.snapshot
        if snapshot is not None:
            snapshot = self.keys.open_blob(
                snapshot, context("snapshot", board_id, stored.snapshot_seq)
            )
        updates = [self._open_entry(board_id, entry) for entry in stored.updates]
        # The state vector stays as it is, like seqs and sizes: client ids and counts.
        return StoredBoard(board_id, snapshot, stored.snapshot_seq, updates, stored.snapshot_vector)

    # -- the store interface -------------------------------------------------------

    async def load(self, board_id: str) -> StoredBoard:
        """See :meth:`BoardStore.load`; raises DecryptionFailed for a blob that won't open."""
        return self._open_board(await self.inner.load(board_id))

    async def append(self, batches: Batches) -> dict[str, int]:
        """See :meth:`BoardStore.append`."""
        sealed = {
            board_id: [self._seal_record(board_id, item) for item in items]
            for board_id, items in batches.items()
        }
        return await self.inner.append(sealed)

    async def find_key(self, board_id: str, key: str) -> int | None:
        """See :meth:`BoardStore.find_key` (keys are stored as they are)."""
        return await self.inner.find_key(board_id, key)

    async def write_snapshot(
        self, board_id: str, state: bytes, upto_seq: int, *, covers: Coverage | None = None
    ) -> bool:
        """See :meth:`BoardStore.write_snapshot`; then thins the history by the policy.

        The inner store checks ``covers`` against the entries it holds, opened here first.
        """
        now = self._clock()
        sealed = self._seal(state, context("snapshot", board_id, upto_seq))
        if covers is not None:
            update_context = context("update", board_id)
            covers = covers.opened_with(
                lambda _seq, stored: self.keys.open_blob(stored, update_context)
            )
        if not await self.inner.write_snapshot(board_id, sealed, upto_seq, covers=covers):
            return False
        storage = self._history_storage()
        if storage is not None and self._history is not None:
            await thin_history(storage, board_id, self._history, now)
        return True

    def _history_storage(self) -> HistoryStorage | None:
        needed = ("thinning_inputs", "materialise_inputs", "add_history_snapshot", "drop_history")
        if not all(hasattr(self.inner, name) for name in needed):
            return None
        return _OpenedHistory(self, cast(HistoryStorage, self.inner))

    async def versions(self, board_id: str) -> list[Version]:
        """See :meth:`BoardStore.versions`."""
        return await self.inner.versions(board_id)

    async def load_at(self, board_id: str, at: float) -> StoredBoard:
        """See :meth:`BoardStore.load_at`."""
        try:
            past = await self.inner.load_at(board_id, at)
        except HistoryUnavailable as exc:
            if self._history is None:
                raise
            # The inner store words its refusal by the policy it was opened with.
            message = str(exc).replace(KEEP_EVERYTHING.describe(), self._history.describe())
            raise HistoryUnavailable(message) from None
        return self._open_board(past)

    async def list_boards(self) -> list[str]:
        """See :meth:`BoardStore.list_boards`."""
        return await self.inner.list_boards()

    async def delete_board(self, board_id: str) -> None:
        """See :meth:`BoardStore.delete_board`."""
        await self.inner.delete_board(board_id)

    def task_index(self) -> TaskIndex:
        """The inner store's read model, its text fields sealed (``encrypted_read_model``)."""
        from persistence.encrypted_read_model import EncryptedTaskIndex

        return EncryptedTaskIndex(self.inner.task_index(), self.keys, encrypt=self.encrypt)

    @property
    def location(self) -> str:
        """See :attr:`BoardStore.location`."""
        return self.inner.location

    async def exists(self) -> bool:
        """See :meth:`BoardStore.exists`."""
        return await self.inner.exists()

    async def close(self) -> None:
        """See :meth:`BoardStore.close`."""
        await self.inner.close()


class _OpenedHistory:
    """The inner store's history as thinning needs it: read opened, written sealed."""

    def __init__(self, store: EncryptedStore, inner: HistoryStorage) -> None:
        self._store = store
        self._inner = inner

    async def thinning_inputs(self, board_id: str, since: float, limit: int) -> ThinningInputs:
        return await self._inner.thinning_inputs(board_id, since, limit)

    async def materialise_inputs(
        self, board_id: str, seq: int
    ) -> tuple[bytes | None, list[bytes]] | None:
        parts = await self._inner.materialise_inputs(board_id, seq)
        if parts is None:
            return None
        snapshot, updates = parts
        keys = self._store.keys
        # The updates are exactly the seqs after the snapshot's, up to ``seq``.
        snapshot_seq = seq - len(updates)
        opened = (
            keys.open_blob(snapshot, context("snapshot", board_id, snapshot_seq))
            if snapshot is not None
            else None
        )
        return opened, [keys.open_blob(update, context("update", board_id)) for update in updates]

    async def add_history_snapshot(self, board_id: str, seq: int, at: float, state: bytes) -> None:
        sealed = self._store._seal(state, context("snapshot", board_id, seq))
        await self._inner.add_history_snapshot(board_id, seq, at, sealed)

    async def drop_history(self, board_id: str, thinning: Thinning) -> None:
        await self._inner.drop_history(board_id, thinning)
