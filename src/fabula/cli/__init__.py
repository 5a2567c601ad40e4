"""The `fabula` command: look inside a store, follow it, operate its projections and reactions.

    fabula --store orders.db info
    fabula --store postgresql://app@db/shop --schema orders log --limit 20
    fabula --store orders.db events 0c6f... --json | jq .data
    fabula --store orders.db projections rebuild order_summary --app orders.service:projector
    fabula --store orders.db reactions parked
    fabula --store orders.db reactions skip reservation process:o-1 --reason "bad sku"
    fabula --store orders.db timers

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
import math
import os
import sys
import time
from collections.abc import Sequence
from datetime import date, timedelta
from typing import Any, NoReturn

import orjson

from fabula._guards import MAX_INT
from fabula._inspect import Inspector, open_inspector
from fabula.cli._output import (
    _SPARKS,
    UsageError,
    _lines,
    _Out,
    _show_events,
    _size,
)
from fabula.cli._projections import _projections_rebuild, _projections_status
from fabula.cli._reactions import add_reaction_commands
from fabula.exceptions import FabulaError, StoreError

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")


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


# -- wiring ---------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="fabula", description="Inspect, tail and operate a fabula store.")
    parser.add_argument(
        "--store",
        default=os.environ.get("FABULA_STORE"),
        help="a SQLite file or a postgresql:// URL (default: $FABULA_STORE)",
    )
    parser.add_argument("--schema", default="public", help="the PostgreSQL schema (default public)")
    parser.add_argument(
        "--kek-env",
        default=None,
        metavar="VARIABLE",
        help="the environment variable that holds the key-encryption key, to read events "
        "with personal data in `projections` and `reactions` (default: FABULA_KEK, if set)",
    )
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
    add_reaction_commands(commands, json_flag)
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


def _checked(args: argparse.Namespace) -> argparse.Namespace:
    """Settle `--kek-env`: the variable named must hold a key; FABULA_KEK is used if set."""
    args.kek_env_given = args.kek_env is not None
    args.kek_env = args.kek_env or "FABULA_KEK"
    if args.kek_env_given and not os.environ.get(args.kek_env):
        msg = f"environment variable {args.kek_env} does not hold a key-encryption key"
        raise UsageError(msg)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `fabula` command; return its exit code."""
    try:
        return _run(_checked(_parser().parse_args(argv)))
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
