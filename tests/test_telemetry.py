"""OpenTelemetry traces and metrics, recorded in memory by the SDK, on real stores.

The SDK's set-up (one provider a session, recording only for the tests
that ask) is in `tests/support/telemetry.py`.
"""

import asyncio
import logging
import sqlite3
from pathlib import Path
from typing import Any

import psycopg
import pytest
from opentelemetry import trace
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import fabula
from fabula import IntegrationContract, IntegrationEvent, Relay
from fabula.postgres import PostgresEventStore
from fabula.sqlite import SQLiteEventStore

from .support.postgres import new_schema, require_postgres
from .support.reactions import Note, Noted, NoteRefused, make_bus
from .support.telemetry import named


class NoteCount(fabula.Projection[sqlite3.Connection]):
    """Counts notes per tally, in the store's own database."""

    name = "note_count"

    def setup(self, tx: sqlite3.Connection) -> None:
        tx.execute("CREATE TABLE IF NOT EXISTS notes (tally TEXT PRIMARY KEY, n INTEGER)")

    @fabula.handles
    def _noted(self, event: Noted, tx: sqlite3.Connection) -> None:
        tx.execute(
            "INSERT INTO notes VALUES (?, 1) ON CONFLICT (tally) DO UPDATE SET n = n + 1",
            (event.aggregate_id,),
        )


class Echo(fabula.Reaction):
    """Notes every note of tally `t` again in tally `echo`."""

    name = "echo"

    @fabula.reacts
    async def _noted(self, event: Noted, ctx: fabula.ReactionContext) -> None:
        if event.aggregate_id == "t":
            await ctx.send(Note(tally="echo", source=event.source))


@pytest.fixture
async def store(tmp_path: Path) -> Any:
    opened = SQLiteEventStore(tmp_path / "e.db")
    yield opened
    await opened.close()


class TestTraces:
    async def test_a_command_its_append_and_the_projection_that_applied_it(
        self, spans: InMemorySpanExporter, store: SQLiteEventStore
    ) -> None:
        """The append is the command's child; the projection's batch links to the command."""
        bus = make_bus(store)
        await bus.dispatch(Note(tally="t", source=1))
        (command,) = named(spans, "fabula.command")
        (append,) = named(spans, "fabula.append")
        assert command.attributes is not None
        assert command.attributes["fabula.command.type"] == "Note"
        assert append.parent is not None
        assert append.parent.span_id == command.context.span_id
        assert append.attributes == {
            "fabula.store": "sqlite",
            "fabula.event_count": 1,
            "fabula.streams": 1,
            "fabula.stream": "t",
            "fabula.version": 1,
            "fabula.position": 1,
        }
        (recorded,) = await store.read_all()
        traceparent = recorded.event.metadata.headers["traceparent"]
        assert traceparent.startswith(
            f"00-{command.context.trace_id:032x}-{command.context.span_id:016x}-"
        )
        # The projector runs later, outside the command's trace: it links to it.
        await fabula.Projector(store, [NoteCount()]).catch_up()
        (batch,) = named(spans, "fabula.projection")
        assert batch.kind is SpanKind.CONSUMER
        assert batch.context.trace_id != command.context.trace_id
        assert [link.context.span_id for link in batch.links] == [command.context.span_id]
        assert batch.attributes is not None
        assert batch.attributes["fabula.event_count"] == 1

    async def test_a_reaction_links_to_the_writer_and_its_command_follows(
        self, spans: InMemorySpanExporter, store: SQLiteEventStore
    ) -> None:
        """A reaction's span links to the span that wrote its event; its command is its child."""
        bus = make_bus(store)
        await bus.dispatch(Note(tally="t", source=7))
        (written,) = named(spans, "fabula.command")
        await fabula.Reactor(store, bus, [Echo()]).catch_up()
        (reaction,) = [
            s
            for s in named(spans, "fabula.reaction")
            if s.attributes and s.attributes["fabula.stream"] == "t"
        ]
        assert [link.context.span_id for link in reaction.links] == [written.context.span_id]
        assert reaction.attributes is not None
        assert reaction.attributes["fabula.reaction"] == "echo"
        assert reaction.attributes["fabula.position"] == 1
        sent = [s for s in named(spans, "fabula.command") if s is not written]
        (echo,) = [s for s in sent if s.parent and s.parent.span_id == reaction.context.span_id]
        assert echo.context.trace_id == reaction.context.trace_id

    async def test_a_failing_command_is_an_error_span(
        self, spans: InMemorySpanExporter, store: SQLiteEventStore
    ) -> None:
        """A command that raises leaves a span with an error status and the exception."""
        with pytest.raises(NoteRefused):
            await make_bus(store).dispatch(Note(tally="t", source=1, amount="refuse"))
        (command,) = named(spans, "fabula.command")
        assert command.status.status_code is StatusCode.ERROR
        assert [event.name for event in command.events] == ["exception"]

    async def test_loads_and_queries_have_spans(
        self, spans: InMemorySpanExporter, store: SQLiteEventStore
    ) -> None:
        """Loading an aggregate and dispatching a query are spans too."""
        await make_bus(store).dispatch(Note(tally="t", source=1))  # the load fails: a new tally
        await make_bus(store).dispatch(Note(tally="t", source=2))
        missing, load = named(spans, "fabula.load")
        assert missing.status.status_code is StatusCode.ERROR
        assert load.attributes is not None
        assert (load.attributes["fabula.stream"], load.attributes["fabula.version"]) == ("t", 1)

        class Count(fabula.Query[int]):
            pass

        queries = fabula.QueryBus()

        async def count(query: Count) -> int:
            del query
            return 1

        queries.register(Count, count)
        assert await queries.dispatch(Count()) == 1
        (query,) = named(spans, "fabula.query")
        assert query.attributes is not None
        assert str(query.attributes["fabula.query.type"]).endswith(".Count")

    async def test_nothing_is_kept_without_a_recording_span(self, store: SQLiteEventStore) -> None:
        """With spans dropped (as with no SDK), events carry no trace headers."""
        await make_bus(store).dispatch(Note(tally="t", source=1))
        (recorded,) = await store.read_all()
        assert "traceparent" not in recorded.event.metadata.headers

    async def test_nothing_is_made_inside_a_trace_left_out(
        self, spans: InMemorySpanExporter, store: SQLiteEventStore
    ) -> None:
        """Under a span the sampler left out: no fabula span, no trace headers."""
        left_out = trace.NonRecordingSpan(
            trace.SpanContext(trace_id=0x1F, span_id=0x2F, is_remote=True)
        )
        with trace.use_span(left_out):
            await make_bus(store).dispatch(Note(tally="t", source=1))
        assert not [span.name for span in spans.get_finished_spans()]
        (recorded,) = await store.read_all()
        assert "traceparent" not in recorded.event.metadata.headers
        await make_bus(store).dispatch(Note(tally="t", source=2))
        assert named(spans, "fabula.command")


