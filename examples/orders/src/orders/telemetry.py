"""OpenTelemetry's SDK for `orders serve`: metrics for `GET /metrics`, traces over OTLP if asked.

Needs the example's `otel` extra (`pip install -e 'examples/orders[otel]'`):
the SDK, its Prometheus reader and its OTLP exporter. Without it,
`/metrics` answers 404 and `--otlp-endpoint` is refused.
"""

import importlib.util

__all__ = ["available", "metrics_text", "set_up"]


def available() -> bool:
    """Whether the SDK and the Prometheus reader are installed."""
    return all(
        importlib.util.find_spec(name) is not None
        for name in ("opentelemetry.sdk", "opentelemetry.exporter.prometheus")
    )


def set_up(otlp_endpoint: str | None) -> None:
    """Set up the process's meter provider (Prometheus, plus OTLP if given) and, with OTLP, tracing.

    Raises:
        ImportError: The `otel` extra is not installed.
    """
    from opentelemetry import metrics, trace  # noqa: PLC0415 - the optional SDK
    from opentelemetry.exporter.prometheus import PrometheusMetricReader  # noqa: PLC0415
    from opentelemetry.sdk.metrics import MeterProvider  # noqa: PLC0415
    from opentelemetry.sdk.metrics.export import (  # noqa: PLC0415
        MetricReader,
        PeriodicExportingMetricReader,
    )
    from opentelemetry.sdk.resources import Resource  # noqa: PLC0415

    resource = Resource.create({"service.name": "orders"})
    readers: list[MetricReader] = [PrometheusMetricReader()]
    if otlp_endpoint is not None:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import (  # noqa: PLC0415
            OTLPMetricExporter,
        )
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
            OTLPSpanExporter,
        )
        from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
        from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: PLC0415

        base = otlp_endpoint.rstrip("/")
        readers.append(
            PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=f"{base}/v1/metrics"))
        )
        provider = TracerProvider(resource=resource)
        provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{base}/v1/traces"))
        )
        trace.set_tracer_provider(provider)
    metrics.set_meter_provider(MeterProvider(metric_readers=readers, resource=resource))


def metrics_text() -> tuple[bytes, str]:
    """The process's metrics in Prometheus' text format, and its media type."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest  # noqa: PLC0415

    return generate_latest(), CONTENT_TYPE_LATEST
