"""``boardcast backup DEST`` and ``boardcast restore SRC``: a whole deployment in one archive.

What a deployment holds, and how each part is copied while it runs:

* the board store: SQLite through SQLite's online backup API (one consistent copy of a
  live WAL database, never a file copy), or every collection of the MongoDB database
  through the driver, the log (``updates``) before the snapshots and the chunks last, so
  an update compacted away meanwhile is in the copied snapshot if not in the copied log;
* the task read model (SQLite beside the store; MongoDB's is a collection like the others);
* the accounts (users, logins, API tokens, signing keys, audit): ``accounts.sqlite3`` by
  the same API, or the ``accounts_*`` collections;
* beside the store, the event log and what the workers keep from it: analytics, webhook
  endpoints and deliveries, notifications, e-mail jobs and preferences, the attachment index
  (SQLite files beside the board store, or their collections in MongoDB);
* the at-rest key ring, copied last, so that every key that sealed anything copied is in
  it. ``--no-keys`` leaves it out: the archive is then no secret beyond what the store's
  own files are, and restoring needs the key file put in place first.

The order makes a copy taken while servers write restore into a consistent deployment.
The workers' stores go first, then the event log, then the board store: a board restored
ahead of the log has its unlogged tail logged again when it loads (docs/events.md), while
a log ahead of its boards would hold event ids that the boards' next updates reuse, and
those updates' events would be dropped as duplicates. Each consumer's committed offset in
the copied log is set back to what it was before the workers' stores were copied, so a
worker whose copied store is behind its offset handles those events again (every worker is
idempotent) instead of never.

The archive is a gzip tar file, mode 0600, whose first member is the manifest of
:mod:`boardcast.backup_manifest`. Restoring checks the manifest, then every member's
name, type, size and SHA-256 while streaming it into a staging directory inside the
target, and only then moves the files into place (or inserts the collections): a bad
archive writes nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import os
import shutil
import sqlite3
import tarfile
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from auth.accounts import ACCOUNTS_FILENAME
from boardcast.backup_manifest import (
    DEFAULT_MAX_ENTRY_BYTES,
    DEFAULT_MAX_TOTAL_BYTES,
    MANIFEST_NAME,
    MAX_MANIFEST_BYTES,
    Entry,
    Manifest,
    NotABackup,
    collection_name_allowed,
    parse_manifest,
)
from persistence.event_log_sqlite import EVENT_LOG_FILENAME
from persistence.factory import SQLITE_FILENAME, key_file_of
from persistence.keyring import EncryptionSettings, KeyRing
from persistence.sqlite import READ_MODEL_FILENAME

#: The largest BSON document a restore reads (MongoDB's limit plus room for the header).
MAX_DOCUMENT_BYTES = 16 * 1024 * 1024 + 16 * 1024
_COPY_CHUNK = 1024 * 1024
_INSERT_BATCH = 500
# The workers' collections first (everything not named here), then the event log, then the
# board store: its log before its snapshots, its chunks after everything that names them.
_LOG_COLLECTIONS = ("events", "event_consumers")
_BOARD_COLLECTIONS = ("updates", "snapshots", "update_history", "snapshot_history", "chunks")
#: SQLite files beside the board store that workers keep, copied before the event log.
WORKER_FILES: dict[str, str] = {
    "analytics": "analytics.sqlite3",
    "webhooks": "webhooks.sqlite3",
    "notifications": "notifications.sqlite3",
    "mail": "mail.sqlite3",
}


class BackupError(Exception):
    """A backup or restore that cannot be done as asked (the message says why)."""


@dataclass(frozen=True)
class Layout:
    """Where a deployment's parts live, from its store URL, data directory and key settings."""

    store: str  # "sqlite" or "mongodb"
    data_dir: Path
    mongo_url: str | None = None
    files: dict[str, Path] = field(default_factory=dict)  # kind -> file (SQLite, key rings)

    @classmethod
    def of(
        cls, store_url: str, data_dir: str, encryption: EncryptionSettings | None = None
    ) -> Layout:
        """The layout ``boardcast serve`` would use with these settings."""
        settings = encryption if encryption is not None else EncryptionSettings.from_environment()
        url = store_url.strip()
        root = Path(data_dir).absolute()
        store_key = Path(key_file_of(url, data_dir, settings))
        accounts_key = Path(settings.key_path(data_dir))
        files: dict[str, Path] = {"key-ring": store_key}
        if accounts_key != store_key:
            files["accounts-key-ring"] = accounts_key
        if url.startswith(("mongodb://", "mongodb+srv://")):
            return cls("mongodb", root, url, files)
        if url == "sqlite":
            board_file = root / SQLITE_FILENAME
        elif url.startswith("sqlite://") and url.removeprefix("sqlite://"):
            board_file = (root / url.removeprefix("sqlite://")).absolute()
        else:
            raise BackupError(f"store {url!r}: only sqlite and mongodb stores keep data to back up")
        files["board-store"] = board_file
        files["read-model"] = board_file.parent / READ_MODEL_FILENAME
        files["accounts"] = root / ACCOUNTS_FILENAME
        for kind, name in WORKER_FILES.items():
            files[kind] = board_file.parent / name
        files["attachments"] = root / "attachments.sqlite3"
        files["event-log"] = board_file.parent / EVENT_LOG_FILENAME
        return cls("sqlite", root, None, files)