class TestAcrossServices:
    async def test_the_relay_passes_its_context_on_and_the_inbox_keeps_it(
        self, spans: InMemorySpanExporter, store: SQLiteEventStore, tmp_path: Path
    ) -> None:
        """Writer → relay (linked) → CloudEvents traceparent → inbox → consumer (linked)."""
        bus = make_bus(store)
        await bus.dispatch(Note(tally="t", source=3))
        (written,) = named(spans, "fabula.command")
        sent: list[bytes] = []

        class Kept:
            target = "a list"

            async def publish(self, message: IntegrationEvent) -> None:
                sent.append(message.to_json())

            async def close(self) -> None:
                pass

        contract = IntegrationContract(source="urn:test:tally")
        contract.add(Noted, "tally.v1.Noted", lambda e: {"source": e.source})
        await fabula.Reactor(store, bus, [Relay("out", contract, Kept())]).catch_up()
        (publish,) = named(spans, "fabula.publish")
        (relayed,) = named(spans, "fabula.reaction")
        assert [link.context.span_id for link in relayed.links] == [written.context.span_id]
        message = IntegrationEvent.from_json(sent[0])
        assert message.extensions["traceparent"].startswith(
            f"00-{publish.context.trace_id:032x}-{publish.context.span_id:016x}-"
        )
        consumer = SQLiteEventStore(tmp_path / "consumer.db")
        try:
            handled = asyncio.Event()

            async def take(received: IntegrationEvent, ctx: fabula.ReactionContext) -> None:
                del received, ctx
                handled.set()

            inbox = fabula.Inbox("in", {"tally.v1.Noted": take})
            await inbox.receive(consumer, sent)
            await fabula.Reactor(consumer, make_bus(consumer), [inbox]).catch_up()
            assert handled.is_set()
        finally:
            await consumer.close()
        taken = [s for s in named(spans, "fabula.reaction") if s is not relayed]
        (inboxed,) = taken
        assert [link.context.span_id for link in inboxed.links] == [publish.context.span_id]


def points(reader: InMemoryMetricReader, name: str) -> list[Any]:
    """The data points of metric `name` now."""
    data = reader.get_metrics_data()
    if data is None:
        return []
    return [
        point
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == name
        for point in metric.data.data_points
    ]


def total(reader: InMemoryMetricReader, name: str, store: str) -> float:
    return float(
        sum(
            p.value
            for p in points(reader, name)
            if (p.attributes or {}).get("fabula.store") == store
        )
    )


