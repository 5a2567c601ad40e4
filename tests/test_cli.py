"""The `fabula` command, against real SQLite and PostgreSQL stores the orders demo filled."""

import asyncio
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import uuid4

import attrs
import pytest

import fabula
from fabula._inspect import StoredEvent
from fabula.cli import main
from fabula.cli._output import _Out, _show_events
from fabula.postgres import PostgresEventStore
from fabula.sqlite import SQLiteEventStore
from fabula.testing import Deposited

from .support import personal  # noqa: F401 - sets ORDERS_KEK for the demo and the commands
from .support.postgres import HeldWriter, drop_schemas, new_schema, require_postgres

# What `orders demo` stores: 4 orders (15 events), 2 tracked products' stock
# (4 events) and the fulfilment processes of the 2 orders submitted (4 steps).
DEMO_EVENTS = 23
DEMO_STREAMS = 8
ORDER_EVENTS = 15  # what the order read model's projection handles
DEMO_TYPES = {
    "orders.OrderCreated": 4,
    "orders.OrderItemAdded": 6,
    "orders.OrderSubmitted": 2,
    "orders.OrderConfirmed": 1,
    "orders.OrderCancelled": 2,
    "orders.StockAdded": 2,
    "orders.StockReserved": 1,
    "orders.StockReservationRefused": 1,
    "fabula.ProcessStepped": 4,
}


class Store:
    """A store the orders demo filled, as `--store` (and `--schema`) arguments."""

    def __init__(self, kind: str, store: str, schema: str = "public") -> None:
        self.kind, self.store, self.schema = kind, store, schema
        self.args = ["--store", store, "--schema", schema, "--kek-env", "ORDERS_KEK"]

    def __repr__(self) -> str:
        return f"<Store {self.kind}>"


