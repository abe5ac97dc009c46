"""Calendar feeds: tasks with due dates as iCalendar (RFC 5545), at secret, revocable URLs.

A feed covers a project's tasks or one person's (their assignments, on every
board), from the read model. Calendar apps subscribe to a URL and cannot send
credentials, so the URL is the credential: ``/v1/feeds/<token>.ics``, where the
token is 32 random bytes. Only a SHA-256 of it is kept, in the feeds document
(:data:`FEEDS_BOARD`, hosted and stored like a board and never served to a
client), beside the feed's public id, which is what revokes it.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from crdt.board import Board
from persistence.read_model import TaskRow

#: The document the feeds are kept in. Ids starting ``boardcast.`` are the server's own.
FEEDS_BOARD = "boardcast.feeds"


def new_token() -> str:
    """A fresh feed token (43 URL-safe characters)."""
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """What is stored of a token."""
    return hashlib.sha256(token.encode()).hexdigest()


# -- the feeds document (runs on its actor) ------------------------------------------


def add_feed(board: Board, feed_id: str, digest: str, scope: str, target: str, now: str) -> None:
    from pycrdt import Map

    feeds = board.doc.get("feeds", type=Map)
    feeds[digest] = Map(
        {"id": feed_id, "scope": scope, "target": target, "created_at": now, "revoked": False}
    )


def find_feed(board: Board, digest: str) -> dict[str, Any] | None:
    from pycrdt import Map

    found = board.doc.get("feeds", type=Map).get(digest)
    if not isinstance(found, Map):
        return None
    feed = found.to_py()
    if not isinstance(feed, dict) or feed.get("revoked"):
        return None
    return feed


def revoke_feed(board: Board, feed_id: str) -> bool:
    from pycrdt import Map

    feeds = board.doc.get("feeds", type=Map)
    for digest in list(feeds.keys()):
        feed = feeds.get(digest)
        if isinstance(feed, Map) and feed.get("id") == feed_id and not feed.get("revoked"):
            feed["revoked"] = True
            return True
    return False


# -- iCalendar -------------------------------------------------------------------------


def _escape(text: str) -> str:
    return (
        text.replace("\\", "\\\\")
        .replace(";", "\\;")
        .replace(",", "\\,")
        .replace("\r\n", "\\n")
        .replace("\n", "\\n")
        .replace("\r", "\\n")
    )


def _fold(line: str) -> str:
    """Fold a content line at 75 octets (RFC 5545 3.1), never inside a character."""
    out: list[str] = []
    current = ""
    size = 0
    for char in line:
        width = len(char.encode())
        if size + width > 75:
            out.append(current)
            current, size = " ", 1
        current += char
        size += width
    out.append(current)
    return "\r\n".join(out)


def calendar(name: str, rows: Iterable[TaskRow], *, now: datetime | None = None) -> str:
    """A VCALENDAR of all-day events, one per task with a due date."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    lines = [
        "BEGIN:VCALENDAR",
        "VERSION:2.0",
        "PRODID:-//Boardcast//Task due dates//EN",
        "CALSCALE:GREGORIAN",
        "METHOD:PUBLISH",
        f"X-WR-CALNAME:{_escape(name)}",
    ]
    for row in rows:
        if row.due is None:
            continue
        day = row.due.replace("-", "")
        lines += [
            "BEGIN:VEVENT",
            f"UID:{_escape(row.task_id)}.{_escape(row.board_id)}@boardcast",
            f"DTSTAMP:{stamp}",
            f"DTSTART;VALUE=DATE:{day}",
            f"SUMMARY:{_escape(row.title)}",
        ]
        if row.description:
            lines.append(f"DESCRIPTION:{_escape(row.description)}")
        if row.labels:
            lines.append("CATEGORIES:" + ",".join(_escape(label) for label in row.labels))
        lines.append("END:VEVENT")
    lines.append("END:VCALENDAR")
    return "".join(_fold(line) + "\r\n" for line in lines)
