"""Snapshots: an aggregate's state at a version, so long streams load in constant time."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol, TypeVar, runtime_checkable

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from fabula._aggregate import Aggregate
from fabula._converter import decode_json, encode_json, make_converter
from fabula._events import AggregateId
from fabula._personal import gather, layout

__all__ = ["Snapshot", "SnapshotCodec", "SnapshotStore"]

logger = logging.getLogger("fabula.snapshots")

A = TypeVar("A", bound=Aggregate[Any])


@attrs.frozen
class Snapshot:
    """An aggregate's state after a given version of its stream.

    Attributes:
        stream_id: The aggregate's stream.
        aggregate_type: The qualified name of the aggregate class.
        version: The stream version the state includes.
        schema_version: The aggregate class's `snapshot_version` when taken.
        state: The state as a JSON object.
    """

    stream_id: str
    aggregate_type: str
    version: int
    schema_version: int
    state: str


@runtime_checkable
class SnapshotStore(Protocol):
    """A store that can keep the latest snapshot of each stream."""

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        """Keep `snapshot` unless a snapshot of a later version is already stored."""
        ...

    async def load_snapshot(self, stream_id: str) -> Snapshot | None:
        """Return the latest snapshot of `stream_id`, or None."""
        ...


def type_name(cls: type) -> str:
    """Return the name snapshots record for an aggregate class."""
    return f"{cls.__module__}.{cls.__qualname__}"


_OMITTED = {"id": override(omit=True)}
_PASSED = {"id": override(struct_hook=lambda value, _: value)}


@attrs.define(repr=False)
class SnapshotCodec:
    """Turns attrs aggregates into snapshots and back, with the events' converter.

    Args:
        converter: The cattrs converter; `make_converter()` if omitted.
    """

    converter: cattrs.Converter = attrs.field(factory=make_converter)
    _encoders: dict[type, Callable[[Any], dict[str, Any]]] = attrs.field(init=False, factory=dict)
    _decoders: dict[type, Callable[[Any, Any], Any]] = attrs.field(init=False, factory=dict)

    def __repr__(self) -> str:
        return f"<SnapshotCodec: {len(self._encoders)} aggregate types>"

    def encode(self, aggregate: Aggregate[Any]) -> Snapshot:
        """Take a snapshot of `aggregate`'s saved state.

        Its personal fields (`fabula.personal`) are gathered by subject, in
        clear: the store seals them when it saves the snapshot.

        Raises:
            TypeError: The aggregate is not an attrs class or has pending events.
        """
        cls = type(aggregate)
        if aggregate.pending_events:
            msg = "cannot snapshot an aggregate with pending events"
            raise TypeError(msg)
        encoder = self._encoders.get(cls)
        if encoder is None:
            if "__attrs_attrs__" not in cls.__dict__:
                msg = f"snapshots need an attrs aggregate; {cls.__qualname__} is not one"
                raise TypeError(msg)
            encoder = make_dict_unstructure_fn(cls, self.converter, **_OMITTED)  # type: ignore[arg-type]
            self._encoders[cls] = encoder
        state = encoder(aggregate)
        shape = layout(cls)
        if shape is not None:  # gathered for the store to seal (see PersonalSide)
            gather(state, aggregate, shape)
        return Snapshot(
            stream_id=str(aggregate.id),
            aggregate_type=type_name(cls),
            version=aggregate.version,
            schema_version=cls.snapshot_version,
            state=encode_json(state),
        )

    def decode(self, snapshot: Snapshot, cls: type[A], aggregate_id: AggregateId) -> A | None:
        """Rebuild an aggregate from `snapshot`, or return None if it cannot be trusted.

        A snapshot of another class, of another `snapshot_version`, or whose
        state does not decode is ignored with a logged warning, so the caller
        replays the full stream instead.
        """
        if snapshot.aggregate_type != type_name(cls):
            reason = f"it is of {snapshot.aggregate_type}"
        elif snapshot.schema_version != cls.snapshot_version:
            reason = f"its snapshot_version {snapshot.schema_version} is not {cls.snapshot_version}"
        else:
            try:
                decoder = self._decoders.get(cls)
                if decoder is None:
                    decoder = make_dict_structure_fn(cls, self.converter, **_PASSED)  # type: ignore[arg-type]
                    self._decoders[cls] = decoder
                state = decode_json(snapshot.state)
                state["id"] = aggregate_id
                aggregate: A = decoder(state, cls)
                aggregate.restore_version(snapshot.version)
            except Exception as exc:  # noqa: BLE001 - any failure means: do not trust it
                reason = f"its state does not decode ({exc!r})"
            else:
                return aggregate
        warn_ignored(cls, aggregate_id, snapshot.version, reason)
        return None


def warn_ignored(cls: type, aggregate_id: AggregateId, version: int, reason: str) -> None:
    """Log that a snapshot is not trusted and the whole stream is replayed instead."""
    logger.warning(
        "ignoring the snapshot of %s %s at version %d: %s; replaying its whole stream",
        cls.__qualname__,
        aggregate_id,
        version,
        reason,
    )