# -- backing up --------------------------------------------------------------------------


def backup(layout: Layout, destination: str | os.PathLike[str], *, keys: bool = True) -> Manifest:
    """Write an archive of the deployment ``layout`` describes; return its manifest.

    Safe while servers run on it. Raises BackupError if there is nothing to back up.
    """
    target = Path(destination)
    staging = Path(tempfile.mkdtemp(prefix=".backup-", dir=target.absolute().parent))
    try:
        entries: list[tuple[Entry, Path]] = []
        if layout.store == "sqlite":
            if not layout.files["board-store"].exists():
                raise BackupError(f"no board store at {layout.files['board-store']}")
            offsets = _sqlite_consumer_offsets(layout.files["event-log"])
            for kind in SQLITE_ORDER:
                source = layout.files[kind]
                if source.exists():
                    copy = staging / f"{kind}.sqlite3"
                    _sqlite_online_copy(source, copy)
                    if kind == "event-log":
                        _clamp_sqlite_consumers(copy, offsets)
                    entries.append((_entry_of(copy, kind), copy))
        else:
            assert layout.mongo_url is not None
            entries += _dump_mongo(layout.mongo_url, staging)
        # Last: every key that sealed a record copied above is in the ring by now.
        key_ids: list[str] = []
        for kind in ("key-ring", "accounts-key-ring"):
            ring_file = layout.files.get(kind)
            if ring_file is None or not ring_file.exists():
                continue
            copy = staging / f"{kind}.json"
            shutil.copyfile(ring_file, copy)
            ring = KeyRing.open(str(copy), create=False)
            key_ids += [each for each in ring.key_ids if each not in key_ids]
            if keys:
                entries.append((_entry_of(copy, kind), copy))
        manifest = Manifest(time.time(), layout.store, tuple(key_ids), tuple(e for e, _ in entries))
        _write_archive(target, manifest, entries)
        return manifest
    finally:
        shutil.rmtree(staging, ignore_errors=True)


#: SQLite files in the order they are copied (see the module's docstring).
SQLITE_ORDER = (*WORKER_FILES, "attachments", "event-log", "board-store", "read-model", "accounts")


def _sqlite_consumer_offsets(log_file: Path) -> dict[str, int]:
    """Each consumer's committed offset in the live log now (none if there is no log)."""
    if not log_file.exists():
        return {}
    uri = f"file:{log_file}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=30)) as db:
        try:
            rows = db.execute("SELECT name, offset FROM consumers").fetchall()
        except sqlite3.OperationalError:  # a log that never had a consumer
            return {}
    return {str(name): int(offset) for name, offset in rows}


