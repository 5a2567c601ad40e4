"""`orders serve --otlp-endpoint`: traces and metrics reach a collector over OTLP/HTTP.

The collector is a small HTTP server in this test that decodes what it is sent
with OpenTelemetry's own protobuf messages, so the test reads spans, not bytes.
"""

import queue
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from .conftest import ADMIN, Place, Server


class Collector:
    """An OTLP/HTTP receiver: keeps each request's path, media type and body."""

    def __init__(self) -> None:
        self.received: queue.Queue[tuple[str, str, bytes]] = queue.Queue()
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.put((self.path, self.headers["Content-Type"], body))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                del args

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)

        self.spans: list[Span] = []
        self.metrics: list[str] = []

    def wait(self, until: Callable[[], bool], within: float = 30) -> None:
        """Decode what arrives until `until()` holds; fail after `within` seconds."""
        deadline = time.monotonic() + within
        while not until():
            left = deadline - time.monotonic()
            assert left > 0, f"not received in {within} s: {[s.name for s in self.spans]}"
            try:
                path, media_type, body = self.received.get(timeout=left)
            except queue.Empty:
                continue
            assert media_type == "application/x-protobuf"
            if path == "/v1/traces":
                for resource in ExportTraceServiceRequest.FromString(body).resource_spans:
                    for scope in resource.scope_spans:
                        self.spans.extend(scope.spans)
            else:
                assert path == "/v1/metrics"
                for batch in ExportMetricsServiceRequest.FromString(body).resource_metrics:
                    for scope in batch.scope_metrics:
                        self.metrics.extend(metric.name for metric in scope.metrics)

    def named(self, name: str) -> list[Span]:
        return [span for span in self.spans if span.name == name]


@pytest.fixture
def collector() -> Iterator[Collector]:
    running = Collector()
    running.thread.start()
    try:
        yield running
    finally:
        running.http.shutdown()
        running.http.server_close()


def test_a_request_s_spans_and_the_metrics_are_exported(
    tmp_path: Path, collector: Collector, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One POST: its command and append spans, one trace, parent and child; then metrics."""
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "200")
    server = Server(Place("sqlite", tmp_path), extra=("--otlp-endpoint", collector.url))
    server.start()
    try:
        product = {"name": "ink", "price": "1.00", "stock": 3}
        created = httpx.post(f"{server.url}/api/v1/products", json=product, headers=ADMIN)
        assert created.status_code == 201, created.text
        collector.wait(lambda: bool(collector.named("fabula.append")))
        (command,) = collector.named("fabula.command")
        (append,) = collector.named("fabula.append")
        assert append.trace_id == command.trace_id
        assert append.parent_span_id == command.span_id
        attributes = {kv.key: kv.value.string_value for kv in command.attributes}
        assert attributes["fabula.command.type"] == "CreateProduct"
        collector.wait(lambda: "fabula.events.appended" in collector.metrics)
    finally:
        server.stop()
