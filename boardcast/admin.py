"""Offline board commands: ``boardcast history``, ``export``, ``import`` and ``reindex``.

They open the store directly, so they work with the server stopped. The store, data directory
and history retention come from the same :class:`Settings` as ``boardcast serve`` (flags, then
``BOARDCAST_*`` variables, then defaults), so an operator who exported ``BOARDCAST_STORE`` for
the server reads the same boards here. The reading commands refuse a store that does not exist
rather than reading an empty one. Importing into a board a running server holds open is not
safe: the server would not see the import until the board is reloaded.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

from actors.indexing import reindex
from gateway.settings import Settings
from persistence.factory import open_store
from persistence.history import parse_history_policy
from persistence.store import BoardStore, HistoryUnavailable
from persistence.transfer import NotABoardFile, export_all, export_board, import_all, import_board


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the offline subcommands on the ``boardcast`` parser."""
    history = commands.add_parser("history", help="list the stored versions of a board")
    history.add_argument("board", help="board id")
    _store_flags(history)

    export = commands.add_parser("export", help="write a board (or every board) to a file")
    export.add_argument("board", nargs="?", help="board id (or --all)")
    export.add_argument(
        "--all", action="store_true", help="every board, one file each, into -o DIR"
    )
    export.add_argument("--at", help="the board as it was at this time (ISO 8601 or unix seconds)")
    export.add_argument(
        "-o", "--output", required=True, help="output file (or directory with --all)"
    )
    _store_flags(export)

    rebuild = commands.add_parser(
        "reindex", help="rebuild the task read model (REST queries) from the stored boards"
    )
    _store_flags(rebuild)

    restore = commands.add_parser("import", help="load a board file (or a directory of them)")
    restore.add_argument("path", help="a .boardcast file, or a directory written by export --all")
    restore.add_argument("--board", help="import under this board id instead of the file's")
    _store_flags(restore)


#: Commands that only read: they must not create the store they were pointed at.
READING_COMMANDS = frozenset({"history", "export", "reindex"})


def _store_flags(parser: argparse.ArgumentParser) -> None:
    # No defaults here: a flag left out falls back to BOARDCAST_STORE / BOARDCAST_DATA_DIR.
    parser.add_argument(
        "--store", help="store URL (default: BOARDCAST_STORE, else sqlite under --data-dir)"
    )
    parser.add_argument(
        "--data-dir", help="embedded store directory (default: BOARDCAST_DATA_DIR, else ./data)"
    )


def parse_time(text: str) -> float:
    """Unix seconds from ``1764171234.5`` or ``2026-11-26T17:00:00Z``."""
    try:
        return float(text)
    except ValueError:
        pass
    moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


def _iso(at: float) -> str:
    return datetime.datetime.fromtimestamp(at, datetime.UTC).isoformat(timespec="milliseconds")


async def run_admin(args: argparse.Namespace, settings: Settings) -> int:
    """Run one offline command on the store ``settings`` name; return the process exit code."""
    # The server's retention: what an import keeps, and what messages say is kept.
    history = parse_history_policy(settings.history)
    store = open_store(settings.store, data_dir=settings.data_dir, history=history)
    try:
        if args.command in READING_COMMANDS and not await store.exists():
            print(
                f"boardcast {args.command}: no board store at {store.location}"
                " (set --store/--data-dir, or BOARDCAST_STORE/BOARDCAST_DATA_DIR)",
                file=sys.stderr,
            )
            return 1
        return await _dispatch(store, args)
    except (HistoryUnavailable, NotABoardFile, FileNotFoundError) as exc:
        print(f"boardcast {args.command}: {exc}", file=sys.stderr)
        return 1
    finally:
        await store.close()


async def _dispatch(store: BoardStore, args: argparse.Namespace) -> int:
    if args.command == "reindex":
        counts = await reindex(store)
        print(f"reindexed {sum(counts.values())} tasks of {len(counts)} boards in {store.location}")
        return 0
    if args.command == "history":
        versions = await store.versions(args.board)
        if not versions:
            print(f"boardcast history: no stored versions of {args.board!r}", file=sys.stderr)
            return 1
        for version in versions:
            print(f"{version.seq:>8}  {_iso(version.at)}  {version.kind}")
        return 0
    if args.command == "export":
        if args.all:
            written = await export_all(store, args.output)
            print(f"exported {len(written)} boards to {args.output}")
            return 0
        if not args.board:
            print("boardcast export: give a board id or --all", file=sys.stderr)
            return 2
        at = parse_time(args.at) if args.at else None
        data = await export_board(store, args.board, at)
        Path(args.output).write_bytes(data)
        print(f"exported {args.board} ({len(data)} bytes) to {args.output}")
        return 0
    path = Path(args.path)
    if path.is_dir():
        boards = await import_all(store, path)
        print(f"imported {len(boards)} boards from {path} into {store.location}")
    else:
        board = await import_board(store, path.read_bytes(), args.board)
        print(f"imported {board} from {path} into {store.location}")
    return 0