def clamp_offsets(copied: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    """The offsets a restored log keeps: each consumer's as it was before the workers' stores
    were copied, where the copy holds a later one; a consumer that appeared since starts over."""
    return {name: min(offset, before.get(name, 0)) for name, offset in copied.items()}


def _clamp_sqlite_consumers(copy: Path, before: dict[str, int]) -> None:
    with contextlib.closing(sqlite3.connect(copy)) as db:
        try:
            rows = db.execute("SELECT name, offset FROM consumers").fetchall()
        except sqlite3.OperationalError:
            return
        clamped = clamp_offsets({str(n): int(o) for n, o in rows}, before)
        with db:
            db.executemany(
                "UPDATE consumers SET offset = ? WHERE name = ?",
                [(offset, name) for name, offset in clamped.items()],
            )


def _sqlite_online_copy(source: Path, copy: Path) -> None:
    # A read transaction on the live file; writers go on meanwhile (WAL).
    with (
        contextlib.closing(sqlite3.connect(source, timeout=30)) as db,
        contextlib.closing(sqlite3.connect(copy)) as out,
    ):
        db.backup(out)
        # A self-contained file: no -wal beside it is needed to read it.
        out.execute("PRAGMA journal_mode = DELETE")
    os.chmod(copy, 0o600)


def _dump_mongo(url: str, staging: Path) -> list[tuple[Entry, Path]]:
    import bson
    from pymongo import MongoClient

    client: MongoClient[dict[str, Any]] = MongoClient(url, serverSelectionTimeoutMS=5000)
    try:
        database = client.get_default_database("boardcast")
        names = [n for n in database.list_collection_names() if collection_name_allowed(n)]
        if not names:
            raise BackupError(f"no collections in MongoDB database {database.name!r}")
        before = {
            str(doc["_id"]): int(doc.get("offset", 0)) for doc in database["event_consumers"].find()
        }
        named = {*_LOG_COLLECTIONS, *_BOARD_COLLECTIONS}
        workers = sorted(set(names) - named)
        ordered = [n for n in (*_LOG_COLLECTIONS, *_BOARD_COLLECTIONS) if n in names]
        out: list[tuple[Entry, Path]] = []
        for number, name in enumerate([*workers, *ordered]):
            copy = staging / f"mongo-{number:03d}.bson"
            with open(copy, "wb") as file:
                for document in database[name].find({}, batch_size=_INSERT_BATCH):
                    if name == "event_consumers":
                        offset = int(document.get("offset", 0))
                        document["offset"] = min(offset, before.get(str(document["_id"]), 0))
                    file.write(bson.encode(document))
            entry = _entry_of(copy, "mongo-collection")
            out.append((Entry(entry.name, entry.kind, entry.size, entry.sha256, name), copy))
        return out
    finally:
        client.close()


def _entry_of(path: Path, kind: str) -> Entry:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(_COPY_CHUNK):
            digest.update(chunk)
    return Entry(path.name, kind, path.stat().st_size, digest.hexdigest())


def _write_archive(target: Path, manifest: Manifest, entries: list[tuple[Entry, Path]]) -> None:
    temporary = target.with_name(target.name + ".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as raw:
        with tarfile.open(fileobj=raw, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
            _add(tar, MANIFEST_NAME, io.BytesIO(manifest.encode()), len(manifest.encode()))
            for entry, path in entries:
                with open(path, "rb") as file:
                    _add(tar, entry.name, file, entry.size)
        raw.flush()
        os.fsync(raw.fileno())
    os.replace(temporary, target)


def _add(tar: tarfile.TarFile, name: str, file: IO[bytes], size: int) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o600, int(time.time())
    tar.addfile(info, file)


# -- restoring ---------------------------------------------------------------------------


@dataclass
class Limits:
    """What a restore reads at most (a hostile archive is refused at the first excess)."""

    max_entry_bytes: int = DEFAULT_MAX_ENTRY_BYTES
    max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES


def read_manifest(source: str | os.PathLike[str], limits: Limits | None = None) -> Manifest:
    """The checked manifest of an archive, without reading the rest."""
    with _open_archive(Path(source)) as tar:
        return _manifest_of(tar, limits or Limits())


def restore(
    source: str | os.PathLike[str],
    layout: Layout,
    *,
    force: bool = False,
    limits: Limits | None = None,
) -> Manifest:
    """Restore an archive into the (empty, unless ``force``) deployment ``layout`` names.

    Raises:
        NotABackup: the archive is corrupt, hostile or of another version; nothing written.
        BackupError: the target is not empty, or the keys the data needs are not there.
    """
    limits = limits or Limits()
    manifest = read_manifest(source, limits)
    if manifest.store != layout.store:
        raise BackupError(f"a {manifest.store} backup cannot go into a {layout.store} store")
    _check_target(manifest, layout, force=force)
    layout.data_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".restore-", dir=layout.data_dir))
    try:
        with _open_archive(Path(source)) as tar:
            _manifest_of(tar, limits)
            staged = _stage_members(tar, manifest, staging)
        _check_staged(manifest, staged)
        if layout.store == "mongodb":
            assert layout.mongo_url is not None
            _load_mongo(layout.mongo_url, manifest, staged, force=force)
        for entry in manifest.entries:
            if entry.kind != "mongo-collection":
                _move_into_place(staged[entry.name], _target_of(layout, entry.kind))
        return manifest
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _target_of(layout: Layout, kind: str) -> Path:
    if kind == "accounts-key-ring" and kind not in layout.files:
        return layout.files["key-ring"]  # the same file on this target
    return layout.files[kind]


@contextlib.contextmanager
def _open_archive(path: Path) -> Iterator[tarfile.TarFile]:
    try:
        with tarfile.open(path, mode="r:*") as tar:
            yield tar
    except NotABackup:
        raise
    except (tarfile.TarError, EOFError, zlib.error, OSError) as error:
        if isinstance(error, FileNotFoundError):
            raise
        raise NotABackup(f"{path}: not a readable archive: {error}"[:300]) from None


def _manifest_of(tar: tarfile.TarFile, limits: Limits) -> Manifest:
    member = tar.next()
    if member is None or member.name != MANIFEST_NAME or not member.isreg():
        raise NotABackup(f"the archive does not begin with {MANIFEST_NAME}")
    if member.size > MAX_MANIFEST_BYTES:
        raise NotABackup(f"a manifest of {member.size} bytes (at most {MAX_MANIFEST_BYTES})")
    data = _read_member(tar, member, MAX_MANIFEST_BYTES)
    return parse_manifest(
        data, max_entry_bytes=limits.max_entry_bytes, max_total_bytes=limits.max_total_bytes
    )


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo, limit: int) -> bytes:
    file = tar.extractfile(member)
    if file is None:
        raise NotABackup(f"member {member.name!r} is not a file")
    data = file.read(limit + 1)
    if len(data) != member.size:
        raise NotABackup(f"member {member.name!r} is truncated")
    return data


