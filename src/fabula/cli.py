"""The `fabula` command: look inside a store, follow it, and operate its projections.

    fabula --store orders.db info
    fabula --store postgresql://app@db/shop --schema orders log --limit 20
    fabula --store orders.db events 0c6f... --json | jq .data
    fabula --store orders.db projections rebuild order_summary --app orders.service:projector

`--store` is a SQLite file or a `postgresql://` URL (default: `$FABULA_STORE`).
Payloads are shown as stored JSON, so no application code is needed, except
by `projections`, whose `--app module:attr` names the application's
projector: a `fabula.Projector`, or a function that builds one from the
store the command opened. Exit codes: 0 success; 1 the store failed (no
such store, an unreachable server, an unknown stream, a failed rebuild);
2 bad arguments. Errors are one line on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import math
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn, TextIO

import attrs
import orjson

from fabula._events import default_registry
from fabula._guards import MAX_INT
from fabula._inspect import Inspector, LeaseHolder, StoredEvent, open_inspector
from fabula._projections import Projector
from fabula._store import SerializingStore
from fabula.exceptions import FabulaError, StoreError

__all__ = ["main"]

_SPARKS = "▁▂▃▄▅▆▇█"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_TOKENS = re.compile(r"(\x1b\[[0-9;]*m)|(.)", re.DOTALL)
_RESET = "\x1b[0m"
_KIB = 1024
_REDRAW_EVERY = 0.1  # seconds between redraws of a progress bar
_MIN_STREAM = 12  # the fewest characters a cut stream id (with its @version) keeps
_MIN_PAYLOAD = 24  # the payload room a line at the terminal's width keeps, cutting the rest first


class UsageError(Exception):
    """A bad argument: one line on stderr, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")


