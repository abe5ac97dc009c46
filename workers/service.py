"""The workers of a deployment in one place: the event log, the runtime, retention.

:class:`WorkerService` is a plain asyncio class: ``boardcast serve`` runs it in its own
process on the local backend, and :mod:`actors.ray_backend` wraps it in the one worker actor
on Ray (restarted after a crash; it resumes from the committed offsets).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from persistence.event_log import ManagedEventLog, Retention
from persistence.event_log_factory import event_log_for
from persistence.factory import open_store
from persistence.store import BoardStore
from workers.analytics import AnalyticsWorker
from workers.analytics_store import AnalyticsStore, analytics_store_for
from workers.runtime import RuntimeSettings, Worker, WorkerRuntime

log = logging.getLogger("boardcast.workers")


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """What the worker service needs; built from ``Settings`` (docs/settings.md)."""

    runtime: RuntimeSettings = field(default_factory=RuntimeSettings)
    retention: Retention = field(default_factory=Retention)
    retention_sweep_seconds: float = 60.0
    # "module:factory" specs of more workers to run here (webhooks, file scans...): each
    # factory takes the board store and returns a WorkerPlugin.
    plugins: tuple[str, ...] = ()
    # How much the workers' own process lowers its CPU priority (os.nice), when they have
    # one (the Ray worker actor): opens and edits come first, workers take what is idle.
    nice: int = 0


class WorkerPlugin(Protocol):
    """More workers for the service, with whatever loops they run beside ``handle``."""

    workers: Sequence[Worker]

    async def start(self) -> None:
        """Start the plugin's own loops (before its workers get events)."""
        ...

    async def stop(self) -> None:
        """Stop them and release what they hold."""
        ...


def load_plugin(spec: str, store: BoardStore) -> WorkerPlugin:
    """Call the ``module:factory`` that ``spec`` names with ``store``."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"worker plugin {spec!r}: expected 'module:factory'")
    factory = getattr(importlib.import_module(module_name), attribute)
    plugin: WorkerPlugin = factory(store)
    return plugin


class WorkerService:
    """Opens the log and the workers' stores beside a board store, and runs every worker."""

    def __init__(self, store: BoardStore, settings: WorkerSettings | None = None) -> None:
        self.settings = settings or WorkerSettings()
        self.store = store
        self.event_log: ManagedEventLog = event_log_for(store)
        self.analytics_store: AnalyticsStore = analytics_store_for(store)
        self.analytics = AnalyticsWorker(self.analytics_store)
        self.plugins = [load_plugin(spec, store) for spec in self.settings.plugins]
        self.workers: list[Worker] = [self.analytics]
        for plugin in self.plugins:
            self.workers += plugin.workers
        self.runtime = WorkerRuntime(self.event_log, self.workers, self.settings.runtime)
        self._sweeping: asyncio.Task[None] | None = None

    @classmethod
    def open(
        cls, store_url: str, data_dir: str, settings: WorkerSettings | None = None
    ) -> WorkerService:
        """The service for the store a URL names (as hosts open it)."""
        return cls(open_store(store_url, data_dir=data_dir), settings)

    async def start(self) -> None:
        """Start the plugins, every worker and the retention sweep (idempotent)."""
        if self._sweeping is not None:
            return
        for plugin in self.plugins:
            await plugin.start()
        self.runtime.start()
        if self._sweeping is None:
            self._sweeping = asyncio.get_running_loop().create_task(self._sweep())

    async def stop(self) -> None:
        """Stop the workers (a batch in flight comes again next time) and close the stores."""
        if self._sweeping is not None:
            self._sweeping.cancel()
            await asyncio.gather(self._sweeping, return_exceptions=True)
            self._sweeping = None
        await self.runtime.stop()
        for plugin in self.plugins:
            with contextlib.suppress(Exception):
                await plugin.stop()
        await self.analytics_store.close()
        await self.event_log.close()

    async def stats(self) -> dict[str, Any]:
        """Lag per consumer, the log's offsets, and this process (for crash tests)."""
        return {
            "pid": os.getpid(),
            "last_offset": await self.event_log.last_offset(),
            "lags": self.runtime.lags(),
            "consumers": {
                name: {
                    "committed": state.committed,
                    "lag": state.lag,
                    "batches": state.handled_batches,
                    "failures": state.failures,
                    "last_error": state.last_error,
                    "updated_at": state.updated_at,
                }
                for name, state in self.runtime.states.items()
            },
        }

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self.settings.retention_sweep_seconds)
            with contextlib.suppress(Exception):
                gone = await self.event_log.trim(self.settings.retention, now=time.time())
                if gone:
                    log.info("event log retention dropped %d events", gone)
