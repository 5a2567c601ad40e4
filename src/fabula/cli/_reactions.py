"""The `fabula reactions` and `fabula timers` commands: checkpoints, parked streams, timers.

None of them needs the application's code: reactions are known by their
checkpoints (`reaction:<name>`), parked events and timers are rows of the
store's own tables. `retry` and `skip` record a request on the parked
stream; the process running the reaction carries it out.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

import attrs
import orjson

from fabula._inspect import Checkpoint, Inspector, LeaseHolder
from fabula._reaction_store import (
    CHECKPOINT_PREFIX,
    PARKING_PREFIX,
    ParkedEvent,
    ParkRequest,
    Timer,
)
from fabula._reactor import ask_parked
from fabula.cli._output import UsageError, _ago, _Out
from fabula.cli._projections import _holder, _open_store

__all__ = ["add_reaction_commands"]

_ERROR_WIDTH = 60


def add_reaction_commands(
    commands: Any,  # noqa: ANN401 - argparse's private subparsers action
    json_flag: Callable[[argparse.ArgumentParser], None],
) -> None:
    """Add `reactions status|parked|retry|skip` and `timers` to the command's subcommands."""
    reactions = commands.add_parser("reactions", help="reactions' checkpoints and parked streams")
    actions = reactions.add_subparsers(dest="action", required=True, metavar="ACTION")
    status = actions.add_parser("status", help="each reaction's checkpoint and parked streams")
    status.set_defaults(run=_status)
    json_flag(status)
    parked = actions.add_parser("parked", help="the parked events, with their errors")
    parked.add_argument("name", nargs="?", help="only this reaction's")
    parked.set_defaults(run=_parked)
    json_flag(parked)
    retry = actions.add_parser("retry", help="handle a parked stream again, in order")
    retry.set_defaults(run=_retry)
    skip = actions.add_parser("skip", help="pass over a parked stream's first event")
    skip.add_argument("--reason", required=True, help="why (recorded with the skip)")
    skip.set_defaults(run=_skip)
    for sub in (retry, skip):
        sub.add_argument("name", help="the reaction's name")
        sub.add_argument("stream", help="the parked stream (as `reactions parked` shows it)")
    timers = commands.add_parser("timers", help="pending durable timers, soonest first")
    timers.add_argument("--limit", type=int, default=100, help="at most this many")
    timers.set_defaults(run=_timers)
    json_flag(timers)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _short(text: str | None) -> str:
    """An error on one line, cut to the table's width."""
    if text is None:
        return ""
    line = " ".join(text.split())
    return line if len(line) <= _ERROR_WIDTH else line[: _ERROR_WIDTH - 1] + "…"


def _with_store(args: argparse.Namespace, work: Callable[[Any], Coroutine[Any, Any, int]]) -> int:
    async def run() -> int:
        store = _open_store(args)
        async with store:
            return await work(store)

    return asyncio.run(run())


def _status(inspector: Inspector, args: argparse.Namespace, out: _Out) -> int:
    """Each reaction with a checkpoint: where it is, what follows, what is parked, who runs it.

    Projections' parked events (`projection:<name>`) are not reactions: `parked` lists them.
    """
    checkpoints = {
        name.removeprefix(CHECKPOINT_PREFIX): point
        for name, point in inspector.checkpoints().items()
        if name.startswith(CHECKPOINT_PREFIX)
    }
    leased = inspector.kind == "postgresql"
    holders = inspector.lease_holders([CHECKPOINT_PREFIX + name for name in checkpoints])

    async def work(store: Any) -> int:  # noqa: ANN401 - either store
        parked = [p for p in await store.load_parked() if not p.reaction.startswith(PARKING_PREFIX)]
        names = sorted({*checkpoints, *(p.reaction for p in parked)})
        rows = []
        for name in names:
            point = checkpoints.get(name)
            own = [p for p in parked if p.reaction == name]
            position = 0 if point is None else point.position
            row: dict[str, Any] = {
                "name": name,
                "checkpoint": position,
                "events_after": inspector.count_after(position, None),
                "parked_streams": len({p.stream_id for p in own}),
                "parked_events": len(own),
                "moved_at": None if point is None else point.moved_at.isoformat(),
            }
            if leased:
                holder = holders.get(CHECKPOINT_PREFIX + name)
                row["running_in"] = None if holder is None else attrs.asdict(holder)
            rows.append(row)
        if args.json:
            for row in rows:
                out.line(orjson.dumps(row).decode())
            return 0
        if not rows:
            out.line("no reaction has run on this store")
            return 0
        _status_table(out, rows, checkpoints, holders if leased else None)
        return 0

    return _with_store(args, work)


