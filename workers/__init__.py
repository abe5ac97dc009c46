"""Workers: consumers of the event log (analytics, webhooks, ...), run by one runtime."""

from workers.runtime import Worker

__all__ = ["Worker"]
