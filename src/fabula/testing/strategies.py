"""Hypothesis strategies that build events from their attrs fields.

    from fabula.testing import strategies

    @given(strategies.events(OrderItemAdded))
    def test_round_trip(event): ...

Values are drawn so that they can be stored exactly: finite Decimals,
timezone-aware datetimes, finite floats, 64-bit integers, text without
surrogates.
"""

from __future__ import annotations

import collections.abc
import enum
import types
import typing
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, Literal, TypeVar, get_args, get_origin
from uuid import UUID

import attrs

from fabula._events import BASE_FIELDS, DomainEvent, EventRegistry, default_registry
from fabula._frozen import FrozenDict

try:
    from hypothesis import strategies as st
except ImportError as exc:  # pragma: no cover - depends on the environment
    msg = "fabula.testing.strategies needs hypothesis: pip install 'fabula[testing]'"
    raise ImportError(msg) from exc

__all__ = ["any_event", "events", "values"]

E = TypeVar("E", bound=DomainEvent)

_SIMPLE: dict[object, st.SearchStrategy[Any]] = {
    UUID: st.uuids(),
    Decimal: st.decimals(allow_nan=False, allow_infinity=False),
    datetime: st.datetimes(timezones=st.just(UTC)),
    date: st.dates(),
    str: st.text(),
    int: st.integers(min_value=-(2**63), max_value=2**64 - 1),
    float: st.floats(allow_nan=False, allow_infinity=False),
    bool: st.booleans(),
    type(None): st.none(),
}

_MAPPINGS = (FrozenDict, collections.abc.Mapping, dict)


def events(event_type: type[E]) -> st.SearchStrategy[E]:
    """Build instances of `event_type` with every own field drawn from its type.

    The base fields keep their defaults (unstamped, fresh id, now), as if a
    domain method had just created the event.

    Args:
        event_type: An attrs subclass of `DomainEvent`.

    Returns:
        A strategy of `event_type` instances.
    """
    attrs.resolve_types(event_type)
    fields = {
        field.name: values(field.type)
        for field in attrs.fields(event_type)
        if field.name not in BASE_FIELDS and field.init
    }
    return st.builds(event_type, **fields)


def any_event(registry: EventRegistry | None = None) -> st.SearchStrategy[DomainEvent[Any]]:
    """Build an instance of any event class registered in `registry`.

    Args:
        registry: Where to find the event classes; `default_registry` if omitted.

    Returns:
        A strategy drawing one registered class, then an instance of it.
    """
    source = default_registry if registry is None else registry
    classes = sorted((entry.cls for entry in source), key=lambda cls: cls.__qualname__)
    return st.one_of([events(cls) for cls in classes])


def values(tp: object) -> st.SearchStrategy[Any]:  # noqa: PLR0911 - one branch per kind of type
    """Return a strategy for values of the type `tp` that fabula can store exactly.

    Covers UUID, Decimal, aware datetime, date, str, int, float, bool, None,
    Enum, Literal, Optional and other unions, tuples, lists, mappings and
    nested attrs classes; anything else falls back to `st.from_type`.
    """
    if tp in _SIMPLE:
        return _SIMPLE[tp]
    origin, args = get_origin(tp), get_args(tp)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return st.sampled_from(tp)
    if origin is Literal:
        return st.sampled_from(args)
    if origin in (typing.Union, types.UnionType):
        return st.one_of([values(arg) for arg in args])
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return st.lists(values(args[0]), max_size=5).map(tuple)
        return st.tuples(*(values(arg) for arg in args))
    if origin in (list, collections.abc.Sequence):
        return st.lists(values(args[0]), max_size=5)
    if tp in _MAPPINGS or origin in _MAPPINGS:
        key, value = args if len(args) == 2 else (str, str)
        build: Any = dict if (origin or tp) is dict else FrozenDict
        return st.dictionaries(values(key), values(value), max_size=5).map(build)
    if isinstance(tp, type) and attrs.has(tp):
        attrs.resolve_types(tp)
        return st.builds(tp, **{f.name: values(f.type) for f in attrs.fields(tp) if f.init})
    return st.from_type(tp)  # type: ignore[arg-type] # any type form, as hypothesis allows
