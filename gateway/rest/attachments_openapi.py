"""The OpenAPI description of the attachment routes and of the embedded store's signed URLs."""

from __future__ import annotations

from typing import Any

from persistence.files import FileLimits, FileState

_ID = r"^[A-Za-z0-9._~-]{1,200}$"
_HEX = "^[0-9a-f]{32}$"
_PROBLEMS = {
    "default": {
        "description": "a problem (RFC 9457); docs/rest.md lists the types",
        "content": {
            "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
        },
    }
}


def _path(name: str, pattern: str = _ID) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": pattern},
    }


def _ok(status: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        status: {"description": description, "content": {"application/json": {"schema": schema}}},
        **_PROBLEMS,
    }


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def attachment_schemas(limits: FileLimits) -> dict[str, Any]:
    """The schemas the attachment routes answer with."""
    nullable_text = {"type": ["string", "null"]}
    presigned = {
        "type": "object",
        "required": ["method", "url", "headers", "expires_at"],
        "properties": {
            "method": {"type": "string", "enum": ["GET", "PUT"]},
            "url": {"type": "string"},
            "headers": {"type": "object", "additionalProperties": {"type": "string"}},
            "expires_at": {"type": "number"},
        },
    }
    states = [state.value for state in FileState]
    return {
        "PresignedRequest": presigned,
        "Attachment": {
            "type": "object",
            "required": ["id", "board_id", "task_id", "name", "state", "versions"],
            "properties": {
                "id": {"type": "string"},
                "board_id": {"type": "string"},
                "task_id": {"type": "string"},
                "name": {"type": "string", "maxLength": limits.max_name_chars},
                "state": {"type": "string", "enum": states},
                "size": {"type": ["integer", "null"]},
                "content_type": nullable_text,
                "version": nullable_text,
                "created_by": nullable_text,
                "created_at": {"type": "number"},
                "versions": {"type": "integer", "minimum": 0},
                "upload_id": {"type": "string"},
                "upload": _ref("PresignedRequest"),
                "download": _ref("PresignedRequest"),
            },
        },
        "AttachmentVersion": {
            "type": "object",
            "required": ["upload_id", "version", "size", "state"],
            "properties": {
                "upload_id": {"type": "string"},
                "version": nullable_text,
                "size": {"type": "integer"},
                "content_type": {"type": "string"},
                "state": {"type": "string", "enum": states},
                "uploaded_by": nullable_text,
                "created_at": {"type": "number"},
                "completed_at": {"type": ["number", "null"]},
                "scanned_at": {"type": ["number", "null"]},
                "scan_attempts": {"type": "integer"},
            },
        },
    }


def attachment_paths(limits: FileLimits) -> dict[str, Any]:
    """The attachment routes and the local store's URLs."""
    board, task = _path("board_id"), _path("task_id")
    attachment = _path("attachment_id")
    base = "/v1/boards/{board_id}/tasks/{task_id}/attachments"
    page = {
        "type": "object",
        "required": ["items", "next_cursor"],
        "properties": {
            "items": {"type": "array", "items": _ref("Attachment")},
            "next_cursor": {"type": ["string", "null"]},
        },
    }
    versions = {
        "type": "object",
        "required": ["items", "next_cursor"],
        "properties": {
            "items": {"type": "array", "items": _ref("AttachmentVersion")},
            "next_cursor": {"type": ["string", "null"]},
        },
    }
    new_upload = {
        "type": "object",
        "required": ["name", "size", "content_type"],
        "additionalProperties": False,
        "properties": {
            # Any name with a letter or digit is accepted: the server cuts and cleans it.
            "name": {"type": "string", "minLength": 1, "maxLength": 4096, "pattern": "[A-Za-z0-9]"},
            "size": {"type": "integer", "minimum": 1, "maximum": limits.max_bytes},
            "content_type": {"type": "string", "enum": list(limits.allowed_types)},
        },
    }
    signed = [
        _path("attachment_id", _HEX),
        _path("upload_id", _HEX),
        {"name": "expires", "in": "query", "required": True, "schema": {"type": "string"}},
        {"name": "size", "in": "query", "required": True, "schema": {"type": "string"}},
        {"name": "sig", "in": "query", "required": True, "schema": {"type": "string"}},
    ]
    return {
        base: {
            "get": {
                "summary": "A task's attachments, with their scan states",
                "parameters": [board, task],
                "responses": _ok("200", page, "the attachments"),
            },
            "post": {
                "summary": "Start an upload: a pre-signed request to send the file with",
                "parameters": [board, task],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": new_upload}},
                },
                "responses": _ok("201", _ref("Attachment"), "the attachment and its upload"),
            },
        },
        base + "/{attachment_id}": {
            "get": {
                "summary": "An attachment; with a pre-signed download once it is clean",
                "parameters": [board, task, attachment],
                "responses": _ok("200", _ref("Attachment"), "the attachment"),
            },
            "delete": {
                "summary": "Delete an attachment and every stored version",
                "parameters": [board, task, attachment],
                "responses": {"204": {"description": "deleted"}, **_PROBLEMS},
            },
        },
        base + "/{attachment_id}/complete": {
            "post": {
                "summary": "Say the upload is done: checked, then queued for its virus scan",
                "parameters": [board, task, attachment],
                "requestBody": {
                    "required": False,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "additionalProperties": False,
                                "properties": {"upload_id": {"type": "string", "pattern": _HEX}},
                            }
                        }
                    },
                },
                "responses": _ok("200", _ref("Attachment"), "the attachment, pending its scan"),
            }
        },
        base + "/{attachment_id}/versions": {
            "get": {
                "summary": "Every stored version of an attachment, oldest first",
                "parameters": [board, task, attachment],
                "responses": _ok("200", versions, "the versions"),
            }
        },
        "/v1/files/{attachment_id}/{upload_id}": {
            "put": {
                "summary": "The embedded store's signed upload URL (as handed out, unchanged)",
                "parameters": signed,
                "requestBody": {
                    "required": True,
                    "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
                },
                "responses": _ok(
                    "201",
                    {"type": "object", "properties": {"size": {"type": "integer"}}},
                    "stored",
                ),
            },
            "get": {
                "summary": "The embedded store's signed download URL (clean files only)",
                "parameters": signed,
                "responses": {
                    "200": {
                        "description": "the file",
                        "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
                    },
                    **_PROBLEMS,
                },
            },
        },
    }
