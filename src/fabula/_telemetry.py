"""OpenTelemetry traces, when `opentelemetry-api` is installed (`fabula[otel]`); nothing otherwise.

Spans: `fabula.command` and `fabula.query` (dispatch), `fabula.append`,
`fabula.load` (an aggregate), `fabula.projection` (one batch) and
`fabula.reaction` (one event; relays and inboxes are reactions). The
W3C trace context of the span that records an event is kept in the
event's metadata headers (`traceparent`, `tracestate`), so a projection
or reaction that handles the event later, in another process, links its
span to the one that wrote it. A relay sends its own span's context on
as the CloudEvents `traceparent` extension, and an inbox keeps it with
the message it received.

Without the package every function here returns at once (and the
decorators return what they decorate); with the API but no SDK set up,
no span is made either (the API's would record nothing).
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

try:
    from opentelemetry import trace as _trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError:  # pragma: no cover - the extra is installed where this is tested
    _trace = None  # type: ignore[assignment]

from fabula._metrics import counting, record_append, record_conflict
from fabula.exceptions import ConcurrencyError

if TYPE_CHECKING:
    from fabula._store import AppendResult, RecordedEvent

__all__ = [
    "TRACE_HEADERS",
    "enabled",
    "event_links",
    "installed",
    "projection_batch",
    "span",
    "trace_headers",
    "traced_append",
]

P = ParamSpec("P")
R = TypeVar("R")

TRACE_HEADERS = ("traceparent", "tracestate")
"""The metadata headers (and CloudEvents extensions) that carry W3C trace context."""

MAX_LINKS = 32
"""The most events a projection batch's span links to (the first of each trace)."""

if _trace is not None:
    _TRACER = _trace.get_tracer("fabula")
    _PROPAGATOR = TraceContextTextMapPropagator()


def installed() -> bool:
    """Whether OpenTelemetry's API can be imported (the `otel` extra)."""
    return _trace is not None


_SDK = False  # a tracer provider of an SDK was set up (it cannot be taken back)


def enabled() -> bool:
    """Whether spans can be recorded: the API is installed and an SDK's provider is set up.

    Without an SDK the API's spans record nothing, so none are made: the
    command path then pays for this check alone.
    """
    global _SDK  # noqa: PLW0603 - once true, for good
    if not _SDK and _trace is not None:
        _SDK = not isinstance(_trace.get_tracer_provider(), _trace.ProxyTracerProvider)
    return _SDK


def trace_headers() -> dict[str, str]:
    """The current span's W3C trace context as headers (empty unless a span is recording).

    A span that is not recording (no SDK, or not sampled) leaves nothing in
    the events: a link to it would lead nowhere.
    """
    if not enabled() or not _trace.get_current_span().is_recording():
        return {}
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier


def event_links(events: Iterable[RecordedEvent], limit: int = MAX_LINKS) -> list[Any]:
    """Links to the spans that wrote `events` (their `traceparent` headers), at most `limit`."""
    if _trace is None:
        return []
    links: list[Any] = []
    seen: set[str] = set()
    for recorded in events:
        parent = recorded.event.metadata.headers.get("traceparent")
        if parent is None or parent in seen:
            continue
        seen.add(parent)
        context = _trace.get_current_span(_PROPAGATOR.extract(recorded.event.metadata.headers))
        span_context = context.get_span_context()
        if span_context.is_valid:
            links.append(_trace.Link(span_context))
            if len(links) >= limit:
                break
    return links


def span(
    name: str,
    attributes: Mapping[str, str | int] | None = None,
    *,
    links: Sequence[Any] = (),
    kind: str = "internal",
) -> contextlib.AbstractContextManager[Any]:
    """A span named `name`, current while the block runs; None without an SDK.

    None too inside a span that is not recording (a trace the sampler left
    out): a child of it would record nothing under the usual parent-based
    sampling, and sampling one alone would give a trace without its root.
    An exception leaving the block is recorded on the span, which is then
    marked as an error.
    """
    if not enabled():
        return contextlib.nullcontext()
    parent = _trace.get_current_span()
    if not parent.is_recording() and parent.get_span_context().is_valid:
        return contextlib.nullcontext()
    return _TRACER.start_as_current_span(
        name, kind=_KINDS[kind], attributes=attributes, links=links or None
    )


if _trace is not None:
    _KINDS = {
        "internal": _trace.SpanKind.INTERNAL,
        "producer": _trace.SpanKind.PRODUCER,
        "consumer": _trace.SpanKind.CONSUMER,
    }


def projection_batch(
    projection: str, events: list[RecordedEvent], position: int
) -> contextlib.AbstractContextManager[Any]:
    """The `fabula.projection` span of one batch, linked to the spans that wrote its events."""
    if not enabled():
        return contextlib.nullcontext()
    attributes: dict[str, str | int] = {
        "fabula.projection": projection,
        "fabula.event_count": len(events),
        "fabula.position": position,
    }
    return span("fabula.projection", attributes, links=event_links(events), kind="consumer")


def traced_append(
    store: str,
) -> Callable[[Callable[P, Coroutine[Any, Any, R]]], Callable[P, Coroutine[Any, Any, R]]]:
    """Wrap a store's `append` or `append_many` in a `fabula.append` span, and count it.

    Without OpenTelemetry the method is returned as it is.
    """

    def decorate(
        method: Callable[P, Coroutine[Any, Any, R]],
    ) -> Callable[P, Coroutine[Any, Any, R]]:
        if _trace is None:
            return method

        @functools.wraps(method)
        async def traced(*args: P.args, **kwargs: P.kwargs) -> R:
            if not enabled() and not counting():
                return await method(*args, **kwargs)
            if len(args) > 2 and isinstance(args[2], Iterator):  # noqa: PLR2004 - counted below
                args = (*args[:2], tuple(args[2]), *args[3:])  # type: ignore[assignment]
            with span("fabula.append", {"fabula.store": store}) as current:
                started = time.perf_counter()
                try:
                    result = await method(*args, **kwargs)
                except ConcurrencyError:
                    record_conflict(store)
                    raise
                count = _count(args)
                record_append(store, count, time.perf_counter() - started)
                if current is not None and current.is_recording():
                    _describe_append(current, result, count)
                return result

        return traced

    return decorate


def _count(args: tuple[Any, ...]) -> int:
    """How many events `append(self, stream_id, events)` or `append_many(self, appends)` holds."""
    if len(args) > 2 and isinstance(args[1], str):  # noqa: PLR2004 - self, stream_id, events
        return len(args[2])
    if len(args) > 1:
        return sum(len(getattr(part, "events", ())) for part in args[1])
    return 0


def _describe_append(current: Any, result: object, count: int) -> None:  # noqa: ANN401
    results: list[AppendResult] = result if isinstance(result, list) else [result]  # type: ignore[list-item]
    if not results:
        return
    last = results[-1]
    current.set_attributes(
        {
            "fabula.event_count": count,
            "fabula.streams": len(results),
            "fabula.stream": last.stream_id,
            "fabula.version": last.version,
            "fabula.position": last.position,
        }
    )
