"""`orders serve --log-format json`: one JSON object per log line, with the trace when there is one.

Each line holds `time` (UTC, ISO 8601), `level`, `logger` and `message`,
`exception` when one is logged, and `trace_id` and `span_id` (hex, as
OpenTelemetry shows them) when a recording span is current, so a log
line leads to its trace.
"""

import json
import logging
from datetime import UTC, datetime

__all__ = ["JsonFormatter", "json_log_config"]


class JsonFormatter(logging.Formatter):
    """Formats a record as one line of JSON."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a JSON object on one line."""
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        entry.update(_current_span())
        return json.dumps(entry, ensure_ascii=False, default=str)


def _current_span() -> dict[str, str]:
    """The current span's trace and span ids, if OpenTelemetry is installed and one is current."""
    try:
        from opentelemetry import trace  # noqa: PLC0415 - optional
    except ImportError:  # pragma: no cover - installed where the example is tested
        return {}
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return {}
    return {"trace_id": f"{context.trace_id:032x}", "span_id": f"{context.span_id:016x}"}


def json_log_config(level: str) -> dict[str, object]:
    """A `logging.config.dictConfig` (uvicorn's `log_config`): every logger's lines as JSON."""
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {"json": handler},
        "root": {"handlers": ["json"], "level": level.upper()},
        "loggers": {
            name: {"handlers": [], "level": level.upper(), "propagate": True}
            for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
        },
    }