def _stage_members(tar: tarfile.TarFile, manifest: Manifest, staging: Path) -> dict[str, Path]:
    expected = {entry.name: entry for entry in manifest.entries}
    staged: dict[str, Path] = {}
    while (member := tar.next()) is not None:
        entry = expected.pop(member.name, None)
        if entry is None:
            raise NotABackup(f"member {member.name!r} is not in the manifest (or is repeated)")
        if not member.isreg():
            raise NotABackup(f"member {member.name!r} is not a regular file")
        if member.size != entry.size:
            raise NotABackup(f"member {member.name!r}: {member.size} bytes, manifest {entry.size}")
        file = tar.extractfile(member)
        assert file is not None
        # Named by its place in the manifest, never by the member's name.
        path = staging / f"{len(staged):03d}.part"
        digest, size = hashlib.sha256(), 0
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as out:
            while chunk := file.read(min(_COPY_CHUNK, entry.size - size + 1)):
                size += len(chunk)
                if size > entry.size:
                    raise NotABackup(f"member {member.name!r} is longer than its header says")
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if size != entry.size or digest.hexdigest() != entry.sha256:
            raise NotABackup(f"member {member.name!r} does not match its SHA-256 or size")
        staged[entry.name] = path
    if expected:
        raise NotABackup(f"the archive lacks {sorted(expected)[:5]}")
    return staged


