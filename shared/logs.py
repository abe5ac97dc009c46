"""Log lines for operators: today's text for a terminal, or one JSON object per line.

The ids of what a line is about (the REST request, the board, the connection,
the user) live in context variables: the code that knows them sets them once
(a request's middleware, a socket's handler, a board's loader) and every line
logged below it, in that task and the tasks it starts, carries them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

REQUEST_ID: ContextVar[str | None] = ContextVar("boardcast_request_id", default=None)
BOARD_ID: ContextVar[str | None] = ContextVar("boardcast_board_id", default=None)
CONNECTION_ID: ContextVar[int | None] = ContextVar("boardcast_connection_id", default=None)
USER_ID: ContextVar[str | None] = ContextVar("boardcast_user_id", default=None)

_CONTEXT: tuple[tuple[str, ContextVar[Any]], ...] = (
    ("request_id", REQUEST_ID),
    ("board_id", BOARD_ID),
    ("connection_id", CONNECTION_ID),
    ("user_id", USER_ID),
)

#: The values ``log_format`` may take.
LOG_FORMATS = ("text", "json")

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: timestamp, level, logger, message, and the ids in context."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        seconds = record.created
        line: dict[str, Any] = {
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
            + f".{int(seconds % 1 * 1000):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, variable in _CONTEXT:
            value = variable.get()
            if value is not None:
                line[key] = value
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["error"] = record.exc_text
        # Newlines in a message (a traceback included) stay inside the one JSON string.
        return json.dumps(line, ensure_ascii=False, default=str)


def configure_logging(level: str, log_format: str) -> None:
    """Send this process's logs to stderr in ``log_format`` (``text`` or ``json``).

    Raises:
        ValueError: an unknown format.
    """
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log_format must be text or json, not {log_format!r}")
    formatter = JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    handler = logging.StreamHandler()
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())


def use_json_logs(level: str = "INFO") -> None:
    """Switch this process to JSON lines unless it already writes them (board host processes)."""
    root = logging.getLogger()
    if not any(isinstance(h.formatter, JsonFormatter) for h in root.handlers):
        configure_logging(level, "json")


@contextlib.contextmanager
def log_context(**ids: Any) -> Iterator[None]:
    """Let every line logged inside carry these ids (``request_id``, ``board_id``...)."""
    variables = dict(_CONTEXT)
    tokens = [(variables[key], variables[key].set(value)) for key, value in ids.items()]
    try:
        yield
    finally:
        for variable, token in reversed(tokens):
            variable.reset(token)
