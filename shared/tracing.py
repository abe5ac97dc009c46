"""OpenTelemetry traces, off unless an OTLP/HTTP endpoint is configured.

Spans are per operation, never per socket or frame: a REST request (gateway),
a server-side transaction on the board's host, a board load, a group commit to
the store. The gateway's span context travels to the host inside the function
it sends (:class:`TracedCall`, a W3C ``traceparent`` carrier), so a REST write
is one trace across gateway, host and store, on Ray as in one process.

While tracing is off every helper here returns at once: no span objects, no
context lookups.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Span, Tracer

log = logging.getLogger("boardcast.tracing")

T = TypeVar("T")
A = TypeVar("A")


class _State:
    """The process's tracer, once configured (OpenTelemetry is imported only then)."""

    tracer: Tracer | None = None
    provider: Any = None
    propagator: Any = None
    endpoint: str = ""


def enabled() -> bool:
    """Whether this process exports spans."""
    return _State.tracer is not None


def configure_tracing(endpoint: str, *, service_name: str = "boardcast") -> None:
    """Export this process's spans to an OTLP/HTTP traces ``endpoint`` (``""``: off).

    Idempotent for the same endpoint; a different one replaces the exporter.
    """
    if not endpoint or endpoint == _State.endpoint:
        return
    # Imported here: a process that never traces never loads the SDK.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    shutdown_tracing()
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    # Spans leave in batches from a background thread; the event loop never waits on them.
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    _State.provider = provider
    _State.tracer = provider.get_tracer("boardcast")
    _State.propagator = TraceContextTextMapPropagator()
    _State.endpoint = endpoint
    log.info("exporting traces to %s", endpoint)


def flush_tracing(timeout_seconds: float = 5.0) -> None:
    """Send the spans ended so far (tests, and before a process exits)."""
    if _State.provider is not None:
        _State.provider.force_flush(int(timeout_seconds * 1000))


def shutdown_tracing() -> None:
    """Flush and stop exporting; tracing is off again."""
    provider = _State.provider
    _State.tracer, _State.provider, _State.endpoint = None, None, ""
    if provider is not None:
        provider.shutdown()


def current_carrier() -> dict[str, str] | None:
    """The current span context as W3C trace headers, or None when not tracing."""
    if _State.tracer is None:
        return None
    carrier: dict[str, str] = {}
    _State.propagator.inject(carrier)
    return carrier or None


def current_context() -> Context | None:
    """The current context, kept to parent a later span (None when not tracing)."""
    if _State.tracer is None:
        return None
    from opentelemetry import context, trace

    if not trace.get_current_span().is_recording():
        return None
    return context.get_current()


#: What :func:`span` returns while tracing is off: one reusable no-op context.
_NO_SPAN: contextlib.nullcontext[None] = contextlib.nullcontext(None)


def span(
    name: str,
    *,
    carrier: Mapping[str, str] | None = None,
    parent: Context | None = None,
    links: tuple[Context, ...] = (),
    attributes: Mapping[str, str | int | float | bool] | None = None,
) -> AbstractContextManager[Span | None]:
    """A span around the block, current inside it; a shared no-op when tracing is off.

    Args:
        name: the operation.
        carrier: W3C headers of a remote parent (another process's span).
        parent: a local context to parent it, if not the current one.
        links: contexts of other operations this one also serves (a group commit's writers).
        attributes: recorded on the span.
    """
    tracer = _State.tracer
    if tracer is None:
        return _NO_SPAN
    from opentelemetry import trace

    if carrier:
        parent = _State.propagator.extract(dict(carrier))
    span_links = [
        trace.Link(trace.get_current_span(linked).get_span_context()) for linked in links if linked
    ]
    return tracer.start_as_current_span(
        name, context=parent, links=span_links, attributes=dict(attributes or {})
    )


@dataclass(frozen=True, slots=True)
class TracedCall(Generic[T]):
    """A board function that carries its caller's trace context to the board's host.

    Pickled with the function on Ray; a host that does not look for
    ``trace_context`` just calls it, so peers without tracing still work.
    """

    function: Callable[[Any], T]
    trace_context: dict[str, str]

    def __call__(self, board: Any) -> T:
        """Run the wrapped function."""
        return self.function(board)


def with_trace_context(function: Callable[[A], T]) -> Callable[[A], T]:
    """``function``, wrapped to carry the current trace context (unchanged when not tracing)."""
    carrier = current_carrier()
    if carrier is None:
        return function
    return TracedCall(function, carrier)


def trace_context_of(function: object) -> dict[str, str] | None:
    """The trace context a function sent to a host carries, if any."""
    carried = getattr(function, "trace_context", None)
    return carried if isinstance(carried, dict) else None
