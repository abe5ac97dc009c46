"""``boardcast events``: the event log's consumers, their lag, and replays.

``boardcast events lag`` prints each consumer's committed offset and lag as JSON.
``boardcast events replay --consumer NAME --from OFFSET`` sets the consumer back to OFFSET so
that it handles every event after it again. For ``analytics``, whose effects are idempotent
(a board's metrics skip events they have folded in), a replay first forgets the metrics, then
derives them again here from the events after OFFSET (``--from 0``: the whole log). Run it
with the deployment stopped, like ``reindex``: a worker running meanwhile could save a batch
it read before the replay.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from gateway.settings import Settings
from persistence.event_log import ManagedEventLog
from persistence.event_log_factory import event_log_for
from persistence.factory import open_store
from persistence.store import BoardStore
from workers.analytics import ANALYTICS_CONSUMER, AnalyticsWorker
from workers.analytics_store import analytics_store_for
from workers.runtime import RuntimeSettings, WorkerRuntime


def add_event_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``events lag`` and ``events replay``."""
    events = commands.add_parser("events", help="the event log: consumers' lag, replays")
    actions = events.add_subparsers(dest="action", required=True)
    for name, text in (
        ("lag", "each consumer's committed offset and lag"),
        ("replay", "hand a consumer every event after an offset again"),
    ):
        action = actions.add_parser(name, help=text)
        action.add_argument("--data-dir", help="embedded store directory (default ./data)")
        action.add_argument("--store", help="store URL (default sqlite)")
        if name == "replay":
            action.add_argument("--consumer", required=True, help="the consumer's name")
            action.add_argument(
                "--from", dest="offset", type=int, required=True, help="replay after this offset"
            )


def run_events_command(args: argparse.Namespace, settings: Settings) -> int:
    """Run ``events ACTION``; the exit status."""
    return asyncio.run(_run(args, settings))


async def _run(args: argparse.Namespace, settings: Settings) -> int:
    store = open_store(settings.store, data_dir=settings.data_dir)
    try:
        event_log = event_log_for(store)
    except NotImplementedError:
        print(f"the store {settings.store!r} keeps no event log", file=sys.stderr)
        return 2
    try:
        if args.action == "lag":
            print(json.dumps(await lag_report(event_log), sort_keys=True))
            return 0
        if args.offset < 0:
            print("--from must be 0 or more", file=sys.stderr)
            return 2
        handled = await replay(store, event_log, args.consumer, args.offset)
        print(json.dumps({"consumer": args.consumer, "from": args.offset, "handled": handled}))
        return 0
    finally:
        await event_log.close()
        await store.close()


async def lag_report(event_log: ManagedEventLog) -> dict[str, object]:
    """The log's offsets and every consumer's committed offset and lag."""
    last = await event_log.last_offset()
    return {
        "first_offset": await event_log.first_offset(),
        "last_offset": last,
        "consumers": {
            name: {"committed": offset, "lag": max(0, last - offset)}
            for name, offset in sorted((await event_log.consumers()).items())
        },
    }


async def replay(store: BoardStore, event_log: ManagedEventLog, consumer: str, offset: int) -> int:
    """Rewind ``consumer`` to ``offset``; analytics are derived again here. Events handled."""
    await event_log.rewind(consumer, offset)
    if consumer != ANALYTICS_CONSUMER:
        return 0  # handled by that worker when the deployment next runs
    metrics = analytics_store_for(store)
    try:
        worker = AnalyticsWorker(metrics)
        await worker.reset()
        runtime = WorkerRuntime(event_log, [worker], RuntimeSettings())
        return await runtime.catch_up(worker)
    finally:
        await metrics.close()