def _status_table(
    out: _Out,
    rows: list[dict[str, Any]],
    checkpoints: dict[str, Checkpoint],
    holders: dict[str, LeaseHolder] | None,
) -> None:
    now = datetime.now(UTC)
    header = ["reaction", "checkpoint", "events after", "parked", "last moved"]
    table = []
    for row in rows:
        point = checkpoints.get(row["name"])
        ago = "never" if point is None else _ago((now - point.moved_at).total_seconds())
        parked_cell = _count(row["parked_streams"], "stream") + ", "
        parked_cell += _count(row["parked_events"], "event")
        cells = [row["name"], str(row["checkpoint"]), f"{row['events_after']:,}"]
        cells += [parked_cell if row["parked_events"] else "-", ago]
        if holders is not None:
            holder = holders.get(CHECKPOINT_PREFIX + row["name"])
            cells.append("no process" if holder is None else _holder(holder))
        table.append(cells)
    out.table([*header, "running in"] if holders is not None else header, table)


def _parked_json(parked: ParkedEvent) -> bytes:
    fields = attrs.asdict(parked)
    fields["parked_at"] = parked.parked_at.isoformat()
    fields["request"] = None if parked.request is None else str(parked.request)
    return orjson.dumps(fields)


def _parked(_: Inspector, args: argparse.Namespace, out: _Out) -> int:
    """The parked events of every reaction (or one), by reaction and position, with errors."""

    async def work(store: Any) -> int:  # noqa: ANN401 - either store
        rows: list[ParkedEvent] = await store.load_parked(args.name)
        if args.json:
            for parked in rows:
                out.line(_parked_json(parked).decode())
            return 0
        if not rows:
            out.line("nothing is parked")
            return 0
        header = ["reaction", "stream", "position", "event", "attempts", "error", "request"]
        table = [
            [
                p.reaction,
                p.stream_id,
                str(p.position),
                p.event_class,
                str(p.attempts),
                _short(p.error),
                "" if p.request is None else str(p.request),
            ]
            for p in rows
        ]
        out.table(header, table)
        return 0

    return _with_store(args, work)


def _ask(args: argparse.Namespace, out: _Out, request: ParkRequest, reason: str | None) -> int:
    async def work(store: Any) -> int:  # noqa: ANN401 - either store
        try:
            first = await ask_parked(store, args.name, args.stream, request, reason)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        except LookupError as exc:  # like an unknown stream elsewhere: exit code 1
            sys.stderr.write(f"fabula: error: {exc.args[0]}\n")
            return 1
        out.line(
            f"{request} requested for stream {args.stream} of reaction {args.name}, from "
            f"position {first.position} ({first.event_class}); the process running the "
            "reaction carries it out"
        )
        return 0

    return _with_store(args, work)


def _retry(_: Inspector, args: argparse.Namespace, out: _Out) -> int:
    """Ask for a parked stream to be handled again, in order, from its first event."""
    return _ask(args, out, ParkRequest.RETRY, None)


def _skip(_: Inspector, args: argparse.Namespace, out: _Out) -> int:
    """Ask for a parked stream's first event to be passed over, with the reason recorded."""
    return _ask(args, out, ParkRequest.SKIP, args.reason)


def _timer_json(timer: Timer) -> bytes:
    fields = attrs.asdict(timer)
    fields["due_at"] = timer.due_at.isoformat()
    fields["generation"] = str(timer.generation)
    claimed = timer.claimed_until
    fields["claimed_until"] = None if claimed is None else claimed.isoformat()
    return orjson.dumps(fields)


def _timers(_: Inspector, args: argparse.Namespace, out: _Out) -> int:
    """The pending timers, soonest first: when each is due, what it dispatches, its failures."""
    if args.limit < 1:
        raise UsageError(f"--limit must be at least 1, not {args.limit}")

    async def work(store: Any) -> int:  # noqa: ANN401 - either store
        timers: list[Timer] = (await store.load_timers())[: args.limit]
        if args.json:
            for timer in timers:
                out.line(_timer_json(timer).decode())
            return 0
        if not timers:
            out.line("no timer is pending")
            return 0
        now = datetime.now(UTC)
        table = []
        for timer in timers:
            seconds = (timer.due_at - now).total_seconds()
            due = f"in {_ago(seconds).removesuffix(' ago')}" if seconds > 0 else "due now"
            command = timer.command_type.rpartition(":")[2]
            cells = [timer.name, timer.due_at.isoformat(timespec="seconds"), due, command]
            table.append([*cells, str(timer.attempts), _short(timer.last_error)])
        out.table(["timer", "due at", "when", "command", "failures", "last error"], table)
        return 0

    return _with_store(args, work)