class _Out:
    """Writes aligned, terminal-sized, optionally coloured output."""

    def __init__(self, stream: TextIO, *, color: bool) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.color = color and self.tty and "NO_COLOR" not in os.environ
        self.width = shutil.get_terminal_size((100, 24)).columns if self.tty else 0

    def paint(self, text: str, code: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.color else text

    def line(self, text: str = "") -> None:
        """Write `text`, cut to the terminal's width (colour codes take no room)."""
        if self.width and len(_ANSI.sub("", text)) > self.width:
            text = _cut(text, self.width - 1) + "…"
        self.stream.write(text + "\n")

    def table(self, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
        titles = "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))
        self.line(self.paint(titles.rstrip(), "1"))
        for row in rows:
            cells = [
                str(cell).rjust(w) if str(cell).replace(",", "").isdigit() else str(cell).ljust(w)
                for cell, w in zip(row, widths, strict=True)
            ]
            self.line("  ".join(cells).rstrip())


def _cut(text: str, visible: int) -> str:
    """The start of `text` holding `visible` characters, colour codes kept and closed."""
    out, shown, coloured = [], 0, False
    for code, char in _TOKENS.findall(text):
        if code:
            out.append(code)
            coloured = code != _RESET
        elif shown < visible:
            out.append(char)
            shown += 1
    return "".join(out) + (_RESET if coloured else "")


def _size(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < _KIB or unit == "GiB":
            return f"{count:,.0f} B" if unit == "B" else f"{count:,.1f} {unit}"
        count /= _KIB
    return f"{count:,.1f} TiB"  # pragma: no cover - the loop returns


def _event_json(event: StoredEvent) -> bytes:
    return orjson.dumps(
        {
            "position": event.position,
            "stream_id": event.stream_id,
            "version": event.version,
            "event_id": str(event.event_id),
            "type": event.type_name,
            "schema_version": event.schema_version,
            "timestamp": event.timestamp.isoformat(),
            "data": _json_or_text(event.data),
            "metadata": _json_or_text(event.metadata),
        }
    )


def _json_or_text(stored: str) -> object:
    """The stored JSON, parsed; a payload that does not parse is shown as its text."""
    try:
        return orjson.loads(stored)
    except orjson.JSONDecodeError:
        return stored


def _show_events(out: _Out, events: Sequence[StoredEvent], *, as_json: bool) -> None:
    for event in events:
        if as_json:
            out.stream.write(_event_json(event).decode() + "\n")
            continue
        stamp = event.timestamp.strftime("%Y-%m-%d %H:%M:%S")
        stream = f"{event.stream_id}@{event.version}"
        if out.width:
            # The payload is cut first (by `line`); then the stream id, in
            # its middle, then the date: the event's type is never cut.
            fixed = len(f"{event.position}    {stamp}  {event.type_name}  ") + _MIN_PAYLOAD
            stream = _middle(stream, max(_MIN_STREAM, out.width - fixed))
            if fixed + len(stream) > out.width:
                stamp = stamp[11:]  # the time of day only
        out.line(
            f"{out.paint(str(event.position), '2')}  {stream}  "
            f"{stamp}  {out.paint(event.type_name, '36')}  {event.data}"
        )
    out.stream.flush()


def _middle(text: str, room: int) -> str:
    """`text`, cut in its middle to `room` characters: the start and end of an id stay."""
    if len(text) <= room:
        return text
    head = (room - 1) // 2
    return text[:head] + "…" + text[len(text) - (room - 1 - head) :]


# -- the subcommands ------------------------------------------------------------------


def _info(inspector: Inspector, args: argparse.Namespace, out: _Out) -> int:
    info = inspector.info()
    if args.json:
        fields = {
            "kind": info.kind,
            "location": info.location,
            "schema_version": info.schema_version,
            "events": info.events,
            "streams": info.streams,
            "head_position": info.head,
            "size_bytes": info.size_bytes,
        }
        out.line(orjson.dumps(fields).decode())
        return 0
    rows = [
        ("kind", info.kind),
        ("location", info.location),
        ("schema version", str(info.schema_version)),
        ("events", f"{info.events:,}"),
        ("streams", f"{info.streams:,}"),
        ("head position", str(info.head)),
        ("size on disk", _size(info.size_bytes)),
    ]
    for name, value in rows:
        out.line(f"{out.paint(name.ljust(15), '1')} {value}")
    return 0


def _streams(inspector: Inspector, args: argparse.Namespace, out: _Out) -> int:
    found = inspector.streams(args.prefix, args.limit)
    if args.json:
        for s in found:
            row = {"stream_id": s.stream_id, "events": s.events, "last_at": s.last_at.isoformat()}
            out.line(orjson.dumps({**row, "first_type": s.first_type}).decode())
        return 0
    out.table(
        ("stream", "events", "last event", "kind (first event)"),
        [
            (s.stream_id, f"{s.events:,}", s.last_at.strftime("%Y-%m-%d %H:%M:%S"), s.first_type)
            for s in found
        ],
    )
    return 0


def _events(inspector: Inspector, args: argparse.Namespace, out: _Out) -> int:
    found = inspector.events(args.stream, args.from_version, args.limit)
    if not found and not inspector.events(args.stream, 1, 1):
        raise StoreError(f"there is no stream {args.stream!r}")
    _show_events(out, found, as_json=args.json)
    return 0


def _log(inspector: Inspector, args: argparse.Namespace, out: _Out) -> int:
    events, _ = inspector.log(args.after, args.limit, args.type or None)
    if not events and args.type:
        problem = _unknown_types(inspector, args.type)
        if problem:
            raise UsageError(problem)
    _show_events(out, events, as_json=args.json)
    return 0


def _unknown_types(inspector: Inspector, types: Sequence[str]) -> str | None:
    """Say which `--type` values no stored event has, and the stored names they may mean."""
    stored = [name for name, _ in inspector.by_type()]
    unknown = [name for name in types if name not in stored]
    if not unknown:
        return None
    parts = []
    for name in unknown:
        like = [s for s in stored if s.rsplit(".", 1)[-1] == name.rsplit(".", 1)[-1]]
        hint = f" (did you mean {' or '.join(like)}?)" if like else ""
        parts.append(f"{name!r}{hint}")
    return (
        f"no stored event has the type {', '.join(parts)}; --type takes the stored name "
        "that @fabula.event gave, not the class name"
    )


def _tail(inspector: Inspector, args: argparse.Namespace, out: _Out) -> int:
    if args.type:
        problem = _unknown_types(inspector, args.type)
        if problem:  # it may be a type not stored yet: say so, and follow anyway
            sys.stderr.write(f"fabula: note: {problem}\n")
    # Not from the head: on PostgreSQL an earlier transaction may still commit below it.
    position = inspector.readable_head() if args.after is None else args.after
    try:
        while True:
            events, reached = inspector.log(position, 500, args.type or None)
            _show_events(out, events, as_json=args.json)
            if reached == position:
                time.sleep(args.interval)
            position = reached
    except KeyboardInterrupt:
        return 0  # following until Ctrl-C is what tail is for


def _spark(days: list[tuple[date, int]]) -> tuple[str, date, date]:
    """One character per day from the first to the last, scaled to the busiest."""
    counts = dict(days)
    first, last = days[0][0], days[-1][0]
    span = [counts.get(first + timedelta(n), 0) for n in range((last - first).days + 1)]
    peak = max(span) or 1
    marks = "".join(" " if n == 0 else _SPARKS[(n * (len(_SPARKS) - 1)) // peak] for n in span)
    return marks, first, last


def _stats(inspector: Inspector, args: argparse.Namespace, out: _Out) -> int:
    by_type, by_day = inspector.by_type(), inspector.by_day()
    largest = inspector.largest_streams(args.limit)
    if not by_type:
        out.line("the store is empty")
        return 0
    bar_room = max(10, min(40, (out.width or 100) - 60))

    def bar(n: int, peak: int) -> str:
        return out.paint("█" * max(1, round(bar_room * n / peak)), "36")

    out.line(out.paint("events by type", "1"))
    peak = by_type[0][1]
    width = max(len(type_name) for type_name, _ in by_type)
    for type_name, n in by_type:
        out.line(f"  {type_name.ljust(width)}  {n:>9,}  {bar(n, peak)}")
    marks, first, last = _spark(by_day)
    out.line()
    out.line(out.paint(f"events per day (UTC), {first} to {last}", "1"))
    out.line(f"  {out.paint(marks[-(out.width or 10_000) + 4 :], '36')}")
    busiest = max(n for _, n in by_day)
    for day, n in by_day[-args.days :]:
        out.line(f"  {day}  {n:>9,}  {bar(n, busiest)}")
    out.line()
    out.line(out.paint("largest streams", "1"))
    out.table(
        ("stream", "events", "last event"),
        [(s.stream_id, f"{s.events:,}", s.last_at.strftime("%Y-%m-%d %H:%M:%S")) for s in largest],
    )
    return 0


# -- projections ----------------------------------------------------------------------


def _load_app(spec: str) -> object:
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise UsageError(f"--app must be module:attribute, not {spec!r}")
    here = str(Path.cwd())  # the application's modules, as `python -m` would find them
    if here not in sys.path:
        sys.path.insert(0, here)
    try:
        target: object = importlib.import_module(module_name)
    except Exception as exc:  # the application's import may fail in any way
        first = next(_lines(exc))
        raise UsageError(f"cannot import {module_name!r} for --app: {first}") from exc
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise UsageError(f"{module_name!r} has no attribute {attribute!r}") from None
    return target


async def _with_projector(
    args: argparse.Namespace, work: Callable[[Projector[Any], Any], Any]
) -> int:
    target = _load_app(args.app)
    store = _open_store(args.store, args.schema)
    async with store:
        projector = target if isinstance(target, Projector) else None
        if projector is None and callable(target):
            projector = target(store)
        if not isinstance(projector, Projector):
            msg = f"--app {args.app} is neither a fabula.Projector nor builds one from a store"
            raise UsageError(msg)
        result: int = await work(projector, projector.store)
        return result


def _open_store(location: str, schema: str) -> Any:  # noqa: ANN401 - either store
    if location.startswith(("postgresql://", "postgres://")):
        from fabula.postgres import PostgresEventStore  # noqa: PLC0415 - an optional driver

        return PostgresEventStore(location, schema=schema)
    from fabula.sqlite import SQLiteEventStore  # noqa: PLC0415

    return SQLiteEventStore(location)


def _projection_types(projector: Projector[Any], name: str) -> list[str]:
    """The stored names of the event types projection `name` handles, from the store's registry."""
    store = projector.store
    registry = (
        store.serializer.registry if isinstance(store, SerializingStore) else default_registry
    )
    for projection in projector.projections:
        if projection.name == name:
            return [registry.by_class(event_class).name for event_class in projection.handlers()]
    known = ", ".join(p.name for p in projector.projections) or "none"
    raise UsageError(f"the projector has no projection {name!r} (it has: {known})")


def _ago(seconds: float) -> str:
    """A duration in the past, at a glance: `4 s ago`, `12 min ago`, `3 h ago`, `2 d ago`."""
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit} ago"
    return f"{int(seconds)} s ago"


def _projections_status(inspector: Inspector, args: argparse.Namespace, out: _Out) -> int:
    """Each projection's checkpoint, lag, skips, when it last moved and (PostgreSQL) who runs it.

    A projector that stopped moving while events wait (a full disk, a lost
    connection, a failing handler) shows as events behind with an old
    "last moved"; on PostgreSQL, "running in" names the process holding
    its lease, or says that none does.
    """

    async def work(projector: Projector[Any], store: Any) -> int:  # noqa: ANN401
        names = [projection.name for projection in projector.projections]
        stored = inspector.checkpoints()
        holders = inspector.lease_holders(names)
        leased = inspector.kind == "postgresql"
        now = datetime.now(UTC)
        rows: list[dict[str, Any]] = []
        for name in names:
            checkpoint = await store.load_checkpoint(name)
            behind = inspector.count_after(checkpoint, _projection_types(projector, name))
            moved = stored.get(name)
            row: dict[str, Any] = {
                "name": name,
                "checkpoint": checkpoint,
                "events_behind": behind,
                "skipped": len(await store.load_skips(name)),
                "moved_at": None if moved is None else moved.moved_at.isoformat(),
            }
            if leased:
                holder = holders.get(name)
                row["running_in"] = None if holder is None else attrs.asdict(holder)
            rows.append(row)
        if args.json:
            for row in rows:
                out.line(orjson.dumps(row).decode())
            return 0
        header = ["projection", "checkpoint", "events behind", "skipped", "last moved"]
        table = []
        for row in rows:
            moved = stored.get(row["name"])
            ago = "never" if moved is None else _ago((now - moved.moved_at).total_seconds())
            cells = [row["name"], str(row["checkpoint"]), f"{row['events_behind']:,}"]
            cells += [str(row["skipped"]), ago]
            if leased:
                holder = holders.get(row["name"])
                cells.append("no process" if holder is None else _holder(holder))
            table.append(cells)
        out.table([*header, "running in"] if leased else header, table)
        return 0

    return asyncio.run(_with_projector(args, work))


def _holder(holder: LeaseHolder) -> str:
    where = f" at {holder.client}" if holder.client else ""
    return f"pid {holder.pid}{where}"


def _progress(out: TextIO, total: int) -> tuple[Callable[[int], None], Callable[[int], None]]:
    """A progress bar in events: done, total, rate and time left; redrawn on a TTY."""
    started = time.monotonic()
    tty = out.isatty()
    drawn = [0.0]

    def draw(done: int, *, final: bool = False) -> None:
        now = time.monotonic()
        if not final and (not tty or now - drawn[0] < _REDRAW_EVERY):
            return
        drawn[0] = now
        elapsed = max(now - started, 1e-9)
        fraction = 1.0 if total == 0 else min(1.0, done / total)
        rate = done / elapsed
        left = (total - done) / rate if rate > 0 else 0.0
        filled = int(30 * fraction)
        text = (
            f"[{'#' * filled}{'.' * (30 - filled)}] {fraction:6.1%} {done:,}/{total:,} events, "
            f"{rate:,.0f}/s, {'done' if final else f'{left:,.0f} s left'}"
        )
        out.write(("\r" if tty else "") + text + ("\n" if final or not tty else ""))
        out.flush()

    def finish(done: int) -> None:
        draw(done, final=True)

    return draw, finish


def _projections_rebuild(inspector: Inspector, args: argparse.Namespace, out: _Out) -> int:
    async def work(projector: Projector[Any], _: Any) -> int:  # noqa: ANN401
        types = _projection_types(projector, args.name)
        total = inspector.count_after(0, types)
        report, finish = _progress(sys.stderr, total)
        done, reached = 0, 0

        def progress(position: int, _: int) -> None:
            # Only the batch just applied is counted: the whole rebuild reads the log once.
            nonlocal done, reached
            done += inspector.count_after(reached, types, upto=position)
            reached = position
            report(done)

        started = time.monotonic()
        await projector.rebuild(args.name, progress=progress)
        applied = max(done, total)  # events appended during the rebuild were applied too
        finish(applied)
        seconds = time.monotonic() - started
        out.line(f"rebuilt {args.name}: {applied:,} events in {seconds:.1f} s")
        return 0

    return asyncio.run(_with_projector(args, work))


# -- wiring ---------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="fabula", description="Inspect, tail and operate a fabula store.")
    parser.add_argument(
        "--store",
        default=os.environ.get("FABULA_STORE"),
        help="a SQLite file or a postgresql:// URL (default: $FABULA_STORE)",
    )
    parser.add_argument("--schema", default="public", help="the PostgreSQL schema (default public)")
    parser.add_argument("--no-color", action="store_true", help="no colour, even on a terminal")
    parser.add_argument("--version", action="version", version=f"fabula {_fabula_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str, run: Any) -> argparse.ArgumentParser:  # noqa: ANN401
        sub = commands.add_parser(name, help=help_text)
        sub.set_defaults(run=run)
        return sub

    def json_flag(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--json", action="store_true", help="one JSON object per line")

    json_flag(command("info", "what the store holds, and its size", _info))
    streams = command("streams", "list streams", _streams)
    streams.add_argument("--prefix", default="", help="only ids that start with this")
    streams.add_argument("--limit", type=_positive, default=100, help="at most this many")
    json_flag(streams)
    events = command("events", "one stream's events", _events)
    events.add_argument("stream", help="the stream id")
    events.add_argument("--from-version", type=_positive, default=1, help="start here")
    events.add_argument("--limit", type=_positive, default=None, help="at most this many")
    json_flag(events)
    log = command("log", "the global log, in position order", _log)
    log.add_argument("--after", type=_natural, default=0, help="after this position")
    log.add_argument("--limit", type=_positive, default=100, help="at most this many")
    log.add_argument("--type", action="append", help="only this stored type (repeatable)")
    json_flag(log)
    tail = command("tail", "follow new events until Ctrl-C", _tail)
    tail.add_argument("--after", type=_natural, default=None, help="default: the head")
    tail.add_argument("--type", action="append", help="only this stored type (repeatable)")
    tail.add_argument("--interval", type=_seconds, default=0.25, help="seconds between polls")
    json_flag(tail)
    stats = command("stats", "events per type and per day, largest streams", _stats)
    stats.add_argument("--limit", type=_positive, default=10, help="how many streams")
    stats.add_argument("--days", type=_positive, default=14, help="how many days to list")

    projections = commands.add_parser("projections", help="status and rebuilds")
    actions = projections.add_subparsers(dest="action", required=True, metavar="ACTION")
    status = actions.add_parser("status", help="each projection's checkpoint and lag")
    status.set_defaults(run=_projections_status)
    rebuild = actions.add_parser("rebuild", help="rebuild one projection from the log")
    rebuild.set_defaults(run=_projections_rebuild)
    rebuild.add_argument("name", help="the projection's name")
    for sub in (status, rebuild):
        sub.add_argument("--app", required=True, help="module:attr of the projector")
    json_flag(status)
    return parser


def _fabula_version() -> str:
    from fabula import __version__  # noqa: PLC0415 - the package imports this module's siblings

    return __version__


def _positive(text: str) -> int:
    value = _natural(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {text}")
    return value


def _natural(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, not {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, not {text}")
    if value > MAX_INT:  # what both databases' 64-bit integers hold
        raise argparse.ArgumentTypeError(f"must be at most {MAX_INT}, not {text}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, not {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text}")
    return value


def _lines(exc: BaseException) -> Iterator[str]:
    yield from (str(exc).strip() or type(exc).__name__).splitlines()[:1]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `fabula` command; return its exit code."""
    try:
        return _run(_parser().parse_args(argv))
    except UsageError as exc:
        sys.stderr.write(f"fabula: error: {exc}\n")
        return 2
    except (FabulaError, ImportError) as exc:
        sys.stderr.write(f"fabula: error: {next(_lines(exc))}\n")
        return 1
    except BrokenPipeError:  # `fabula log | head`: the reader left
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        return 130


def _run(args: argparse.Namespace) -> int:
    if not args.store:
        raise UsageError("no store: give --store PATH_OR_URL or set FABULA_STORE")
    out = _Out(sys.stdout, color=not args.no_color)
    try:
        inspector = open_inspector(args.store, schema=args.schema)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    try:
        result: int = args.run(inspector, args, out)
    finally:
        inspector.close()
    return result
