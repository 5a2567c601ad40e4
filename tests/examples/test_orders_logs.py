"""`orders serve --log-format json`: every line a JSON object, with the trace when there is one."""

import json
import logging
from pathlib import Path

import httpx
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from orders.logs import JsonFormatter

from .conftest import Place, Server


def record(message: str, *, error: BaseException | None = None) -> logging.LogRecord:
    exc_info = (type(error), error, error.__traceback__) if error is not None else None
    return logging.LogRecord("orders", logging.WARNING, __file__, 1, message, (), exc_info)


def test_a_line_carries_the_current_span(spans: InMemorySpanExporter) -> None:
    """Within a recording span the line names its trace and span; outside, neither."""
    del spans
    formatter = JsonFormatter()
    with trace.get_tracer("tests").start_as_current_span("work") as span:
        inside = json.loads(formatter.format(record("inside")))
    context = span.get_span_context()
    assert (inside["trace_id"], inside["span_id"]) == (
        f"{context.trace_id:032x}",
        f"{context.span_id:016x}",
    )
    outside = json.loads(formatter.format(record("outside %s")))
    assert outside.keys() == {"time", "level", "logger", "message"}
    assert (outside["level"], outside["logger"], outside["message"]) == (
        "WARNING",
        "orders",
        "outside %s",
    )


def test_an_exception_is_one_field_of_one_line() -> None:
    """A logged exception stays on the line, in `exception`."""
    try:
        raise ValueError("boom")  # noqa: TRY301 - a real traceback
    except ValueError as exc:
        line = JsonFormatter().format(record("failed", error=exc))
    assert "\n" not in line
    assert "ValueError: boom" in json.loads(line)["exception"]


def test_the_served_process_logs_only_json(tmp_path: Path) -> None:
    """Uvicorn's lines, the access log's and the service's own: each one a JSON object."""
    server = Server(
        Place("sqlite", tmp_path), extra=("--log-format", "json", "--log-level", "info")
    )
    server.start()
    try:
        assert httpx.get(f"{server.url}/health", timeout=30).status_code == 200
    finally:
        output = server.stop()
    lines = [line for line in output.splitlines() if line.strip()]
    assert lines
    entries = [json.loads(line) for line in lines]
    assert all({"time", "level", "logger", "message"} <= entry.keys() for entry in entries)
    assert any(
        entry["logger"] == "uvicorn.access" and "/health" in entry["message"] for entry in entries
    )
