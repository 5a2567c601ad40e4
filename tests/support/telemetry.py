"""OpenTelemetry's SDK for the tests: spans and metrics recorded in memory, one provider a session.

OpenTelemetry allows one global provider per process. Its sampler (the
gate) records only while a test holds the `spans` fixture: elsewhere
every span is dropped, as with no SDK, so other tests' events carry no
trace headers.
"""

from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from opentelemetry import metrics, trace
from opentelemetry.context import Context
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanKind
from opentelemetry.util.types import Attributes


class Gate(Sampler):
    """Samples every span while open, none while closed."""

    def __init__(self) -> None:
        self.open = False

    def should_sample(  # noqa: PLR0917 - the SDK's signature
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: Any = None,
    ) -> SamplingResult:
        del parent_context, trace_id, name, kind, links, trace_state
        decision = Decision.RECORD_AND_SAMPLE if self.open else Decision.DROP
        return SamplingResult(decision, attributes)

    def get_description(self) -> str:
        return "the telemetry tests' gate"


GATE = Gate()
EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="session")
def provider() -> TracerProvider:
    made = TracerProvider(sampler=GATE)
    made.add_span_processor(SimpleSpanProcessor(EXPORTER))
    trace.set_tracer_provider(made)
    return made


@pytest.fixture
def spans(provider: TracerProvider) -> Iterator[InMemorySpanExporter]:
    del provider
    EXPORTER.clear()
    GATE.open = True
    try:
        yield EXPORTER
    finally:
        GATE.open = False
        EXPORTER.clear()


READER = InMemoryMetricReader()


@pytest.fixture(scope="session")
def meters() -> InMemoryMetricReader:
    metrics.set_meter_provider(MeterProvider(metric_readers=[READER]))
    return READER


def named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    """The finished spans called `name`, in the order they ended."""
    return [s for s in exporter.get_finished_spans() if s.name == name]
