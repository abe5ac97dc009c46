"""The manifest of a deployment backup: what the archive holds, checked before anything is read.

A backup is a tar archive whose first member is ``manifest.json``::

    {"format": "boardcast-backup", "version": 1, "created_at": 1764640000.0,
     "store": "sqlite" | "mongodb",
     "key_ids": ["1f2e3d4c", ...],          # the key ring's ids (never the keys)
     "entries": [{"name": "board-store.sqlite3", "kind": "board-store",
                  "size": 12288, "sha256": "<64 hex digits>"}, ...]}

Every other member is one entry, in the manifest's order. A member's name is only a label:
where its bytes go on restore follows from its ``kind`` and the target's settings, never
from the name, so no name can point outside the target. Names are still held to a short
plain form, so that a hostile archive is refused early and its listing stays readable.

This module reads and writes the manifest; it does no I/O.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

FORMAT = "boardcast-backup"
VERSION = 1
MANIFEST_NAME = "manifest.json"

#: The kinds of entry, and whether a backup may hold more than one of the kind.
KINDS: dict[str, bool] = {
    "board-store": False,  # the embedded store's SQLite file
    "read-model": False,  # the task read model's SQLite file
    "accounts": False,  # the accounts SQLite file
    "event-log": False,  # the event log's SQLite file
    "analytics": False,  # the analytics worker's SQLite file
    "webhooks": False,  # webhook endpoints and deliveries (SQLite)
    "notifications": False,  # people's notifications (SQLite)
    "mail": False,  # e-mail preferences and jobs (SQLite)
    "attachments": False,  # the attachment index (SQLite)
    "key-ring": False,  # the at-rest key ring of the board store (and of the accounts)
    "accounts-key-ring": False,  # the accounts' key ring where it is another file
    "mongo-collection": True,  # one MongoDB collection, as concatenated BSON documents
}
STORES = frozenset({"sqlite", "mongodb"})

#: The longest manifest read, in bytes.
MAX_MANIFEST_BYTES = 1024 * 1024
#: The most entries a manifest may list.
MAX_ENTRIES = 512
#: Where no limit is given: the largest entry, and all entries together.
DEFAULT_MAX_ENTRY_BYTES = 64 * 1024**3
DEFAULT_MAX_TOTAL_BYTES = 256 * 1024**3

_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,127}")
_COLLECTION = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,119}")
_KEY_ID = re.compile(r"[0-9a-f]{8}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


class NotABackup(ValueError):
    """The archive is not a backup this version of Boardcast restores; nothing was written."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One member of the archive: what it is, how long, and its SHA-256."""

    name: str
    kind: str
    size: int
    sha256: str
    collection: str | None = None  # for a mongo-collection

    def as_json(self) -> dict[str, Any]:
        """The entry as the manifest lists it."""
        out: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "size": self.size,
            "sha256": self.sha256,
        }
        if self.collection is not None:
            out["collection"] = self.collection
        return out


@dataclass(frozen=True, slots=True)
class Manifest:
    """What a backup holds."""

    created_at: float
    store: str
    key_ids: tuple[str, ...]
    entries: tuple[Entry, ...]

    def encode(self) -> bytes:
        """The bytes of ``manifest.json``."""
        document = {
            "format": FORMAT,
            "version": VERSION,
            "created_at": self.created_at,
            "store": self.store,
            "key_ids": list(self.key_ids),
            "entries": [entry.as_json() for entry in self.entries],
        }
        return json.dumps(document, indent=1).encode()

    def of_kind(self, kind: str) -> list[Entry]:
        """The entries of one kind, in archive order."""
        return [entry for entry in self.entries if entry.kind == kind]

    @property
    def holds_keys(self) -> bool:
        """True if the archive carries the key ring itself (and is then as secret as it)."""
        return bool(self.of_kind("key-ring"))


def entry_name_allowed(name: str) -> bool:
    """True for a member name of the plain form every entry has (no path, no dots first)."""
    return _NAME.fullmatch(name) is not None and ".." not in name


def collection_name_allowed(name: str) -> bool:
    """True for a MongoDB collection name a restore may create (never a ``system.`` one)."""
    return _COLLECTION.fullmatch(name) is not None and not name.startswith("system.")


