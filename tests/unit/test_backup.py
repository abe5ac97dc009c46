"""The backup archive's reader: a corrupt or hostile archive is refused, and writes nothing.

The manifest reader is fuzzed with hypothesis (bytes, JSON of every shape, valid manifests
with one field changed); whole archives are built by hand to hold what ``boardcast backup``
never writes: a member outside the manifest, a name that climbs out, a symbolic link, a
member longer than its entry, wrong digests, a huge manifest.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import sqlite3
import tarfile
from pathlib import Path
from typing import Any

import hypothesis
import pytest
from hypothesis import strategies as st

from boardcast.backup import Layout, Limits, backup, read_manifest, restore
from boardcast.backup_manifest import (
    MANIFEST_NAME,
    MAX_MANIFEST_BYTES,
    Entry,
    Manifest,
    NotABackup,
    parse_manifest,
)
from persistence.keyring import EncryptionSettings, KeyRing

SETTINGS = EncryptionSettings()  # on, key file under the data directory


def valid_manifest() -> dict[str, Any]:
    return {
        "format": "boardcast-backup",
        "version": 1,
        "created_at": 1764640000.5,
        "store": "sqlite",
        "key_ids": ["1f2e3d4c"],
        "entries": [
            {"name": "board-store.sqlite3", "kind": "board-store", "size": 4096, "sha256": "a" * 64}
        ],
    }


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=30,
)


@hypothesis.given(st.binary(max_size=2000))
def test_bytes_are_a_manifest_or_refused(data: bytes) -> None:
    with contextlib.suppress(NotABackup):
        parse_manifest(data)


@hypothesis.given(json_values)
def test_json_of_any_shape_is_refused_cleanly(value: Any) -> None:
    with pytest.raises(NotABackup):
        parse_manifest(json.dumps(value).encode())


FIELDS = ("format", "version", "created_at", "store", "key_ids", "entries")
ENTRY_FIELDS = ("name", "kind", "size", "sha256", "collection")


@hypothesis.given(st.sampled_from(FIELDS), json_values)
def test_a_manifest_with_one_field_changed_is_read_or_refused(name: str, value: Any) -> None:
    document = valid_manifest()
    document[name] = value
    try:
        manifest = parse_manifest(json.dumps(document).encode())
    except NotABackup:
        return
    # What was accepted is what a restore can use: every limit still holds.
    assert manifest.store in {"sqlite", "mongodb"}
    for entry in manifest.entries:
        assert "/" not in entry.name and ".." not in entry.name and entry.size >= 0


@hypothesis.given(st.sampled_from(ENTRY_FIELDS), json_values | st.text(max_size=300))
def test_an_entry_with_one_field_changed_is_read_or_refused(name: str, value: Any) -> None:
    document = valid_manifest()
    document["entries"][0][name] = value
    try:
        manifest = parse_manifest(json.dumps(document).encode(), max_entry_bytes=10**6)
    except NotABackup:
        return
    (entry,) = manifest.entries
    assert entry.name == "board-store.sqlite3" or (
        isinstance(value, str) and value == entry.name and "/" not in value
    )
    assert 0 <= entry.size <= 10**6 and entry.kind in {"board-store", "mongo-collection"} | {
        "read-model",
        "accounts",
        "key-ring",
        "accounts-key-ring",
    }


@pytest.mark.parametrize(
    "name",
    ["../boardcast.sqlite3", "/etc/passwd", "keys/at-rest.json", "..", ".hidden", "a\x00b", ""],
)
def test_names_that_are_paths_are_refused(name: str) -> None:
    document = valid_manifest()
    document["entries"][0]["name"] = name
    with pytest.raises(NotABackup, match="not allowed"):
        parse_manifest(json.dumps(document).encode())


def test_limits_on_sizes_and_counts_hold() -> None:
    document = valid_manifest()
    document["entries"][0]["size"] = 5000
    with pytest.raises(NotABackup, match="at most 4096"):
        parse_manifest(json.dumps(document).encode(), max_entry_bytes=4096)
    with pytest.raises(NotABackup, match="in all"):
        parse_manifest(json.dumps(document).encode(), max_total_bytes=4999)
    document["entries"] = [
        {"name": f"m{n}.bson", "kind": "mongo-collection", "size": 1, "sha256": "b" * 64}
        for n in range(513)
    ]
    with pytest.raises(NotABackup, match="more than 512"):
        parse_manifest(json.dumps(document).encode())
    with pytest.raises(NotABackup, match="bytes"):
        parse_manifest(b" " * (MAX_MANIFEST_BYTES + 1))


def test_a_mongodb_collection_name_must_be_plain() -> None:
    document = valid_manifest()
    document["store"] = "mongodb"
    document["entries"] = [
        {
            "name": "mongo-000.bson",
            "kind": "mongo-collection",
            "size": 1,
            "sha256": "c" * 64,
            "collection": "system.users",
        }
    ]
    with pytest.raises(NotABackup, match="not allowed"):
        parse_manifest(json.dumps(document).encode())


# -- whole archives ----------------------------------------------------------------------


def sqlite_file(path: Path) -> bytes:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE t (x)")
        db.execute("INSERT INTO t VALUES (1)")
    db.close()
    return path.read_bytes()


def archive(
    path: Path,
    members: list[tuple[str, bytes]],
    *,
    manifest: Manifest | bytes | None = None,
    extra: list[tarfile.TarInfo] | None = None,
) -> Path:
    """A gzip tar with ``manifest`` (default: one matching ``members``) first."""
    if manifest is None:
        entries = tuple(
            Entry(name, "board-store", len(data), hashlib.sha256(data).hexdigest())
            for name, data in members
        )
        manifest = Manifest(1.0, "sqlite", (), entries)
    encoded = manifest if isinstance(manifest, bytes) else manifest.encode()
    with tarfile.open(path, "w:gz") as tar:
        for name, data in [(MANIFEST_NAME, encoded), *members]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info in extra or []:
            tar.addfile(info)
    return path


def layout(tmp_path: Path) -> Layout:
    return Layout.of("sqlite", str(tmp_path / "target"), SETTINGS)


def assert_nothing_restored(tmp_path: Path) -> None:
    target = tmp_path / "target"
    left = [p.name for p in target.rglob("*")] if target.exists() else []
    assert left == [], left
    assert not (tmp_path / "boardcast.sqlite3").exists()


def test_a_well_formed_archive_restores(tmp_path: Path) -> None:
    data = sqlite_file(tmp_path / "source.sqlite3")
    path = archive(tmp_path / "a.tar.gz", [("board-store.sqlite3", data)])
    restore(path, layout(tmp_path))
    assert (tmp_path / "target" / "boardcast.sqlite3").read_bytes() == data


@pytest.mark.parametrize(
    "case", ["unlisted", "traversal", "symlink", "digest", "size", "missing", "not-sqlite"]
)
def test_a_hostile_archive_is_refused_and_writes_nothing(tmp_path: Path, case: str) -> None:
    data = sqlite_file(tmp_path / "source.sqlite3")
    members = [("board-store.sqlite3", data)]
    manifest: Manifest | None = None
    extra: list[tarfile.TarInfo] = []
    good = Entry("board-store.sqlite3", "board-store", len(data), hashlib.sha256(data).hexdigest())
    if case == "unlisted":
        members.append(("extra.bin", b"x"))
    elif case == "traversal":
        members.append(("../boardcast.sqlite3", data))
    elif case == "symlink":
        link = tarfile.TarInfo("board-store.sqlite3")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        members, extra = [], [link]
        manifest = Manifest(1.0, "sqlite", (), (good,))
    elif case == "digest":
        manifest = Manifest(1.0, "sqlite", (), (Entry(good.name, good.kind, good.size, "0" * 64),))
    elif case == "size":
        members = [("board-store.sqlite3", data + b"more")]
        manifest = Manifest(1.0, "sqlite", (), (good,))
    elif case == "missing":
        members = []
        manifest = Manifest(1.0, "sqlite", (), (good,))
    elif case == "not-sqlite":
        junk = b"\x00" * 4096
        members = [("board-store.sqlite3", junk)]
        manifest = Manifest(
            1.0,
            "sqlite",
            (),
            (Entry(good.name, good.kind, len(junk), hashlib.sha256(junk).hexdigest()),),
        )
    path = archive(tmp_path / "a.tar.gz", members, manifest=manifest, extra=extra)
    with pytest.raises(NotABackup):
        restore(path, layout(tmp_path))
    assert_nothing_restored(tmp_path)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "flipped"])
def test_a_damaged_archive_is_refused(tmp_path: Path, damage: str) -> None:
    data = sqlite_file(tmp_path / "source.sqlite3")
    path = archive(tmp_path / "a.tar.gz", [("board-store.sqlite3", data)])
    raw = bytearray(path.read_bytes())
    if damage == "truncated":
        raw = raw[: len(raw) // 2]
    elif damage == "garbage":
        raw = bytearray(b"not an archive at all" * 10)
    else:
        raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(NotABackup):
        restore(path, layout(tmp_path))
    assert_nothing_restored(tmp_path)


def test_an_archive_without_its_manifest_first_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "a.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("board-store.sqlite3")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(NotABackup, match="begin with"):
        read_manifest(path)


def test_the_total_limit_is_checked_before_a_byte_is_staged(tmp_path: Path) -> None:
    data = sqlite_file(tmp_path / "source.sqlite3")
    path = archive(tmp_path / "a.tar.gz", [("board-store.sqlite3", data)])
    with pytest.raises(NotABackup, match="in all"):
        restore(path, layout(tmp_path), limits=Limits(max_total_bytes=len(data) - 1))
    assert_nothing_restored(tmp_path)


def test_backup_then_restore_keeps_the_keys_and_refuses_a_full_target(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    sqlite_file(source / "boardcast.sqlite3")
    ring = KeyRing.open(str(source / "keys" / "at-rest.json"))
    path = tmp_path / "b.tar.gz"
    manifest = backup(Layout.of("sqlite", str(source), SETTINGS), path)
    assert manifest.key_ids == tuple(ring.key_ids) and manifest.holds_keys
    assert path.stat().st_mode & 0o077 == 0  # the archive holds keys: owner only
    restore(path, layout(tmp_path))
    restored = KeyRing.open(str(tmp_path / "target" / "keys" / "at-rest.json"), create=False)
    assert restored.key_ids == ring.key_ids
    from boardcast.backup import BackupError

    with pytest.raises(BackupError, match="not empty"):
        restore(path, layout(tmp_path))
    restore(path, layout(tmp_path), force=True)


# -- the workers' stores and the event log ------------------------------------------------


async def make_log(path: Path, events: int, committed: int) -> None:
    from persistence.event_log import NewEvent
    from persistence.event_log_sqlite import SqliteEventLog

    log = SqliteEventLog(path)
    try:
        await log.append(
            [
                NewEvent(f"b:{n}:0", "b", "p", "task.created", {"task_id": f"t{n}"}, None)
                for n in range(events)
            ]
        )
        await log.commit("analytics", committed)
    finally:
        await log.close()


def consumer_offset(path: Path, name: str) -> int:
    with contextlib.closing(sqlite3.connect(path)) as db:
        (offset,) = db.execute("SELECT offset FROM consumers WHERE name = ?", (name,)).fetchone()
    return int(offset)


def back_up_while_a_worker_commits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, clamp: bool
) -> Path:
    """Back up a data dir whose analytics worker commits offset 5 right after its own store
    was copied (as a running worker would); restore it; the restored data directory."""
    import asyncio

    import boardcast.backup as backup_module

    source = tmp_path / f"source-{clamp}"
    source.mkdir()
    sqlite_file(source / "boardcast.sqlite3")
    for name in ("analytics.sqlite3", "webhooks.sqlite3", "notifications.sqlite3", "mail.sqlite3"):
        sqlite_file(source / name)
    asyncio.run(make_log(source / "events.sqlite3", events=6, committed=2))
    real_copy = backup_module._sqlite_online_copy

    def copy_then_commit(origin: Path, copy: Path) -> None:
        real_copy(origin, copy)
        if origin.name == "analytics.sqlite3":
            with contextlib.closing(sqlite3.connect(source / "events.sqlite3")) as db, db:
                db.execute("UPDATE consumers SET offset = 5 WHERE name = 'analytics'")

    monkeypatch.setattr(backup_module, "_sqlite_online_copy", copy_then_commit)
    if not clamp:
        monkeypatch.setattr(backup_module, "_clamp_sqlite_consumers", lambda *_: None)
    path = tmp_path / f"clamp-{clamp}.tar.gz"
    backup(Layout.of("sqlite", str(source), SETTINGS), path)
    target = tmp_path / f"target-{clamp}"
    restore(path, Layout.of("sqlite", str(target), SETTINGS))
    return target


def test_the_workers_stores_and_the_event_log_are_restored_with_offsets_the_stores_hold(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = back_up_while_a_worker_commits(tmp_path, monkeypatch, clamp=True)
    for name in ("analytics", "webhooks", "notifications", "mail", "events"):
        assert (target / f"{name}.sqlite3").exists(), name
    with contextlib.closing(sqlite3.connect(target / "events.sqlite3")) as db:
        assert db.execute("SELECT count(*) FROM events").fetchone() == (6,)
    # The analytics copy was taken when offset 2 was committed: the restored log says 2, so
    # the restored worker handles events 3-5 again instead of never.
    assert consumer_offset(target / "events.sqlite3", "analytics") == 2
    # The check catches a backup that keeps the offset committed after the store's copy.
    broken = back_up_while_a_worker_commits(tmp_path, monkeypatch, clamp=False)
    assert consumer_offset(broken / "events.sqlite3", "analytics") == 5


def test_the_workers_stores_are_copied_before_the_log_and_the_log_before_the_boards() -> None:
    from boardcast.backup import SQLITE_ORDER, WORKER_FILES

    log = SQLITE_ORDER.index("event-log")
    assert all(SQLITE_ORDER.index(kind) < log for kind in (*WORKER_FILES, "attachments"))
    assert log < SQLITE_ORDER.index("board-store")
