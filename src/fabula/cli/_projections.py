"""The `fabula projections` commands: status and rebuild, with the application's projector."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs
import orjson

from fabula._events import default_registry
from fabula._inspect import Inspector, LeaseHolder
from fabula._personal import KeyEncryptionKey
from fabula._projections import Projector
from fabula._store import SerializingStore
from fabula.cli._output import UsageError, _ago, _lines, _Out, _progress
from fabula.exceptions import PersonalDataError


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
    store = _open_store(args)
    async with store:
        projector = target if isinstance(target, Projector) else None
        if projector is None and callable(target):
            projector = target(store)
        if not isinstance(projector, Projector):
            msg = f"--app {args.app} is neither a fabula.Projector nor builds one from a store"
            raise UsageError(msg)
        result: int = await work(projector, projector.store)
        return result


def _open_store(args: argparse.Namespace) -> Any:  # noqa: ANN401 - either store
    """The store `--store` names, with the key-encryption key `--kek-env` names, if set."""
    key = _key_encryption_key(args.kek_env, explicit=args.kek_env_given)
    location, schema = args.store, args.schema
    if location.startswith(("postgresql://", "postgres://")):
        from fabula.postgres import PostgresEventStore  # noqa: PLC0415 - an optional driver

        return PostgresEventStore(location, schema=schema, key_encryption_key=key)
    from fabula.sqlite import SQLiteEventStore  # noqa: PLC0415

    return SQLiteEventStore(location, key_encryption_key=key)


def _key_encryption_key(variable: str, *, explicit: bool) -> KeyEncryptionKey | None:
    """The key in `variable`: None if it is unset (an error when the variable was named)."""
    if not os.environ.get(variable) and not explicit:
        return None
    try:
        return KeyEncryptionKey.from_env(variable)
    except PersonalDataError as exc:
        raise UsageError(str(exc)) from None


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
