"""One HTTP request's trace: its server span, command and append; linked, the projection.

The server span is FastAPI's own (it makes one per request when
OpenTelemetry is set up); fabula's spans are its descendants.
"""

import httpx
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from tests.support.telemetry import named

from .conftest import ADDRESS, Shop

CALLER_TRACE = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"


async def test_a_request_its_command_append_and_the_projection_batch(
    spans: InMemorySpanExporter, shop: Shop, client: httpx.AsyncClient
) -> None:
    """The caller's traceparent is continued; the read model's batch links to the command."""
    customer = await shop.customer()
    spans.clear()
    headers = {"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"}
    body = {"customer_id": customer, "shipping_address": ADDRESS}
    created = await client.post("/orders", json=body, headers=headers)
    assert created.status_code == 201, created.text
    finished = spans.get_finished_spans()
    (server,) = [s for s in finished if s.kind is SpanKind.SERVER]
    assert server.name == "POST /api/v1/orders"
    assert server.parent is not None
    assert (f"{server.context.trace_id:032x}", f"{server.parent.span_id:016x}") == (
        CALLER_TRACE,
        CALLER_SPAN,
    )
    parents = {s.context.span_id: s.parent.span_id for s in finished if s.parent}
    (command,) = named(spans, "fabula.command")
    ancestor = command.context.span_id
    while ancestor in parents and ancestor != server.context.span_id:
        ancestor = parents[ancestor]
    assert ancestor == server.context.span_id, "the command is not within the request's span"
    appends = [
        s for s in named(spans, "fabula.append") if s.context.trace_id == server.context.trace_id
    ]
    assert appends
    # The service answered once its read model reflected the order: the batch is there,
    # in a trace of the projector's own, linked to the command that wrote the event.
    batches = [
        s for s in named(spans, "fabula.projection")
        if any(link.context.span_id == command.context.span_id for link in s.links)
    ]  # fmt: skip
    assert batches
    assert batches[0].context.trace_id != server.context.trace_id


async def test_a_refused_request_is_not_an_error(
    spans: InMemorySpanExporter, client: httpx.AsyncClient
) -> None:
    """A 422 is the caller's error, not the server's; no command ran."""
    answer = await client.post("/orders", json={"customer_id": "nope"})
    assert answer.status_code == 422
    (server,) = [s for s in spans.get_finished_spans() if s.kind is SpanKind.SERVER]
    assert server.status.status_code is StatusCode.UNSET
    assert named(spans, "fabula.command") == []
