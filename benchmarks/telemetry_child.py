"""One measurement of `bench_telemetry.py`: python telemetry_child.py MODE DATABASE COUNT.

MODE is `without` (opentelemetry cannot be imported), `api` (no SDK),
`sdk` (every span and metric recorded in memory) or `sampled` (the same,
with one trace in ten sampled). Prints commands per second.
"""

from __future__ import annotations

import asyncio
import importlib.abc
import importlib.machinery
import sys
import time
from collections.abc import Sequence
from types import ModuleType
from typing import Any


class _Blocked(importlib.abc.MetaPathFinder):
    """Makes `opentelemetry` unimportable, as if the extra were not installed."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None = None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        del path, target
        if fullname == "opentelemetry" or fullname.startswith("opentelemetry."):
            raise ImportError(fullname)
        return None


def _set_up_sdk(*, ratio: float = 1.0) -> None:
    from opentelemetry import metrics, trace  # noqa: PLC0415 - only in this mode
    from opentelemetry.sdk.metrics import MeterProvider  # noqa: PLC0415
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: PLC0415
    from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
    from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: PLC0415
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: PLC0415
        InMemorySpanExporter,
    )
    from opentelemetry.sdk.trace.sampling import (  # noqa: PLC0415
        ParentBased,
        TraceIdRatioBased,
    )

    provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(ratio)))
    provider.add_span_processor(BatchSpanProcessor(InMemorySpanExporter()))
    trace.set_tracer_provider(provider)
    metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))


async def _measure(path: str, count: int) -> float:
    from telemetry_domain import Count, make_bus  # noqa: PLC0415

    from fabula.sqlite import SQLiteEventStore  # noqa: PLC0415 - after the mode is set up

    async with SQLiteEventStore(path, synchronous="NORMAL") as store:
        bus = make_bus(store)
        for n in range(50):  # warm up
            await bus.dispatch(Count(counter=f"warm-{n}", idempotency_key=f"warm-{n}"))

        async def worker(k: int) -> None:
            for n in range(k, count, 8):
                await bus.dispatch(Count(counter=f"c-{n % 200}", idempotency_key=f"k-{n}"))

        start = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(8)))
        return count / (time.perf_counter() - start)


def main(argv: list[str]) -> None:
    """Measure in the mode asked for; print the rate."""
    mode, path, count = argv[0], argv[1], int(argv[2])
    if mode == "without":
        sys.meta_path.insert(0, _Blocked())
    elif mode == "sdk":
        _set_up_sdk()
    elif mode == "sampled":
        _set_up_sdk(ratio=0.1)
    from fabula import _telemetry  # noqa: PLC0415

    expected = {
        "without": (False, False),
        "api": (True, False),
        "sdk": (True, True),
        "sampled": (True, True),
    }[mode]
    found: Any = (_telemetry.installed(), _telemetry.enabled())
    if found != expected:
        msg = f"mode {mode}: OpenTelemetry installed, recording = {found}"
        raise SystemExit(msg)
    print(asyncio.run(_measure(path, count)))


if __name__ == "__main__":
    main(sys.argv[1:])