def parse_manifest(
    data: bytes,
    *,
    max_entry_bytes: int = DEFAULT_MAX_ENTRY_BYTES,
    max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES,
) -> Manifest:
    """Check and parse ``manifest.json``.

    Raises:
        NotABackup: it is not a manifest this version reads, or it breaks a limit.
    """
    if len(data) > MAX_MANIFEST_BYTES:
        raise NotABackup(f"a manifest of {len(data)} bytes (at most {MAX_MANIFEST_BYTES})")
    try:
        document = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise NotABackup(f"the manifest is not JSON: {error}"[:200]) from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise NotABackup(f"not a {FORMAT!r} archive")
    version = document.get("version")
    if type(version) is not int or version != VERSION:
        raise NotABackup(f"{FORMAT} version {version!r}; this Boardcast reads {VERSION}"[:200])
    created_at, store = document.get("created_at"), document.get("store")
    key_ids, raw_entries = document.get("key_ids"), document.get("entries")
    if not isinstance(created_at, int | float) or isinstance(created_at, bool):
        raise NotABackup("the manifest has no created_at time")
    if not isinstance(store, str) or store not in STORES:
        raise NotABackup(f"unknown store kind {store!r}"[:200])
    if not isinstance(key_ids, list) or len(key_ids) > MAX_ENTRIES:
        raise NotABackup("the manifest's key_ids are not a short list")
    if not all(isinstance(each, str) and _KEY_ID.fullmatch(each) for each in key_ids):
        raise NotABackup("a key id is not 8 hexadecimal digits")
    if not isinstance(raw_entries, list) or len(raw_entries) > MAX_ENTRIES:
        raise NotABackup(f"the manifest lists no entries, or more than {MAX_ENTRIES}")
    entries = tuple(_entry(raw, max_entry_bytes) for raw in raw_entries)
    _check_together(entries, store, max_total_bytes)
    return Manifest(float(created_at), str(store), tuple(key_ids), entries)


def _entry(raw: Any, max_entry_bytes: int) -> Entry:
    if not isinstance(raw, dict):
        raise NotABackup("an entry is not an object")
    name, kind, size, digest = (raw.get(k) for k in ("name", "kind", "size", "sha256"))
    collection = raw.get("collection")
    if not isinstance(name, str) or not entry_name_allowed(name) or name == MANIFEST_NAME:
        raise NotABackup(f"entry name {name!r} is not allowed"[:200])
    if not isinstance(kind, str) or kind not in KINDS:
        raise NotABackup(f"entry {name!r}: unknown kind {kind!r}"[:200])
    if type(size) is not int or not 0 <= size <= max_entry_bytes:
        raise NotABackup(f"entry {name!r}: size {size!r} (at most {max_entry_bytes})"[:200])
    if not isinstance(digest, str) or _SHA256.fullmatch(digest) is None:
        raise NotABackup(f"entry {name!r}: no SHA-256")
    if kind == "mongo-collection":
        if not isinstance(collection, str) or not collection_name_allowed(collection):
            raise NotABackup(f"entry {name!r}: collection {collection!r} is not allowed"[:200])
    elif collection is not None:
        raise NotABackup(f"entry {name!r}: only a mongo-collection names a collection")
    return Entry(name, kind, size, digest, collection)


def _check_together(entries: tuple[Entry, ...], store: str, max_total_bytes: int) -> None:
    names = [entry.name for entry in entries]
    if len(set(names)) != len(names):
        raise NotABackup("two entries have one name")
    for kind, repeatable in KINDS.items():
        if not repeatable and sum(entry.kind == kind for entry in entries) > 1:
            raise NotABackup(f"more than one {kind} entry")
    collections = [entry.collection for entry in entries if entry.collection is not None]
    if len(set(collections)) != len(collections):
        raise NotABackup("two entries hold one collection")
    sqlite_only = set(KINDS) - {"key-ring", "accounts-key-ring", "mongo-collection"}
    if store == "mongodb" and any(entry.kind in sqlite_only for entry in entries):
        raise NotABackup("a MongoDB backup holding SQLite files")
    if store == "sqlite" and collections:
        raise NotABackup("an SQLite backup holding MongoDB collections")
    total = sum(entry.size for entry in entries)
    if total > max_total_bytes:
        raise NotABackup(f"entries of {total} bytes in all (at most {max_total_bytes})")
