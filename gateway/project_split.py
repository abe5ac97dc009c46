"""Split a directory of the older layout into one document per project, when a gateway starts.

Before project documents, every project's members and every board's narrowed
roles lived in the directory document. :func:`split_directory` copies each
project into its own document (:func:`~gateway.rest.project_commands.adopt_project`,
one transaction, skipped for a document already written), writes the members'
lists of projects from it, and only then marks the directory split (dropping the
``members`` it kept). Every step is idempotent: a crash halfway leaves the
directory unmarked and the next start does it all again, skipping what was done;
once marked (or while the directory is empty), a start reads it and stops.
Several gateways starting at once may all run it: a document adopted by one is
skipped by the others.
"""

from __future__ import annotations

import asyncio
import logging
from functools import partial

from actors.cluster import Cluster
from crdt.project_doc import project_doc_id
from crdt.projects import DIRECTORY_BOARD
from gateway.project_lists import propagate
from gateway.rest.project_commands import adopt_project, legacy_projects, mark_split

log = logging.getLogger("boardcast.projects")

#: How long a starting gateway waits for the split before it serves anyway (it goes on).
START_WAIT_SECONDS = 30.0

#: Seconds between attempts when a split could not finish (the cluster was not ready).
RETRY_SECONDS = 5.0


async def split_directory(cluster: Cluster) -> int:
    """Split the directory if it still has the older layout; how many projects were adopted."""
    outcome = await cluster.run(DIRECTORY_BOARD, legacy_projects)
    legacy = outcome.value
    if not legacy:
        # Split already, or nothing in it yet: a new deployment's directory stays unwritten
        # until its first project (a later start with projects in it marks it, adopting none).
        return 0
    adopted = 0
    for project in legacy:
        made = await cluster.run(
            project_doc_id(project.entry.id), partial(adopt_project, legacy=project)
        )
        adopted += bool(made.value)
        await propagate(cluster, project.entry.id)
    await cluster.run(DIRECTORY_BOARD, mark_split)
    if legacy:
        log.info("split the directory: %d projects, %d adopted now", len(legacy), adopted)
    return adopted


async def split_until_done(cluster: Cluster, *, retry_seconds: float = RETRY_SECONDS) -> None:
    """:func:`split_directory`, tried again every ``retry_seconds`` until it succeeds."""
    while True:
        try:
            await split_directory(cluster)
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("splitting the directory into project documents failed; retrying")
        await asyncio.sleep(retry_seconds)
