"""One person's list of projects: a read-only Yjs document the server keeps for them.

The board app shows a person their projects and boards live from it, over the
standard socket (the stock y-websocket provider opens it like a board). It has
the directory's shape, limited to the person's projects, with their role::

    projects: Y.Map  project id -> Y.Map {name, position, role, created_at}
    boards:   Y.Map  board id   -> Y.Map {title, project, position}

The truth is each project's own document (:mod:`crdt.project_doc`): whenever a
project's name, boards or members change, the server writes the lists of the
people concerned from it (:func:`apply_listing`), so a list is a copy that a
later write of the same project always corrects. Its id, :func:`list_doc_id`, is
``boardcast.projects-of.<user id>``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pycrdt import Doc, Map

from crdt.projects import plain_entries, text, upsert_fields

#: Ids of the per-person list documents start with this.
LIST_PREFIX = "boardcast.projects-of."


def list_doc_id(user_id: str) -> str:
    """The document id of ``user_id``'s list of projects."""
    return LIST_PREFIX + user_id


def user_of_list(doc_id: str) -> str | None:
    """Whose list a document id names, or None if it is not a list document."""
    if doc_id.startswith(LIST_PREFIX) and len(doc_id) > len(LIST_PREFIX):
        return doc_id[len(LIST_PREFIX) :]
    return None


def apply_listing(doc: Doc[Any], project_id: str, listing: Mapping[str, Any] | None) -> None:
    """Make the list show ``project_id`` as ``listing`` says (None: not at all).

    ``listing`` is ``{"name", "position", "role", "created_at", "boards": [{"id", "title",
    "position"}, ...]}``. Only what differs is written, so writing the same
    listing again changes nothing.
    """
    projects: Map[Any] = doc.get("projects", type=Map)
    boards: Map[Any] = doc.get("boards", type=Map)
    with doc.transaction():
        listed = {
            key for key, value in plain_entries(boards) if text(value.get("project")) == project_id
        }
        if listing is None:
            if project_id in projects:
                del projects[project_id]
            for board_id in listed:
                del boards[board_id]
            return
        upsert_fields(
            projects,
            project_id,
            {
                "name": str(listing["name"]),
                "position": str(listing["position"]),
                "role": str(listing["role"]),
                "created_at": str(listing.get("created_at", "")),
            },
        )
        wanted = {str(board["id"]): board for board in listing["boards"]}
        for board_id in listed - wanted.keys():
            del boards[board_id]
        for board_id, board in wanted.items():
            upsert_fields(
                boards,
                board_id,
                {
                    "title": str(board["title"]),
                    "project": project_id,
                    "position": str(board["position"]),
                },
            )


def listed_projects(doc: Doc[Any]) -> list[dict[str, str]]:
    """The projects the list shows (``id``, ``name``, ``position``, ``role``, ``created_at``)."""
    projects: Map[Any] = doc.get("projects", type=Map)
    found = [
        {
            "id": key,
            "name": text(value.get("name")),
            "position": text(value.get("position")),
            "role": text(value.get("role")),
            "created_at": text(value.get("created_at")),
        }
        for key, value in plain_entries(projects)
    ]
    return sorted(found, key=lambda entry: (entry["position"], entry["id"]))
