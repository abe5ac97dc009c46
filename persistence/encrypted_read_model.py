"""The read model with its text sealed at rest: :class:`EncryptedTaskIndex` around any index.

What is sealed: a task's ``title`` and ``description`` (context ``["task-title", board,
task]`` and ``["task-description", board, task]``). The REST queries filter and order by the
other fields, so they stay as they are: board, task, project and column ids, assignee
ids, labels, due dates, positions and times. Those are ids a board chose, dates and
sort keys, not what people wrote about their work (labels are the exception worth
naming: short tags, kept for the label filter).

A query that searches the text (``text=``) or orders by title cannot be answered by the
inner index, which holds only ciphertext: the wrapper reads the rows matching the other
filters page by page (``SCAN_PAGE`` at a time), opens them and filters and orders them
itself. That costs a scan of the matching rows (all of them for the title order) where
the plaintext index used SQL; every other query costs what it did plus opening the rows
of one page.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from persistence.encrypted import KeySource, context
from persistence.keyring import is_encrypted_text
from persistence.read_model import IndexWrite, TaskFilter, TaskIndex, TaskRow, matches, sort_key

#: Rows read from the inner index per round when the wrapper filters or orders itself.
SCAN_PAGE = 500


def title_context(board_id: str, task_id: str) -> bytes:
    """The associated data of a task's sealed title."""
    return context("task-title", board_id, task_id)


def description_context(board_id: str, task_id: str) -> bytes:
    """The associated data of a task's sealed description."""
    return context("task-description", board_id, task_id)


@dataclass
class ResealCount:
    """What :meth:`EncryptedTaskIndex.reseal` did."""

    rewritten: int = 0
    current: int = 0  # already sealed under the active key


class EncryptedTaskIndex(TaskIndex):
    """A task index whose titles and descriptions are sealed before the inner index.

    Args:
        inner: the index that stores the rows.
        keys: where the key ring comes from.
        encrypt: seal what is written; False only opens what was sealed before.
    """

    def __init__(self, inner: TaskIndex, keys: KeySource, *, encrypt: bool = True) -> None:
        self.inner = inner
        self.keys = keys
        self.encrypt = encrypt

    def seal_row(self, row: TaskRow) -> TaskRow:
        """``row`` with its text fields sealed under the active key."""
        if not self.encrypt:
            return row
        return replace(
            row,
            title=self.keys.seal_text(row.title, title_context(row.board_id, row.task_id)),
            description=self.keys.seal_text(
                row.description, description_context(row.board_id, row.task_id)
            ),
        )

    def open_row(self, row: TaskRow) -> TaskRow:
        """``row`` as it was written (plaintext rows from before pass unchanged)."""
        plain = not (is_encrypted_text(row.title) or is_encrypted_text(row.description))
        if plain and not self.keys.refuse_plaintext:
            return row
        return replace(
            row,
            title=self.keys.open_text(row.title, title_context(row.board_id, row.task_id)),
            description=self.keys.open_text(
                row.description, description_context(row.board_id, row.task_id)
            ),
        )

    async def write(self, writes: Sequence[IndexWrite]) -> None:
        """See :meth:`TaskIndex.write`."""
        sealed = [
            replace(write, upserts=[self.seal_row(row) for row in write.upserts])
            for write in writes
        ]
        await self.inner.write(sealed)

    async def rows(self, query: TaskFilter) -> list[TaskRow]:
        """See :meth:`TaskIndex.rows`."""
        if query.text is None and query.sort != "title":
            return [self.open_row(row) for row in await self.inner.rows(query)]
        if query.sort == "title":
            return await self._rows_by_title(query)
        return await self._rows_with_text(query)

    async def _rows_with_text(self, query: TaskFilter) -> list[TaskRow]:
        # The inner order is the asked one: filter the text here, a page at a time.
        found: list[TaskRow] = []
        after = query.after
        while True:
            page = await self.inner.rows(replace(query, text=None, after=after, limit=SCAN_PAGE))
            for raw in page[:SCAN_PAGE]:
                opened = self.open_row(raw)
                if matches(opened, query):
                    found.append(opened)
                    if len(found) > query.limit:
                        return found
            if len(page) <= SCAN_PAGE:
                return found
            after = sort_key(page[SCAN_PAGE - 1], query.sort)

    async def _rows_by_title(self, query: TaskFilter) -> list[TaskRow]:
        # Titles are ciphertext in the inner index: every matching row is read and ordered here.
        candidates = [
            row for row in await self.all_rows(replace(query, text=None)) if matches(row, query)
        ]
        candidates.sort(key=lambda row: sort_key(row, "title"))
        if query.after is not None:
            after = query.after
            candidates = [row for row in candidates if sort_key(row, "title") > after]
        return candidates[: query.limit + 1]

    async def all_rows(self, query: TaskFilter) -> list[TaskRow]:
        """Every row the inner index matches to ``query``'s id and date filters, opened."""
        found: list[TaskRow] = []
        after: tuple[str, str, str] | None = None
        while True:
            page = await self.inner.rows(
                replace(query, text=None, sort="board", after=after, limit=SCAN_PAGE)
            )
            found += [self.open_row(row) for row in page[:SCAN_PAGE]]
            if len(page) <= SCAN_PAGE:
                return found
            after = sort_key(page[SCAN_PAGE - 1], "board")

    async def reseal(self) -> ResealCount:
        """Rewrite every row not sealed under the active key (plaintext ones included).

        Each row is written back at its own version, so a newer row a host wrote meanwhile
        wins; a crash part-way leaves rows under the old or the new key, all readable.
        """
        count = ResealCount()
        active = self.keys.for_writing().active_key_id
        for row in await self._raw_rows():
            ring = self.keys.for_writing()
            if (
                ring.text_key_id(row.title) == active
                and ring.text_key_id(row.description) == active
            ):
                count.current += 1
                continue
            opened = self.open_row(row)
            await self.inner.write(
                [IndexWrite(row.board_id, row.version, upserts=[self.seal_row(opened)])]
            )
            count.rewritten += 1
        return count

    async def _raw_rows(self) -> list[TaskRow]:
        found: list[TaskRow] = []
        after: tuple[str, str, str] | None = None
        while True:
            page = await self.inner.rows(TaskFilter(sort="board", after=after, limit=SCAN_PAGE))
            found += page[:SCAN_PAGE]
            if len(page) <= SCAN_PAGE:
                return found
            after = sort_key(page[SCAN_PAGE - 1], "board")

    async def board_version(self, board_id: str) -> int:
        """See :meth:`TaskIndex.board_version`."""
        return await self.inner.board_version(board_id)

    async def generation(self) -> int:
        """See :meth:`TaskIndex.generation`."""
        return await self.inner.generation()

    async def close(self) -> None:
        """See :meth:`TaskIndex.close`."""
        await self.inner.close()
