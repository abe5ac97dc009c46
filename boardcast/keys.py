"""The key commands: ``boardcast keys rotate`` and ``boardcast reencrypt``.

Rotating adds a key to the ring and makes it the one new data is sealed with; running
processes pick it up within ``refresh_seconds`` (or at once, on meeting a blob under it).
Re-encrypting then rewrites every stored record, and every read-model row, under that key,
after which the old key can be removed from the ring (``boardcast keys remove ID``).
See docs/encryption.md.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
from dataclasses import dataclass, replace

from persistence.encrypted import EncryptedStore, KeySource
from persistence.encrypted_read_model import EncryptedTaskIndex, ResealCount
from persistence.factory import open_store
from persistence.keyring import EncryptionSettings, KeyRing
from persistence.reseal import ResealReport, reseal_mongo, reseal_sqlite
from persistence.sqlite import SqliteStore


def key_path(data_dir: str, key_file: str | None = None) -> str:
    """The key file of a data directory: ``key_file`` if given, else the setting's default."""
    settings = EncryptionSettings.from_environment()
    if key_file:
        settings = EncryptionSettings(key_file=key_file)
    return settings.key_path(data_dir)


def rotate_keys(data_dir: str, *, key_file: str | None = None) -> tuple[str, list[str]]:
    """Add a new active key to the ring (made if missing); return its id and every id."""
    ring = KeyRing.open(key_path(data_dir, key_file))
    new = ring.rotate()
    return new, ring.key_ids


def remove_key(data_dir: str, key_id: str, *, key_file: str | None = None) -> list[str]:
    """Drop a key from the ring (never the active one); return the ids left."""
    ring = KeyRing.open(key_path(data_dir, key_file), create=False)
    ring.remove(key_id)
    return ring.key_ids


@dataclass
class ReencryptReport:
    """What :func:`reencrypt` rewrote, in the store and in the read model."""

    active_key: str
    store: ResealReport
    read_model: ResealCount | None
    key_file: str = ""

    def lines(self) -> list[str]:
        """The report as the command prints it."""
        out = [f"active key: {self.active_key} ({self.key_file})"]
        tables = sorted(
            {*self.store.rewritten, *self.store.current, *self.store.raced, *self.store.left}
        )
        for table in tables:
            out.append(
                f"{table}: {self.store.rewritten.get(table, 0)} rewritten,"
                f" {self.store.current.get(table, 0)} already current,"
                f" {self.store.raced.get(table, 0)} changed meanwhile (run again),"
                f" {self.store.left.get(table, 0)} left (chunked)"
            )
        if self.read_model is not None:
            out.append(
                f"read model: {self.read_model.rewritten} rewritten,"
                f" {self.read_model.current} already current"
            )
        return out


async def reencrypt(
    data_dir: str, store_url: str = "sqlite", *, key_file: str | None = None
) -> ReencryptReport:
    """Rewrite every record of the store (and its read model) under the ring's active key.

    Safe to interrupt and to run while servers run: see ``persistence/reseal.py``.
    """
    settings = EncryptionSettings.from_environment()
    # Plaintext from before is read (to be sealed) even where the store is read strictly.
    settings = replace(
        settings, enabled=True, key_file=key_file or settings.key_file, refuse_plaintext=False
    )
    store = open_store(store_url, data_dir=data_dir, encryption=settings)
    if not isinstance(store, EncryptedStore):
        raise ValueError(f"{store_url}: this store keeps nothing at rest to re-encrypt")
    try:
        if not await store.exists():
            raise ValueError(f"no store at {store.location}")
        keys: KeySource = store.keys
        active = keys.for_writing().active_key_id
        inner = store.inner
        if isinstance(inner, SqliteStore):
            report = await asyncio.to_thread(reseal_sqlite, inner.path, keys)
        else:
            from persistence.mongo import MongoStore

            if not isinstance(inner, MongoStore):
                raise ValueError(f"{store.location}: no re-encryption for this store")
            report = await reseal_mongo(await inner.database(), keys)
        index = store.task_index()
        try:
            assert isinstance(index, EncryptedTaskIndex)
            counted = await index.reseal()
        finally:
            await index.close()
        return ReencryptReport(active, report, counted, keys.path or "")
    finally:
        await store.close()


def run_keys_command(
    action: str,
    data_dir: str,
    *,
    key_id: str | None = None,
    key_file: str | None = None,
    echo: Callable[[str], None] = print,
) -> int:
    """``boardcast keys rotate|list|remove``; returns the exit status."""
    path = key_path(data_dir, key_file)
    try:
        if action == "rotate":
            new, ids = rotate_keys(data_dir, key_file=key_file)
            echo(f"{path}: new active key {new}; keys: {', '.join(ids)}")
            echo("run `boardcast reencrypt` to seal the stored data under it")
        elif action == "remove":
            if key_id is None:
                echo("keys remove: name the key id to remove")
                return 2
            ids = remove_key(data_dir, key_id, key_file=key_file)
            echo(f"{path}: removed {key_id}; keys: {', '.join(ids)}")
        else:
            ring = KeyRing.open(path, create=False)
            for each in ring.key_ids:
                marker = " (active)" if each == ring.active_key_id else ""
                echo(f"{each}  created {ring.created_at(each)}{marker}")
    except (OSError, ValueError) as exc:
        echo(f"keys {action}: {exc}")
        return 1
    return 0


def run_reencrypt_command(
    data_dir: str,
    store_url: str | None,
    *,
    key_file: str | None = None,
    echo: Callable[[str], None] = print,
) -> int:
    """``boardcast reencrypt``; returns the exit status."""
    try:
        report = asyncio.run(reencrypt(data_dir, store_url or "sqlite", key_file=key_file))
    except (OSError, ValueError) as exc:
        echo(f"reencrypt: {exc}")
        return 1
    for line in report.lines():
        echo(line)
    return 0


def add_key_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``keys`` and ``reencrypt`` to the ``boardcast`` command's subcommands."""
    keys = commands.add_parser("keys", help="the encryption-at-rest key ring: rotate, list, remove")
    keys.add_argument("action", choices=["rotate", "list", "remove"])
    keys.add_argument("key_id", nargs="?", help="the key to remove")
    keys.add_argument("--data-dir", help="data directory (default ./data)")
    keys.add_argument("--key-file", help="the key file (default <data-dir>/keys/at-rest.json)")
    reencrypt = commands.add_parser(
        "reencrypt", help="rewrite every stored record under the active key (resumable)"
    )
    reencrypt.add_argument("--data-dir", help="data directory (default ./data)")
    reencrypt.add_argument(
        "--store", help="store URL: sqlite (default), sqlite:///FILE, mongodb://"
    )
    reencrypt.add_argument("--key-file", help="the key file (default <data-dir>/keys/at-rest.json)")
