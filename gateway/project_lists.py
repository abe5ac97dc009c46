"""After a project changes: the directory index and its members' lists are written from it.

A project's document is the truth (:mod:`crdt.project_doc`). The directory index
(for administrators and for finding a board's project) and each member's list of
projects (:mod:`crdt.project_list`, what the board app shows live) are copies.
:func:`propagate` reads the project once and writes both, only where they differ,
so it can run after any change, any number of times, and a later run corrects
what an earlier one did not finish (a crash between the writes). People who just
left the project are named in ``former``, so their lists drop it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from functools import partial

from actors.cluster import Cluster
from crdt.project_doc import project_doc_id
from crdt.project_list import list_doc_id
from crdt.projects import DIRECTORY_BOARD
from gateway.rest.project_commands import (
    ProjectListing,
    project_listing,
    reindex_project,
    write_listing,
)

log = logging.getLogger("boardcast.projects")

#: Lists written at the same time after one change.
LIST_WRITES_AT_ONCE = 8


async def propagate(
    cluster: Cluster, project_id: str, *, former: Iterable[str] = ()
) -> ProjectListing | None:
    """Copy the project into the directory index and every concerned person's list."""
    outcome = await cluster.run(project_doc_id(project_id), project_listing)
    listing = outcome.value
    await cluster.run(
        DIRECTORY_BOARD, partial(reindex_project, project_id=project_id, listing=listing)
    )
    people = set(former) | (set(listing.members) if listing is not None else set())
    await write_lists(cluster, project_id, listing, people)
    return listing


async def write_lists(
    cluster: Cluster, project_id: str, listing: ProjectListing | None, people: Iterable[str]
) -> None:
    """Write the project into each person's list as ``listing`` says."""
    gate = asyncio.Semaphore(LIST_WRITES_AT_ONCE)

    async def write(user: str) -> None:
        shown = listing.for_member(user) if listing is not None else None
        async with gate:
            try:
                await cluster.run(
                    list_doc_id(user),
                    partial(write_listing, project_id=project_id, listing=shown),
                )
            except Exception:
                # A list is a copy: the project's next change writes it again.
                log.exception("could not write %s's list of projects", user)

    await asyncio.gather(*(write(user) for user in sorted(set(people))))
