"""Open the shared state a URL names: the one module that knows every implementation.

The interface (``shared/state.py``) imports no implementation; the implementations import it.
"""

from __future__ import annotations

from shared.memory import MemorySharedState
from shared.redis_state import RedisSharedState
from shared.state import DEFAULT_PREFIX, SharedState

#: The setting that carries the URL given to :func:`open_shared_state`.
SHARED_STATE_SETTING = "BOARDCAST_SHARED_STATE"


def open_shared_state(url: str | None, *, prefix: str = DEFAULT_PREFIX) -> SharedState:
    """Open the shared state a URL names.

    Args:
        url: None or ``"memory"`` (this process only), or a Redis URL (``redis://host:port/db``,
            ``rediss://...``, ``unix:///path/redis.sock``).
        prefix: prepended to every Redis key.
    """
    if url is None or url.strip() in {"", "memory"}:
        return MemorySharedState()
    url = url.strip()
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisSharedState(url, prefix=prefix)
    raise ValueError(
        f"{SHARED_STATE_SETTING}={url!r} is not a shared-state URL;"
        " expected 'memory' or 'redis://host:port/db'"
    )
