"""Durable storage of boards: a snapshot plus a log of Yjs updates, behind one interface."""

from persistence.factory import open_store
from persistence.memory import MemoryStore
from persistence.sqlite import SqliteStore
from persistence.store import BoardStore, LogEntry, StoredBoard

__all__ = ["BoardStore", "LogEntry", "MemoryStore", "SqliteStore", "StoredBoard", "open_store"]