class TestMetrics:
    async def test_appends_and_conflicts_are_counted(
        self, meters: InMemoryMetricReader, store: SQLiteEventStore
    ) -> None:
        """Each append adds its events and its duration; a refused one counts a conflict."""
        before = total(meters, "fabula.events.appended", "sqlite")
        conflicts = total(meters, "fabula.concurrency.conflicts", "sqlite")
        bus = make_bus(store)
        await bus.dispatch(Note(tally="t", source=1))
        await bus.dispatch(Note(tally="t", source=2))
        assert total(meters, "fabula.events.appended", "sqlite") == before + 2
        durations = [
            p for p in points(meters, "fabula.append.duration")
            if (p.attributes or {}).get("fabula.store") == "sqlite"
        ]  # fmt: skip
        assert durations
        assert durations[0].count >= 2
        with pytest.raises(fabula.ConcurrencyError):
            await store.append("t", [Noted(source=3, amount="1")], expected_version=0)
        assert total(meters, "fabula.concurrency.conflicts", "sqlite") == conflicts + 1

    async def test_the_monitor_measures_lag_in_events_and_seconds(
        self, meters: InMemoryMetricReader, store: SQLiteEventStore
    ) -> None:
        """A projector behind by three events: lag 3 and an age; caught up, 0 and 0."""
        bus = make_bus(store)
        for n in range(3):
            await bus.dispatch(Note(tally="t", source=n))
        projector = fabula.Projector(store, [NoteCount()])
        monitor = fabula.Monitor(store, projector=projector, interval=60)
        await asyncio.sleep(0.05)
        (behind,) = await monitor.measure()
        assert (behind.kind, behind.name, behind.lag) == ("projection", "note_count", 3)
        assert behind.age >= 0.05
        gauges = {
            (p.attributes or {}).get("fabula.projection"): p.value
            for p in points(meters, "fabula.lag")
        }
        assert gauges["note_count"] == 3
        await projector.catch_up()
        (caught_up,) = await monitor.measure()
        assert (caught_up.lag, caught_up.age) == (0, 0.0)

    async def test_lag_gauges_follow_a_projector_stopped_and_restarted(
        self, meters: InMemoryMetricReader, store: SQLiteEventStore
    ) -> None:
        """Running: lag 0. Stopped while two events arrive: 2, and an age that grows. Back: 0."""
        bus = make_bus(store)
        projector = fabula.Projector(store, [NoteCount()])
        watching = fabula.Monitor(store, projector=projector, interval=0.02)
        monitor = asyncio.create_task(watching.run())

        def gauge(name: str) -> float:
            (point,) = [
                p for p in points(meters, name)
                if (p.attributes or {}).get("fabula.projection") == "note_count"
            ]  # fmt: skip
            return float(point.value)

        async def until(name: str, holds: Any) -> float:
            for _ in range(500):
                await asyncio.sleep(0.02)
                value = gauge(name) if points(meters, name) else None
                if value is not None and holds(value):
                    return value
            raise AssertionError(f"{name} stayed at {value}")

        running = asyncio.create_task(projector.run())
        try:
            await bus.dispatch(Note(tally="t", source=1))
            await projector.wait_for(1, timeout=10)
            await until("fabula.lag", lambda lag: lag == 0)
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
            await bus.dispatch(Note(tally="t", source=2))
            await bus.dispatch(Note(tally="t", source=3))
            await until("fabula.lag", lambda lag: lag == 2)
            first = await until("fabula.lag.age", lambda age: age > 0)
            await until("fabula.lag.age", lambda age: age >= first + 0.1)
            running = asyncio.create_task(projector.run())
            await until("fabula.lag", lambda lag: lag == 0)
            assert gauge("fabula.lag.age") == 0.0
        finally:
            running.cancel()
            monitor.cancel()
            await asyncio.gather(running, monitor, return_exceptions=True)

    async def test_the_monitor_measures_a_reactions_lag_and_parked_events(
        self, meters: InMemoryMetricReader, store: SQLiteEventStore
    ) -> None:
        """A reaction's lag is measured like a projection's, with its parked events."""
        del meters
        bus = make_bus(store)
        await bus.dispatch(Note(tally="t", source=1))
        reactor = fabula.Reactor(store, bus, [Echo()])
        monitor = fabula.Monitor(store, reactor=reactor)
        (reading,) = await monitor.measure()
        assert (reading.kind, reading.name, reading.lag, reading.parked) == (
            "reaction",
            "echo",
            1,
            0,
        )


class TestHorizon:
    async def test_a_transaction_held_open_is_reported_and_warned_about(
        self,
        meters: InMemoryMetricReader,
        schemas: list[str],
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """An open write transaction is the horizon: its pid and age, a warning, the gauge."""
        url = require_postgres()
        schemas.append(new_schema())
        store = PostgresEventStore(url, schema=schemas[-1])
        await store.open()
        try:
            monitor = fabula.Monitor(store, horizon_warning=0.05)
            async with await psycopg.AsyncConnection.connect(url) as holder:
                await holder.execute("SET application_name = 'fabula-test-holder'")
                await holder.execute("BEGIN")
                await holder.execute("SELECT txid_current()")  # now it has a write xid
                await asyncio.sleep(0.1)
                with caplog.at_level(logging.WARNING, logger="fabula.monitor"):
                    await monitor.measure()
                horizon = monitor.horizon
                assert horizon is not None
                assert (horizon.pid, horizon.application_name) == (
                    holder.info.backend_pid,
                    "fabula-test-holder",
                )
                assert horizon.age >= 0.1
                assert f"pid {holder.info.backend_pid}" in caplog.text
                assert "fabula-test-holder" in caplog.text
                (gauge,) = points(meters, "fabula.postgres.horizon.age")
                assert gauge.value >= 0.1
                await holder.execute("ROLLBACK")
            await monitor.measure()
            assert monitor.horizon is None or monitor.horizon.pid != holder.info.backend_pid
        finally:
            await store.close()
