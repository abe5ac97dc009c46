"""The one settings object, read at the process edge from flags and ``BOARDCAST_*``.

Every setting is documented in docs/settings.md. Precedence: command-line flag,
then environment variable, then the default here.
"""

from __future__ import annotations

import dataclasses
import os
import re
import socket
from dataclasses import dataclass, field
from typing import Any

from actors.host import HostSettings

ENV_PREFIX = "BOARDCAST_"


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a Boardcast process can be told."""

    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: str = "./data"
    store: str = "sqlite"
    address: str | None = None  # a Ray cluster to join; None starts a local one
    backend: str = "ray"  # "ray", or "local" to run board hosts in the gateway process
    hosts: int = 2  # shared board hosts (Ray actors) to run
    cluster_name: str = "boardcast"  # prefix of Ray actor names: one deployment per name
    dedicated_boards: tuple[str, ...] = ()
    max_frame_bytes: int = 32 * 1024 * 1024
    send_buffer_bytes: int = 16 * 1024 * 1024
    heartbeat_seconds: float = 30.0
    idle_seconds: float = 30.0
    snapshot_every: int = 500
    max_unsaved_bytes: int = 64 * 1024 * 1024  # backlog kept while the store is down
    host_bind: str = "127.0.0.1"  # where board hosts listen for gateway streams
    redis: str | None = None  # shared state (sessions, directory cache); None: in-process
    gateway_id: str = ""  # how this gateway names itself in shared state; "" derives one
    presence_ttl_seconds: float = 15.0  # a silent gateway's sessions vanish after this
    log_level: str = "INFO"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def resolved_gateway_id(self) -> str:
        """``gateway_id``, or ``<hostname>-<port>`` made safe for shared-state keys."""
        if self.gateway_id:
            return self.gateway_id
        raw = f"{socket.gethostname()}-{self.port}-{os.getpid()}"
        return re.sub(r"[^A-Za-z0-9._-]", "-", raw)[:128]

    @property
    def host_settings(self) -> HostSettings:
        """The subset a board host needs."""
        return HostSettings(
            bind_host=self.host_bind,
            idle_seconds=self.idle_seconds,
            snapshot_every=self.snapshot_every,
            max_unsaved_bytes=self.max_unsaved_bytes,
        )

    @classmethod
    def load(cls, flags: dict[str, Any] | None = None) -> Settings:
        """Build settings from environment variables, overridden by non-None ``flags``."""
        values: dict[str, Any] = {}
        for spec in dataclasses.fields(cls):
            if spec.name == "extra":
                continue
            raw = os.environ.get(ENV_PREFIX + spec.name.upper())
            if raw is not None:
                values[spec.name] = _parse(spec.name, raw)
        for name, value in (flags or {}).items():
            if value is not None:
                values[name] = value
        return cls(**values)


def _parse(name: str, raw: str) -> Any:
    default = getattr(Settings(), name)
    if name in {"address", "redis"}:
        return raw or None
    if name == "dedicated_boards":
        return tuple(part for part in raw.split(",") if part)
    if isinstance(default, bool):
        return raw.lower() in {"1", "true", "yes", "on"}
    if isinstance(default, int):
        return int(raw)
    if isinstance(default, float):
        return float(raw)
    return raw
