"""Moved to ``shared/state.py``; kept only for ``gateway/routing.py`` until it imports that."""

from shared.state import SharedState, SharedStateUnavailable

__all__ = ["SharedState", "SharedStateUnavailable"]
