"""Reading what a REST client sends: bounded, typed, and refused with a named problem.

Nothing from the client is trusted: bodies are read up to a byte limit, JSON that
is not strictly JSON (``NaN``, deep nesting) is refused, and every field is
checked for type, length and count before it reaches a board.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from gateway.rest.problems import Problem

#: Ids the API accepts for boards, projects, columns and tasks (what a URL segment can hold).
ID = re.compile(r"^[A-Za-z0-9._~-]{1,200}$")


@dataclass(frozen=True, slots=True)
class RestLimits:
    """Bounds on what one REST request may carry; see docs/settings.md."""

    max_body_bytes: int = 32 * 1024 * 1024  # one request body; past it 413 too-large
    max_bulk_items: int = 10_000  # tasks created, updated, moved or deleted per request
    max_name_chars: int = 1_000  # project, board, column names and task titles
    max_description_chars: int = 100_000
    max_list_items: int = 100  # assignees or labels of one task
    max_page: int = 200  # items per page of a list
    default_page: int = 50


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


async def read_json(request: web.Request, limits: RestLimits) -> Any:
    """The request's JSON body, read up to ``max_body_bytes``."""
    if request.content_type != "application/json":
        raise Problem(
            "unsupported-media-type", f"send application/json, not {request.content_type!r}"
        )
    raw = await read_body(request, limits)
    try:
        return json.loads(raw, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:
        raise Problem("invalid-json", f"the body is not JSON: {exc}"[:300]) from None


async def read_body(request: web.Request, limits: RestLimits) -> bytes:
    """The request body, refused with 413 past ``max_body_bytes`` (declared or sent)."""
    limit = limits.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise Problem("too-large", f"the body is {request.content_length} bytes; at most {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise Problem("too-large", f"the body is over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def an_object(value: Any, where: str = "the body") -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise Problem("validation", f"{where} must be a JSON object")
    return value


def only_keys(body: Mapping[str, Any], allowed: set[str], where: str = "the body") -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise Problem("validation", f"{where} has unknown fields: {', '.join(unknown)}")


def text(
    body: Mapping[str, Any],
    key: str,
    max_chars: int,
    *,
    where: str = "the body",
    required: bool = True,
    allow_empty: bool = False,
) -> str | None:
    value = body.get(key)
    if value is None:
        if required:
            raise Problem("validation", f"{where} needs {key!r} (a string)")
        return None
    if not isinstance(value, str):
        raise Problem("validation", f"{where}: {key!r} must be a string")
    if len(value) > max_chars:
        raise Problem("validation", f"{where}: {key!r} is over {max_chars} characters")
    if not allow_empty and not value.strip(" \t\n\r"):
        raise Problem("validation", f"{where}: {key!r} must not be empty")
    if any(ord(char) < 32 and char not in "\n\t\r" for char in value):
        raise Problem("validation", f"{where}: {key!r} holds control characters")
    return value


def required_text(
    body: Mapping[str, Any], key: str, max_chars: int, *, where: str = "the body"
) -> str:
    """A string field that must be there and not be empty."""
    value = text(body, key, max_chars, where=where)
    assert value is not None
    return value


def an_id(value: Any, what: str) -> str:
    if not isinstance(value, str) or not ID.match(value):
        raise Problem("validation", f"{what} must be 1-200 letters, digits or . _ ~ -")
    return value


def strings(body: Mapping[str, Any], key: str, limits: RestLimits, where: str) -> list[str] | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or len(value) > limits.max_list_items:
        raise Problem(
            "validation", f"{where}: {key!r} must be a list of at most {limits.max_list_items}"
        )
    for item in value:
        if not isinstance(item, str) or not item or len(item) > 200:
            raise Problem("validation", f"{where}: {key!r} holds strings of 1-200 characters")
    return value


DUE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")


def task_fields(
    body: Mapping[str, Any], limits: RestLimits, where: str, *, creating: bool
) -> dict[str, Any]:
    """The task fields of a create or update, checked; only those present."""
    allowed = {"title", "column", "position", "description", "assignees", "labels", "due"}
    if not creating:
        allowed.add("id")
    only_keys(body, allowed, where)
    out: dict[str, Any] = {}
    title = text(body, "title", limits.max_name_chars, where=where, required=creating)
    if title is not None:
        out["title"] = title
    column = text(body, "column", 200, where=where, required=creating)
    if column is not None:
        out["column"] = column
    position = text(body, "position", 200, where=where, required=False)
    if position is not None:
        out["position"] = position
    description = text(
        body,
        "description",
        limits.max_description_chars,
        where=where,
        required=False,
        allow_empty=True,
    )
    if description is not None:
        out["description"] = description
    for key in ("assignees", "labels"):
        found = strings(body, key, limits, where)
        if found is not None:
            out[key] = found
    if "due" in body:
        due = body["due"]
        if due is not None and (not isinstance(due, str) or not DUE.match(due)):
            raise Problem("validation", f"{where}: 'due' must be YYYY-MM-DD or null")
        out["due"] = due
    return out