def demo(*database: str) -> None:
    result = subprocess.run(  # noqa: S603 - our own command
        [sys.executable, "-m", "orders.cli", "demo", "--database", *database],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def fill(kind: str, folder: Path) -> Iterator[Store]:
    """Run the orders demo into a new store of `kind`; drop it afterwards."""
    if kind == "sqlite":
        path = str(folder / "orders.db")
        demo(path)
        yield Store("sqlite", path)
        return
    url, schema = require_postgres(), new_schema()
    demo(url, "--schema", schema)
    try:
        yield Store("postgresql", url, schema)
    finally:
        drop_schemas([schema])


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def filled(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Store]:
    """A store the demo filled, shared by the tests that only read it."""
    yield from fill(request.param, tmp_path_factory.mktemp("cli"))


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A store the demo filled, for one test that writes to it."""
    yield from fill(request.param, tmp_path)


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


class TestReading:
    def test_info(self, filled: Store, capsys: pytest.CaptureFixture[str]) -> None:
        """info names the kind and counts the demo's events and streams."""
        code, out, _ = run(capsys, *filled.args, "info")
        assert code == 0
        assert f"kind            {filled.kind}" in out
        assert f"events          {DEMO_EVENTS}" in out
        code, out, _ = run(capsys, *filled.args, "info", "--json")
        (info,) = json_lines(out)
        assert (info["events"], info["streams"], info["kind"]) == (
            DEMO_EVENTS,
            DEMO_STREAMS,
            filled.kind,
        )
        assert info["size_bytes"] > 0
        assert info["schema_version"] >= 1
        _, log, _ = run(capsys, *filled.args, "log", "--json")
        assert info["head_position"] == json_lines(log)[-1]["position"]

    def test_streams_prefix_and_limit(
        self, filled: Store, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """streams lists every stream; --prefix and --limit narrow it."""
        _, out, _ = run(capsys, *filled.args, "streams", "--json")
        streams = json_lines(out)
        assert sorted(s["events"] for s in streams) == [2, 2, 2, 2, 2, 3, 4, 6]
        first = streams[0]["stream_id"]
        _, out, _ = run(capsys, *filled.args, "streams", "--json", "--prefix", first[:12])
        assert [s["stream_id"] for s in json_lines(out)] == [first]
        _, out, _ = run(capsys, *filled.args, "streams", "--limit", "2")
        assert len(out.splitlines()) == 1 + 2  # the header and two streams

    def test_streams_say_what_kind_each_is(
        self, filled: Store, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Each stream is shown with its first event's type: orders, stock and processes."""
        _, out, _ = run(capsys, *filled.args, "streams", "--json")
        kinds = {s["stream_id"]: s["first_type"] for s in json_lines(out)}
        assert sorted(kinds.values()) == [
            *["fabula.ProcessStepped"] * 2,
            *["orders.OrderCreated"] * 4,
            *["orders.StockAdded"] * 2,
        ]
        assert all(s.startswith("process:fulfilment:") for s, k in kinds.items() if "Process" in k)
        _, table, _ = run(capsys, *filled.args, "streams")
        header, *rows = table.splitlines()
        assert header.endswith("kind (first event)")
        assert sorted(row.split()[-1] for row in rows) == sorted(kinds.values())

    def test_a_class_name_for_a_stored_type_is_explained(
        self, filled: Store, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """--type OrderCreated (the class) finds nothing: the error names the stored name."""
        code, out, err = run(capsys, *filled.args, "log", "--type", "OrderCreated")
        assert (code, out) == (2, "")
        assert "did you mean orders.OrderCreated?" in err
        assert "stored name" in err
        code, out, err = run(capsys, *filled.args, "log", "--type", "no.Such")
        assert code == 2
        assert "'no.Such'" in err
        assert "did you mean" not in err

    def test_events_of_a_stream(self, filled: Store, capsys: pytest.CaptureFixture[str]) -> None:
        """events shows a stream in version order, as stored JSON; --from-version skips."""
        _, out, _ = run(capsys, *filled.args, "streams", "--json")
        longest = max(json_lines(out), key=lambda s: s["events"])["stream_id"]
        code, out, _ = run(capsys, *filled.args, "events", longest, "--json")
        events = json_lines(out)
        assert code == 0
        assert [e["version"] for e in events] == [1, 2, 3, 4, 5, 6]
        assert events[0]["type"] == "orders.OrderCreated"
        # The customer's name and address are sealed: the command shows them as stored.
        (sealed,) = events[0]["data"]["$personal"]
        assert sealed[1] == ["customer_name", "shipping_address"]
        assert "Ada" not in json.dumps(events[0])
        assert events[1]["data"]["unit_price"] == "12.50"  # Decimal, stored as text, exactly
        _, out, _ = run(capsys, *filled.args, "events", longest, "--from-version", "4")
        assert [line.split()[1].rsplit("@")[1] for line in out.splitlines()] == ["4", "5", "6"]

    def test_the_global_log(self, filled: Store, capsys: pytest.CaptureFixture[str]) -> None:
        """log reads in position order; --after, --limit and --type select."""
        _, out, _ = run(capsys, *filled.args, "log", "--json")
        log = json_lines(out)
        positions = [e["position"] for e in log]
        assert len(log) == DEMO_EVENTS
        assert positions == sorted(positions)
        _, out, _ = run(capsys, *filled.args, "log", "--json", "--after", str(positions[4]))
        assert [e["position"] for e in json_lines(out)] == positions[5:]
        _, out, _ = run(capsys, *filled.args, "log", "--json", "--limit", "3")
        assert [e["position"] for e in json_lines(out)] == positions[:3]
        types = ["--type", "orders.OrderSubmitted", "--type", "orders.OrderCancelled"]
        _, out, _ = run(capsys, *filled.args, "log", "--json", *types)
        assert sorted(e["type"] for e in json_lines(out)) == [
            *["orders.OrderCancelled"] * 2,
            *["orders.OrderSubmitted"] * 2,
        ]

    def test_stats(self, filled: Store, capsys: pytest.CaptureFixture[str]) -> None:
        """stats counts per type and per day, charts them, and names the largest streams."""
        code, out, _ = run(capsys, *filled.args, "stats")
        assert code == 0
        for kind, count in DEMO_TYPES.items():
            assert any(kind in line and f" {count}  " in line for line in out.splitlines()), kind
        assert "events per day (UTC)" in out
        assert "█" in out
        largest = out[out.index("largest streams") :].splitlines()
        assert largest[2].split()[1] == "6"  # under its header: the longest stream, an order


def test_days_are_utc_days_whatever_the_stored_offset(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An event at 22:30 on the 1st in UTC-02:00 is on the 2nd in UTC, and is its stream's last.

    As text it sorts before the first event (23:00 UTC), which it follows.
    """
    from datetime import datetime, timedelta, timezone  # noqa: PLC0415

    path = str(tmp_path / "zones.db")
    west = timezone(timedelta(hours=-2))
    first = datetime(2026, 12, 1, 23, 0, tzinfo=UTC)
    late = datetime(2026, 12, 1, 22, 30, tzinfo=west)  # 00:30 on the 2nd, UTC

    async def store_them() -> None:
        async with SQLiteEventStore(path) as store:
            events = [
                attrs.evolve(Deposited(amount=Decimal(1)), timestamp=first),
                attrs.evolve(Deposited(amount=Decimal(2)), timestamp=late),
            ]
            await store.append("zones", events, expected_version=0)

    asyncio.run(store_them())
    _, out, _ = run(capsys, "--store", path, "stats", "--days", "5")
    assert "  2026-12-01          1  " in out
    assert "  2026-12-02          1  " in out
    _, out, _ = run(capsys, "--store", path, "streams", "--json")
    assert json_lines(out)[0]["last_at"] == "2026-12-02T00:30:00+00:00"


def test_a_payload_that_is_not_json_is_shown_as_its_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A damaged stored payload does not end the listing in a traceback."""
    import sqlite3  # noqa: PLC0415

    path = str(tmp_path / "damaged.db")

    async def store_one() -> None:
        async with SQLiteEventStore(path) as store:
            await store.append("s", [Deposited(amount=Decimal(1))], expected_version=0)

    asyncio.run(store_one())
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE fabula_events SET data = '{not json'")
    code, out, _ = run(capsys, "--store", path, "log", "--json")
    assert code == 0
    assert json_lines(out)[0]["data"] == "{not json"


class TestProjections:
    APP = "orders.service:projector"

    def test_status_and_rebuild(self, filled: Store, capsys: pytest.CaptureFixture[str]) -> None:
        """status shows the read model caught up; rebuild replays it all, with a progress bar."""
        code, out, _ = run(
            capsys, *filled.args, "projections", "status", "--app", self.APP, "--json"
        )
        assert code == 0
        statuses = [(s["name"], s["events_behind"], s["skipped"]) for s in json_lines(out)]
        assert statuses == [("order_summary", 0, 0), ("product_stock", 0, 0)]
        code, out, err = run(
            capsys, *filled.args, "projections", "rebuild", "order_summary", "--app", self.APP
        )
        assert code == 0, err
        assert f"rebuilt order_summary: {ORDER_EVENTS} events" in out
        assert f"100.0% {ORDER_EVENTS}/{ORDER_EVENTS} events" in err
        _, out, _ = run(capsys, *filled.args, "projections", "status", "--app", self.APP, "--json")
        assert json_lines(out)[0]["events_behind"] == 0

    def test_a_projector_that_is_behind(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Events appended since the projector last ran show as events behind."""
        path = str(tmp_path / "o.db")
        demo(path)

        async def more() -> None:
            from orders.domain import OrderCancelled  # noqa: PLC0415

            key = fabula.KeyEncryptionKey.from_env("ORDERS_KEK")
            async with SQLiteEventStore(path, key_encryption_key=key) as store:
                kinds = {"orders.OrderCreated"}
                (first, *_) = await store.read_all(limit=1, event_types=kinds)
                stream = str(first.event.aggregate_id)
                version = len(await store.read_stream(stream))
                await store.append(stream, [OrderCancelled(reason="r")], expected_version=version)

        asyncio.run(more())
        args = ("--store", path, "--kek-env", "ORDERS_KEK")
        _, out, _ = run(capsys, *args, "projections", "status", "--app", self.APP)
        header, row, stock = out.splitlines()
        assert header.split("  ")[-1] == "last moved"  # no "running in": SQLite leases nothing
        assert row.split()[:4] == ["order_summary", "23", "1", "0"]
        assert stock.split()[:4] == ["product_stock", "23", "0", "0"]
        assert re.fullmatch(r"\d+ (s|min) ago", row.split(maxsplit=4)[4])

    def test_when_the_checkpoint_last_moved(
        self, fresh: Store, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A projector stuck behind its events shows as events behind with an old "last moved"."""
        before = datetime.now(UTC)
        run(capsys, *fresh.args, "projections", "rebuild", "order_summary", "--app", self.APP)
        _, out, _ = run(capsys, *fresh.args, "projections", "status", "--app", self.APP, "--json")
        status = json_lines(out)[0]
        assert status["name"] == "order_summary"
        moved = datetime.fromisoformat(status["moved_at"])
        assert before - timedelta(seconds=5) <= moved <= datetime.now(UTC)
        age = (datetime.now(UTC) - moved).total_seconds()
        code, out, _ = run(capsys, *fresh.args, "projections", "status", "--app", self.APP)
        assert code == 0
        shown = out.splitlines()[1]
        assert f"{int(age)} s ago" in shown or f"{int(age) + 1} s ago" in shown, shown

    def test_who_runs_a_projection_on_postgresql(self, capsys: pytest.CaptureFixture[str]) -> None:
        """The process holding a projection's lease is named; once it lets go, no process is."""
        url, schema = require_postgres(), new_schema()
        demo(url, "--schema", schema)
        args = ["--store", url, "--schema", schema, "projections", "status", "--app", self.APP]

        def application_of(pid: int) -> str:
            import psycopg  # noqa: PLC0415

            with psycopg.connect(url, autocommit=True) as conn:
                row = conn.execute(
                    "SELECT application_name FROM pg_stat_activity WHERE pid = %s", (pid,)
                ).fetchone()
            return "" if row is None else str(row[0])

        async def status_while_leased() -> tuple[dict[str, Any], list[str], str]:
            async with (
                PostgresEventStore(url, schema=schema) as store,
                store.projection_lease("order_summary"),
            ):
                _, out, _ = await asyncio.to_thread(run, capsys, *args, "--json")
                _, table, _ = await asyncio.to_thread(run, capsys, *args)
                holder = json_lines(out)[0]["running_in"]
                assert holder is not None
                application = await asyncio.to_thread(application_of, holder["pid"])
            return holder, table.splitlines(), application

        try:
            holder, table, application = asyncio.run(status_while_leased())
            assert application == f"fabula-lease:{schema}:order_summary"[:63]
            assert table[0].endswith("running in")
            assert re.search(rf"pid {holder['pid']}( at \S+)?$", table[1]), table[1]
            _, out, _ = run(capsys, *args, "--json")
            assert json_lines(out)[0]["running_in"] is None
            _, out, _ = run(capsys, *args)
            assert out.splitlines()[1].endswith("no process")
        finally:
            drop_schemas([schema])


class Tail:
    """`fabula tail --json` running as a process, its output read in a thread."""

    def __init__(self, store: Store) -> None:
        command = [sys.executable, "-m", "fabula", *store.args, "tail", "--json"]
        self.process = subprocess.Popen(  # noqa: S603 - our own command
            [*command, "--interval", "0.05"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self.reader = threading.Thread(
            target=lambda: self.lines.extend(self.process.stdout or []), daemon=True
        )
        self.reader.start()
        time.sleep(1.5)  # it has found where to start and is polling

    def wait_for(self, count: int) -> None:
        """Wait (up to 30 s) until it has printed `count` lines."""
        deadline = time.monotonic() + 30
        while len(self.lines) < count and time.monotonic() < deadline:
            time.sleep(0.05)

    def stop(self) -> tuple[int, list[dict[str, Any]]]:
        """Ctrl-C it; return its exit code and the events it printed."""
        self.process.send_signal(signal.SIGINT)
        _, err = self.process.communicate(timeout=30)
        self.reader.join(timeout=10)
        assert self.process.returncode == 0, err
        return self.process.returncode, [json.loads(line) for line in self.lines]

    def kill(self) -> None:
        """End it if a failing test left it running."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate()


class TestTail:
    def test_tail_follows_a_concurrent_writer(self, fresh: Store) -> None:
        """tail prints exactly the events committed after it started, in order, until Ctrl-C."""
        tail = Tail(fresh)
        try:
            sent = asyncio.run(write_concurrently(fresh, writers=4, each=15))
            tail.wait_for(len(sent))
            code, seen = tail.stop()
        finally:
            tail.kill()
        assert code == 0
        assert sorted(e["event_id"] for e in seen) == sorted(sent)  # all, and only, the new ones
        assert [e["position"] for e in seen] == sorted(e["position"] for e in seen)
        assert {e["type"] for e in seen} == {"fabula.testing.Deposited"}

    def test_tail_never_skips_a_late_commit(self) -> None:
        """A transaction that drew its positions before tail started, and commits after, is shown.

        PostgreSQL only: there a later append can be committed (the head)
        while an earlier one is still open; tail must start below it.
        """
        url, schema = require_postgres(), new_schema()
        demo(url, "--schema", schema)
        filled = Store("postgresql", url, schema)
        held: list[HeldWriter] = []

        async def hold() -> PostgresEventStore:
            store = PostgresEventStore(filled.store, schema=filled.schema)
            await store.open()
            await HeldWriter(store, "late", held).begin([Deposited(amount=Decimal(1))])
            await store.append("later", [Deposited(amount=Decimal(2))], expected_version=0)
            return store

        loop = asyncio.new_event_loop()
        store = loop.run_until_complete(hold())
        tail = Tail(filled)
        try:
            loop.run_until_complete(held[0].commit())
            tail.wait_for(2)
            _, seen = tail.stop()
        finally:
            tail.kill()
            for writer in held:
                if writer.conn is not None and not writer.conn.closed:
                    loop.run_until_complete(writer.conn.close())
            loop.run_until_complete(store.close())
            loop.close()
            drop_schemas([schema])
        assert [e["stream_id"] for e in seen] == ["late", "later"]


async def write_concurrently(filled: Store, *, writers: int, each: int) -> list[str]:
    """Several writers append to streams of their own at once; returns the event ids."""
    store: SQLiteEventStore | PostgresEventStore
    if filled.kind == "sqlite":
        store = SQLiteEventStore(filled.store)
    else:
        store = PostgresEventStore(filled.store, schema=filled.schema)
    sent: list[str] = []
    async with store:

        async def writer(n: int) -> None:
            stream = f"tail-{n}-{os.getpid()}-{time.monotonic_ns()}"
            for version in range(each):
                event = Deposited(amount=Decimal(version))
                await store.append(stream, [event], expected_version=version)
                sent.append(str(event.event_id))

        await asyncio.gather(*(writer(n) for n in range(writers)))
    return sent


class TestErrors:
    @pytest.mark.parametrize(
        ("args", "code", "message"),
        [
            (["info"], 2, "no store: give --store"),
            (["--store", "missing.db", "info"], 1, "there is no SQLite store at 'missing.db'"),
            (["--store", "x.db", "nonsense"], 2, "invalid choice: 'nonsense'"),
            (["--store", "x.db", "log", "--limit", "0"], 2, "must be at least 1"),
            (["--store", "x.db", "log", "--after", "-1"], 2, "must not be negative"),
            (["--store", "x.db", "events"], 2, "the following arguments are required: stream"),
            (
                ["--store", "postgresql://u@127.0.0.1:1/x", "info"],
                1,
                "cannot connect to PostgreSQL",
            ),
            (["--store", "postgresql://u@h/x", "--schema", "a-b", "info"], 2, "plain identifier"),
            (["--store", "x.db", "log", "--after", str(2**64)], 2, "must be at most"),
            (["--store", "x.db", "events", "s", "--from-version", str(2**63)], 2, "at most"),
            (["--store", "x.db", "tail", "--interval", "-1"], 2, "positive number of seconds"),
            (["--store", "x.db", "tail", "--interval", "nan"], 2, "positive number of seconds"),
            (
                ["--store", "x.db", "--kek-env", "NO_SUCH_VARIABLE", "reactions", "parked"],
                2,
                "environment variable NO_SUCH_VARIABLE does not hold a key-encryption key",
            ),
        ],
    )
    def test_bad_arguments_are_one_line(
        self, args: list[str], code: int, message: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Each mistake is one line on stderr, with exit code 2 (arguments) or 1 (the store)."""
        found, out, err = run(capsys, *args)
        assert (found, out) == (code, "")
        assert err.count("\n") == 1, err
        assert err.startswith("fabula: error: ")
        assert message in err

    def test_store_errors_name_what_is_wrong(
        self, filled: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """An unknown stream, a file that is no store, an app that does not import: exit 1 or 2."""
        code, _, err = run(capsys, *filled.args, "events", "no-such-stream")
        assert (code, err) == (1, "fabula: error: there is no stream 'no-such-stream'\n")
        other = tmp_path / "other.db"
        other.write_bytes(b"not a database at all, just some bytes" * 100)
        code, _, err = run(capsys, "--store", str(other), "info")
        assert code == 1
        assert "is not a SQLite database" in err
        code, _, err = run(
            capsys, *filled.args, "projections", "status", "--app", "no.such.module:x"
        )
        assert (code, err.count("\n")) == (2, 1)
        assert "cannot import 'no.such.module'" in err
        code, _, err = run(
            capsys,
            *filled.args,
            "projections",
            "rebuild",
            "nope",
            "--app",
            "orders.service:projector",
        )
        known = "(it has: order_summary, product_stock)"
        assert (code, err) == (
            2,
            f"fabula: error: the projector has no projection 'nope' {known}\n",
        )

    def test_an_app_that_fails_to_import_is_one_line(
        self,
        filled: Store,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """An --app module with a syntax error or raising at import: one line, exit 2."""
        (tmp_path / "broken_syntax.py").write_text("def f(:\n")
        (tmp_path / "raises_at_import.py").write_text("raise RuntimeError('no config')\n")
        monkeypatch.chdir(tmp_path)
        for module, reason in [
            ("broken_syntax", "invalid syntax"),
            ("raises_at_import", "no config"),
        ]:
            code, _, err = run(
                capsys, *filled.args, "projections", "status", "--app", f"{module}:p"
            )
            assert (code, err.count("\n")) == (2, 1), err
            assert f"cannot import {module!r}" in err
            assert reason in err

    def test_fabula_store_comes_from_the_environment(
        self, filled: Store, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """FABULA_STORE stands in for --store."""
        monkeypatch.setenv("FABULA_STORE", filled.store)
        code, out, _ = run(capsys, "--schema", filled.schema, "info", "--json")
        assert (code, json_lines(out)[0]["events"]) == (0, DEMO_EVENTS)


def test_locations_never_show_a_password() -> None:
    """A password in the URL's user part or in its query is masked where the command shows it."""
    from fabula.postgres._connections import redacted  # noqa: PLC0415 - a private helper

    url = "postgresql://app:s3cret@db/x"
    assert redacted(url, url) == "postgresql://app:***@db/x"
    url = "postgresql://app@db/x?sslmode=require&password=hunter2"
    assert redacted(url, url) == "postgresql://app@db/x?sslmode=require&password=***"
    assert redacted("password='a b' host=db", "") == "password=*** host=db"
    told = 'bad "hunter2" here'  # a message quoting the password alone
    assert redacted(told, "host=db password=hunter2") == 'bad "***" here'


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("postgresql://app:s3cret@[::1/x", "not a PostgreSQL connection string"),
        ("postgresql://app:s3cret@127.0.0.1/x?bogus=1", "invalid URI query parameter"),
        ("postgresql://app:s3cret@127.0.0.1:5432/test?sslmode=bogus", "invalid sslmode value"),
        ("postgresql://app:s3cret@127.0.0.1:notaport/test", 'connection option "port"'),
    ],
)
def test_a_bad_postgresql_url_is_one_line_without_its_password(
    url: str, why: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Malformed or refused at once by the driver: said in one line, the password masked."""
    code, out, err = run(capsys, "--store", url, "info")
    assert code in (1, 2)
    assert (out, err.count("\n")) == ("", 1), err
    assert why in err
    assert "s3cret" not in err


class TestTerminal:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    def test_colour_only_on_a_terminal_and_never_with_no_color(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """ANSI colour on a TTY; none in a pipe, with --no-color or with NO_COLOR set."""
        monkeypatch.delenv("NO_COLOR", raising=False)
        assert "\x1b[" in _Out(self.Terminal(), color=True).paint("x", "1")
        assert _Out(io.StringIO(), color=True).paint("x", "1") == "x"
        assert _Out(self.Terminal(), color=False).paint("x", "1") == "x"
        monkeypatch.setenv("NO_COLOR", "1")
        assert _Out(self.Terminal(), color=True).paint("x", "1") == "x"

    def test_a_coloured_line_is_cut_by_what_shows_and_leaves_no_colour_on(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Colour codes take no room, and a line cut inside a colour ends with a reset."""
        monkeypatch.setenv("COLUMNS", "10")
        monkeypatch.delenv("NO_COLOR", raising=False)
        terminal = self.Terminal()
        out = _Out(terminal, color=True)
        out.line(out.paint("abc", "2") + " " + out.paint("x" * 20, "36"))
        written = terminal.getvalue()
        assert re.sub(r"\x1b\[[0-9;]*m", "", written) == "abc " + "x" * 5 + "…\n"
        assert written.endswith("\x1b[0m…\n")

    def test_lines_fit_the_terminal_and_pipes_get_them_whole(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """On a terminal long lines are cut to its width; in a pipe they are kept whole."""
        monkeypatch.setenv("COLUMNS", "40")
        terminal = self.Terminal()
        _Out(terminal, color=False).line("x" * 100)
        assert terminal.getvalue() == "x" * 39 + "…\n"
        pipe = io.StringIO()
        _Out(pipe, color=False).line("x" * 100)
        assert pipe.getvalue() == "x" * 100 + "\n"

    @pytest.mark.parametrize("columns", [60, 80, 100, 200])
    def test_an_event_s_type_is_never_cut(
        self, columns: int, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """At any width, the payload is cut first, then the stream id, then the date."""
        monkeypatch.setenv("COLUMNS", str(columns))
        terminal = self.Terminal()
        stream = "c137c2c7-796f-4941-b56a-4ff737c27660"
        event = StoredEvent(
            position=123456,
            stream_id=stream,
            version=17,
            event_id=uuid4(),
            type_name="orders.OrderItemAdded",
            schema_version=1,
            timestamp=datetime(2026, 12, 2, 4, 7, 25, tzinfo=UTC),
            data='{"product_id":"' + "p" * 200 + '"}',
            metadata="{}",
        )
        _show_events(_Out(terminal, color=False), [event], as_json=False)
        (line,) = terminal.getvalue().splitlines()
        assert len(line) == columns
        assert "  orders.OrderItemAdded  {" in line
        assert line.startswith("123456  ")
        whole = f"{stream}@17  2026-12-02 04:07:25"
        if columns >= 120:
            assert whole in line
        else:
            assert stream not in line  # cut in its middle, both ends kept
            assert re.search(r"  c137c\S*…\S*60@17  ", line), line


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    """`fabula --version` names the installed version."""
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"fabula {fabula.__version__}"


def test_lease_holders_whatever_the_sign_of_the_lock_key() -> None:
    """A lease whose lock key hashes below zero is found as surely as one above."""
    import psycopg  # noqa: PLC0415

    from fabula._inspect import open_inspector  # noqa: PLC0415
    from fabula.postgres._projections import lease_key  # noqa: PLC0415

    url, schema = require_postgres(), new_schema()

    def sign(conn: psycopg.Connection[Any], name: str) -> bool:
        row = conn.execute("SELECT hashtext(%s) < 0", (lease_key(schema, name),)).fetchone()
        assert row is not None
        return bool(row[0])

    with psycopg.connect(url, autocommit=True) as conn:
        names = [f"p{n}" for n in range(64)]
        negative = next(name for name in names if sign(conn, name))
        positive = next(name for name in names if not sign(conn, name))

    async def holders() -> tuple[set[str], set[str]]:
        async with (
            PostgresEventStore(url, schema=schema) as store,
            store.projection_lease(negative),
            store.projection_lease(positive),
        ):
            inspector = open_inspector(url, schema=schema)
            try:
                held = set(inspector.lease_holders([negative, positive, "idle"]))
            finally:
                inspector.close()
        inspector = open_inspector(url, schema=schema)
        try:
            after = set(inspector.lease_holders([negative, positive]))
        finally:
            inspector.close()
        return held, after

    try:
        held, after = asyncio.run(holders())
        assert held == {negative, positive}
        assert after == set()
    finally:
        drop_schemas([schema])


async def open_store(kind: str, location: str, schema: str) -> fabula.Store:
    if kind == "sqlite":
        return SQLiteEventStore(location)
    store = PostgresEventStore(location, schema=schema)
    await store.open()
    return store


@pytest.fixture(params=["sqlite", "postgresql"])
def reacting(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A store where reaction `mirror` parked stream acc-1 and one timer is pending."""
    from .support.reactions import Mirror, Note, make_bus  # noqa: PLC0415 - only these tests

    schema = "public"
    if request.param == "sqlite":
        location = str(tmp_path / "r.db")
    else:
        location, schema = require_postgres(), new_schema()

    async def build() -> None:
        store = await open_store(request.param, location, schema)
        try:
            for s in range(3):
                events = [Deposited(amount=Decimal(1)), Deposited(amount=Decimal(2))]
                await store.append(f"acc-{s}", events, expected_version=0)
            failing = Mirror(fails=lambda r: r.stream_id == "acc-1")
            reactor = fabula.Reactor(
                store, make_bus(store), [failing], attempts=2, retry_delay=0.001
            )
            await reactor.catch_up()
            soon = datetime.now(UTC) + timedelta(hours=3)
            timers = fabula.Timers(store, make_bus(store))
            await timers.schedule("expire:o-1", at=soon, command=Note(tally="t", source=1))
        finally:
            await store.close()

    asyncio.run(build())
    try:
        yield Store(request.param, location, schema)
    finally:
        if request.param != "sqlite":
            drop_schemas([schema])


class TestReactions:
    def test_status_shows_checkpoints_and_parked_streams(
        self, reacting: Store, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Each reaction's checkpoint, what follows it, and what it parked."""
        code, out, _ = run(capsys, *reacting.args, "reactions", "status", "--json")
        assert code == 0
        (row,) = json_lines(out)
        assert (row["name"], row["parked_streams"], row["parked_events"]) == ("mirror", 1, 2)
        assert row["events_after"] >= 0
        assert row["checkpoint"] > 0
        code, out, _ = run(capsys, *reacting.args, "reactions", "status")
        header, line = out.splitlines()
        assert header.split()[:2] == ["reaction", "checkpoint"]
        assert "1 stream, 2 events" in line

    def test_parked_lists_each_event_with_its_error(
        self, reacting: Store, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """The failing event carries its attempts and error; the one behind it waits."""
        code, out, _ = run(capsys, *reacting.args, "reactions", "parked", "--json")
        assert code == 0
        first, second = json_lines(out)
        assert (first["stream_id"], first["attempts"], second["attempts"]) == ("acc-1", 2, 0)
        assert first["error"].startswith("RuntimeError('cannot handle")
        assert second["error"] is None
        _, out, _ = run(capsys, *reacting.args, "reactions", "parked", "mirror")
        assert out.splitlines()[1].split()[:2] == ["mirror", "acc-1"]
        _, out, _ = run(capsys, *reacting.args, "reactions", "parked", "other")
        assert out == "nothing is parked\n"

    def test_skip_records_a_request_the_running_reaction_carries_out(
        self, reacting: Store, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """skip marks the stream's first parked event; a reactor then drains the stream."""
        from .support.reactions import Mirror, make_bus  # noqa: PLC0415 - only these tests

        code, out, err = run(
            capsys, *reacting.args, "reactions", "skip", "mirror", "acc-1", "--reason", "bad data"
        )
        assert (code, err) == (0, "")
        assert "skip requested for stream acc-1 of reaction mirror" in out
        _, out, _ = run(capsys, *reacting.args, "reactions", "parked", "--json")
        assert [(p["request"], p["reason"]) for p in json_lines(out)] == [
            ("skip", "bad data"),
            ("retry", None),  # the rest of the stream is drained after the skip
        ]

        async def drain() -> tuple[int, list[fabula.ParkedEvent]]:
            store = await open_store(reacting.kind, reacting.store, reacting.schema)
            try:
                await fabula.Reactor(store, make_bus(store), [Mirror()]).catch_up()
                skips = await store.load_skips("reaction:mirror")
                return len(skips), await store.load_parked()
            finally:
                await store.close()

        assert asyncio.run(drain()) == (1, [])

    def test_requests_are_checked(
        self, reacting: Store, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A stream not parked exits 1 with one line; a skip needs a reason (exit 2)."""
        code, out, err = run(capsys, *reacting.args, "reactions", "retry", "mirror", "acc-0")
        assert (code, out) == (1, "")
        assert err == "fabula: error: stream 'acc-0' is not parked in reaction 'mirror'\n"
        code, _, err = run(capsys, *reacting.args, "reactions", "skip", "mirror", "acc-1")
        assert code == 2
        assert "--reason" in err
        code, _, err = run(
            capsys, *reacting.args, "reactions", "skip", "mirror", "acc-1", "--reason", " "
        )
        assert code == 2
        assert "say why" in err

    def test_timers_lists_the_pending_ones(
        self, reacting: Store, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Pending timers with when they are due and what they dispatch."""
        code, out, _ = run(capsys, *reacting.args, "timers", "--json")
        assert code == 0
        (timer,) = json_lines(out)
        assert (timer["name"], timer["attempts"], timer["last_error"]) == ("expire:o-1", 0, None)
        assert timer["command_type"] == "tests.support.reactions:Note"
        _, out, _ = run(capsys, *reacting.args, "timers")
        header, line = out.splitlines()
        assert header.split()[:3] == ["timer", "due", "at"]
        assert line.split()[0] == "expire:o-1"
        assert "in 2 h" in line
        assert line.split()[-2:] == ["Note", "0"]

    def test_an_empty_store_says_so(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A store no reaction ran on answers in words, not an empty table."""
        path = str(tmp_path / "empty.db")
        asyncio.run(SQLiteEventStore(path).close())
        assert run(capsys, "--store", path, "reactions", "status")[1] == (
            "no reaction has run on this store\n"
        )
        assert run(capsys, "--store", path, "timers")[1] == "no timer is pending\n"


def test_a_projections_parked_events_are_listed_not_taken_for_a_reaction(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`reactions parked` lists a parking projection's events under projection:<name>;
    `reactions status` does not show that projection as a reaction."""
    path = str(tmp_path / "p.db")

    async def park() -> None:
        async with SQLiteEventStore(path) as store:
            row = fabula.ParkedEvent(
                "projection:ledger",
                3,
                "acc-1",
                2,
                "Deposited",
                "RuntimeError()",
                2,
                datetime.now(UTC),
            )
            await store.commit_projection_parked(
                "ledger", expected=0, position=3, work=lambda _: None, park=[row]
            )

    asyncio.run(park())
    _, out, _ = run(capsys, "--store", path, "reactions", "parked", "--json")
    assert [(p["reaction"], p["stream_id"]) for p in json_lines(out)] == [
        ("projection:ledger", "acc-1")
    ]
    assert run(capsys, "--store", path, "reactions", "status")[1] == (
        "no reaction has run on this store\n"
    )