def _check_staged(manifest: Manifest, staged: dict[str, Path]) -> None:
    for entry in manifest.entries:
        path = staged[entry.name]
        if entry.kind in {"board-store", "read-model", "accounts"}:
            try:
                with contextlib.closing(sqlite3.connect(path)) as db:
                    verdict = db.execute("PRAGMA quick_check").fetchone()[0]
            except sqlite3.DatabaseError as error:
                raise NotABackup(f"{entry.name}: not an SQLite database: {error}") from None
            if verdict != "ok":
                raise NotABackup(f"{entry.name}: SQLite says {verdict!r}"[:300])
        elif entry.kind in {"key-ring", "accounts-key-ring"}:
            try:
                ring = KeyRing.open(str(path), create=False)
            except ValueError as error:
                raise NotABackup(f"{entry.name}: {error}") from None
            missing = set(ring.key_ids) - set(manifest.key_ids)
            if missing:
                raise NotABackup(f"{entry.name}: keys {sorted(missing)} not in the manifest")


def _check_target(manifest: Manifest, layout: Layout, *, force: bool) -> None:
    if not force and _holds_data(layout):
        raise BackupError(f"{layout.data_dir} is not empty (--force to restore over it)")
    if layout.store == "mongodb" and not force:
        assert layout.mongo_url is not None
        present = _mongo_collections(layout.mongo_url)
        if present:
            raise BackupError(
                f"the MongoDB database already holds {sorted(present)[:5]} (--force to drop them)"
            )
    if not manifest.holds_keys and manifest.key_ids:
        ring_file = layout.files["key-ring"]
        try:
            ring = KeyRing.open(str(ring_file), create=False)
        except (FileNotFoundError, ValueError) as error:
            raise BackupError(
                f"the backup holds no keys: put the key ring with {list(manifest.key_ids)}"
                f" at {ring_file} first ({error})"
            ) from None
        lacking = set(manifest.key_ids) - set(ring.key_ids)
        if lacking:
            raise BackupError(
                f"{ring_file} lacks keys {sorted(lacking)} the backup was sealed with"
            )


def _holds_data(layout: Layout) -> bool:
    # The key ring, put in place for a backup made without keys, does not count.
    rings = {
        layout.files[kind] for kind in ("key-ring", "accounts-key-ring") if kind in layout.files
    }
    if not layout.data_dir.exists():
        return False
    return any(path not in rings for path in layout.data_dir.rglob("*") if not path.is_dir())


def _mongo_collections(url: str) -> list[str]:
    from pymongo import MongoClient

    client: MongoClient[dict[str, Any]] = MongoClient(url, serverSelectionTimeoutMS=5000)
    try:
        database = client.get_default_database("boardcast")
        return [n for n in database.list_collection_names() if not n.startswith("system.")]
    finally:
        client.close()


def _load_mongo(url: str, manifest: Manifest, staged: dict[str, Path], *, force: bool) -> None:
    from pymongo import MongoClient
    from pymongo.write_concern import WriteConcern

    client: MongoClient[dict[str, Any]] = MongoClient(url, serverSelectionTimeoutMS=5000)
    try:
        database = client.get_default_database("boardcast", write_concern=WriteConcern(w=1, j=True))
        for entry in manifest.of_kind("mongo-collection"):
            assert entry.collection is not None
            collection = database[entry.collection]
            if force:
                collection.drop()
            batch: list[dict[str, Any]] = []
            for document in bson_documents(staged[entry.name]):
                batch.append(document)
                if len(batch) >= _INSERT_BATCH:
                    collection.insert_many(batch, ordered=True)
                    batch = []
            if batch:
                collection.insert_many(batch, ordered=True)
    finally:
        client.close()


