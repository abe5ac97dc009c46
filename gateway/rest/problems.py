"""Errors as RFC 9457 problem details, each with a named type.

Every error the REST API answers is a :class:`Problem`: a status, a ``type``
(``urn:boardcast:problem:<name>``, listed in docs/rest.md), a short ``title``
that never changes for a type, and a ``detail`` for this occurrence. Handlers
raise it; :func:`problem_middleware` turns it, and anything unexpected, into
an ``application/problem+json`` response. Unexpected errors say nothing of
their cause to the client (it is logged).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from crdt.close_codes import CloseCode
from crdt.errors import DecryptionFailed

log = logging.getLogger("boardcast.rest")

#: name -> (status, title): every problem type the API can answer.
PROBLEM_TYPES: dict[str, tuple[int, str]] = {
    "bad-request": (400, "The request is malformed"),
    "invalid-json": (400, "The body is not valid JSON"),
    "validation": (422, "The request's values are not acceptable"),
    "unauthorized": (401, "Authentication required"),
    "invalid-credentials": (401, "Wrong user name, password or code"),
    "mfa-required": (401, "A second factor is needed"),
    "forbidden": (403, "Not allowed"),
    "read-only": (403, "This session may not change the board"),
    "not-found": (404, "No such resource"),
    "method-not-allowed": (405, "Method not allowed"),
    "not-acceptable": (406, "No acceptable representation"),
    "conflict": (409, "The request conflicts with the resource's state"),
    "too-many-webhooks": (409, "The project has as many webhooks as allowed"),
    "precondition-failed": (412, "The resource changed since it was read"),
    "precondition-required": (428, "If-Match is required for this change"),
    "too-large": (413, "The body is too large"),
    "too-many-items": (413, "Too many items in one request"),
    "unsupported-media-type": (415, "Unsupported content type"),
    "invalid-update": (422, "The Yjs update cannot be applied"),
    "board-full": (507, "The board is at its maximum size"),
    "unavailable": (503, "The board is unavailable; retry later"),
    "rate-limited": (429, "Too many requests; retry after the time given"),
    "too-many-connections": (429, "Too many open connections from this client"),
    "request-timeout": (408, "The request was not received in time"),
    "file-too-large": (413, "The file is larger than allowed"),
    "too-many-attachments": (409, "The task holds as many attachments as allowed"),
    "url-expired": (403, "The signed URL has expired"),
    "signature-invalid": (403, "The URL's signature does not hold"),
    "not-uploaded": (409, "The file has not been uploaded in full"),
    "size-mismatch": (422, "The stored file's size is not the declared size"),
    "internal": (500, "Internal error"),
}

PROBLEM_MEDIA_TYPE = "application/problem+json"


def problem_type(name: str) -> str:
    """The ``type`` URI of a named problem."""
    return f"urn:boardcast:problem:{name}"


class Problem(Exception):
    """An error answered as a problem details document."""

    def __init__(self, name: str, detail: str, **extensions: Any) -> None:
        super().__init__(detail)
        status, title = PROBLEM_TYPES[name]
        self.name = name
        self.status = status
        self.title = title
        self.detail = detail
        self.extensions = extensions
        self.headers: dict[str, str] = {}

    def response(self, instance: str | None = None) -> web.Response:
        """The problem as an HTTP response."""
        body: dict[str, Any] = {
            "type": problem_type(self.name),
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if instance is not None:
            body["instance"] = instance
        body.update(self.extensions)
        return web.json_response(
            body, status=self.status, content_type=PROBLEM_MEDIA_TYPE, headers=self.headers
        )


#: What a closed board session's code means for an HTTP caller.
_CLOSE_CODE_PROBLEMS: dict[int, str] = {
    CloseCode.BAD_MESSAGE: "invalid-update",
    CloseCode.INVALID_UPDATE: "invalid-update",
    CloseCode.OUT_OF_SYNC: "invalid-update",
    CloseCode.UPDATE_TOO_LARGE: "too-large",
    CloseCode.BOARD_FULL: "board-full",
    CloseCode.STORE_UNAVAILABLE: "unavailable",
    CloseCode.TRY_AGAIN_LATER: "unavailable",
    CloseCode.SERVICE_RESTART: "unavailable",
    CloseCode.UNAUTHORIZED: "unauthorized",
    CloseCode.FORBIDDEN: "forbidden",
}


def problem_for_close_code(code: int | None, reason: str) -> Problem:
    """The problem an HTTP caller gets for a board refusing it with ``code``."""
    return Problem(_CLOSE_CODE_PROBLEMS.get(code or 0, "unavailable"), reason, close_code=code)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer every error under ``/v1`` as a problem document."""
    if not request.path.startswith("/v1"):
        return await handler(request)
    try:
        return await handler(request)
    except Problem as exc:
        return exc.response(request.path)
    except web.HTTPMethodNotAllowed as exc:
        allowed = sorted(exc.allowed_methods)
        found = Problem(
            "method-not-allowed", f"{request.method} is not allowed here", allowed=allowed
        )
        found.headers["Allow"] = ", ".join(allowed)
        return found.response(request.path)
    except web.HTTPNotFound:
        return Problem("not-found", f"nothing at {request.path}").response(request.path)
    except web.HTTPRequestEntityTooLarge as exc:
        return Problem("too-large", exc.text or "the body is too large").response(request.path)
    except web.HTTPException:
        raise
    except DecryptionFailed:
        # Stored data that does not decrypt (a missing key, damaged bytes): the operator's
        # problem, and not the caller's fault; the log says which record.
        log.exception("%s %s: stored data does not decrypt", request.method, request.path)
        return Problem("unavailable", "stored data cannot be read right now").response(request.path)
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return Problem("internal", "the request failed; see the server log").response(request.path)