def bson_documents(path: Path) -> Iterator[dict[str, Any]]:
    """The BSON documents of a dumped collection, each checked for length before it is read."""
    import bson

    with open(path, "rb") as file:
        while header := file.read(4):
            if len(header) != 4:
                raise NotABackup(f"{path.name}: a truncated document")
            length = int.from_bytes(header, "little", signed=True)
            if not 5 <= length <= MAX_DOCUMENT_BYTES:
                raise NotABackup(f"{path.name}: a document of {length} bytes")
            body = file.read(length - 4)
            if len(body) != length - 4:
                raise NotABackup(f"{path.name}: a truncated document")
            try:
                document: dict[str, Any] = bson.decode(header + body)
            except Exception as error:  # bson raises several unrelated types
                raise NotABackup(f"{path.name}: not BSON: {error}"[:200]) from None
            yield document


def _move_into_place(staged: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # A write-ahead log left from the file replaced would be replayed over the restored one.
    for suffix in ("-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(str(target) + suffix)
    os.replace(staged, target)
    os.chmod(target, 0o600)


# -- the commands ------------------------------------------------------------------------


def run_backup_command(
    layout: Layout, destination: str, *, keys: bool, echo: Callable[[str], None] = print
) -> int:
    """``boardcast backup``; returns the exit status."""
    try:
        manifest = backup(layout, destination, keys=keys)
    except (BackupError, OSError, ValueError, sqlite3.Error) as error:
        echo(f"boardcast backup: {error}")
        return 1
    total = sum(entry.size for entry in manifest.entries)
    held = "with its key ring: keep it as secret as the keys" if keys else "without keys"
    echo(f"backed up {len(manifest.entries)} parts ({total} bytes) to {destination}, {held}")
    return 0


def run_restore_command(
    source: str,
    layout: Layout,
    *,
    force: bool,
    limits: Limits,
    echo: Callable[[str], None] = print,
) -> int:
    """``boardcast restore``; returns the exit status."""
    try:
        manifest = restore(source, layout, force=force, limits=limits)
    except (NotABackup, BackupError, OSError, sqlite3.Error) as error:
        echo(f"boardcast restore: {error}")
        return 1
    where = "the MongoDB database and " if layout.store == "mongodb" else ""
    echo(f"restored {len(manifest.entries)} parts into {where}{layout.data_dir}")
    return 0


def add_backup_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``backup`` and ``restore`` to the ``boardcast`` command's subcommands."""
    make = commands.add_parser("backup", help="copy a deployment (running or not) into an archive")
    make.add_argument("destination", help="the archive to write (a .tar.gz file)")
    make.add_argument(
        "--no-keys", action="store_true", help="leave the key ring out (keep it apart yourself)"
    )
    back = commands.add_parser("restore", help="restore an archive of `boardcast backup`")
    back.add_argument("source", help="the archive")
    back.add_argument("--force", action="store_true", help="restore over a non-empty target")
    back.add_argument(
        "--max-bytes",
        type=int,
        default=DEFAULT_MAX_TOTAL_BYTES,
        help=f"refuse an archive holding more (default {DEFAULT_MAX_TOTAL_BYTES})",
    )
    for parser in (make, back):
        parser.add_argument("--store", help="store URL (default: BOARDCAST_STORE, else sqlite)")
        parser.add_argument("--data-dir", help="data directory (default: BOARDCAST_DATA_DIR)")


def run_backup_commands(args: argparse.Namespace, store_url: str, data_dir: str) -> int:
    """Run ``backup`` or ``restore`` as parsed; returns the exit status."""
    try:
        layout = Layout.of(store_url, data_dir)
    except BackupError as error:
        print(f"boardcast {args.command}: {error}")
        return 1
    if args.command == "backup":
        return run_backup_command(layout, args.destination, keys=not args.no_keys)
    limits = Limits(min(args.max_bytes, DEFAULT_MAX_ENTRY_BYTES), args.max_bytes)
    return run_restore_command(args.source, layout, force=args.force, limits=limits)
