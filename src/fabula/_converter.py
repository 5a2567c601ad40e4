"""The cattrs converter and JSON codec under every event and snapshot.

Round trips are exact: UUID, Decimal, aware datetimes, dates, enums,
nested attrs classes, tuples and frozen mappings. A value that would not
come back as it went in (a float in a Decimal field, a naive datetime, an
ambiguous union) is refused, never coerced.
"""

from __future__ import annotations

import collections.abc
import functools
import math
from collections.abc import Callable, Mapping
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from enum import Enum
from types import UnionType
from typing import Any, Final, Union, get_args, get_origin
from uuid import UUID

import attrs
import cattrs
import orjson
from cattrs.strategies import configure_union_passthrough

from fabula._frozen import FrozenDict

__all__ = [
    "FieldValueError",
    "ambiguous_union",
    "check_aware",
    "decode_json",
    "encode_json",
    "make_converter",
    "unstructure_uuid",
]


class FieldValueError(ValueError):
    """Raised inside converter hooks; EventSerializer adds the event's context."""


def encode_json(value: object) -> str:
    """Encode `value` as compact JSON text (orjson; non-finite floats are refused earlier)."""
    return orjson.dumps(value).decode()


decode_json: Final = orjson.loads
"""Decode JSON text (orjson: exact floats, 64-bit integers)."""


def unstructure_uuid(value: object) -> str:
    if not isinstance(value, UUID):
        msg = f"expected a UUID, got {type(value).__name__} {value!r}"
        raise FieldValueError(msg)
    return str(value)


def _structure_uuid(value: object, _: object) -> UUID:
    if isinstance(value, UUID):
        return value
    if not isinstance(value, str):
        msg = f"expected a UUID string, got {value!r}"
        raise FieldValueError(msg)
    return UUID(value)


def _unstructure_decimal(value: object) -> str:
    if not isinstance(value, Decimal):
        msg = (
            f"expected a Decimal, got {type(value).__name__} {value!r}; floats are not exact, "
            f"pass Decimal('...') built from a string"
        )
        raise FieldValueError(msg)
    if not value.is_finite():
        msg = f"Decimal {value} is not a finite number"
        raise FieldValueError(msg)
    return str(value)


def _structure_decimal(value: object, _: object) -> Decimal:
    if isinstance(value, Decimal):
        return value
    if isinstance(value, str | int) and not isinstance(value, bool):
        try:
            return Decimal(value)
        except InvalidOperation:
            pass
    msg = f"expected a decimal string, got {value!r}"
    raise FieldValueError(msg)


def _unstructure_datetime(value: object) -> str:
    return check_aware(value).isoformat()


def check_aware(value: object) -> datetime:
    """Check a timestamp without formatting it (isoformat costs microseconds)."""
    if not isinstance(value, datetime):
        msg = f"expected a datetime, got {type(value).__name__} {value!r}"
        raise FieldValueError(msg)
    if value.utcoffset() is None:
        msg = f"naive datetime {value.isoformat()} has no timezone; use an aware datetime (UTC)"
        raise FieldValueError(msg)
    return value


def _structure_datetime(value: object, _: object) -> datetime:
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        parsed = datetime.fromisoformat(value)
    else:
        msg = f"expected an ISO 8601 datetime string, got {value!r}"
        raise FieldValueError(msg)
    if parsed.utcoffset() is None:
        msg = f"datetime {value!r} has no timezone"
        raise FieldValueError(msg)
    return parsed


def _unstructure_date(value: object) -> str:
    if not isinstance(value, date) or isinstance(value, datetime):
        msg = f"expected a date, got {type(value).__name__} {value!r}"
        raise FieldValueError(msg)
    return value.isoformat()


def _structure_date(value: object, _: object) -> date:
    if not isinstance(value, str):
        msg = f"expected an ISO 8601 date string, got {value!r}"
        raise FieldValueError(msg)
    return date.fromisoformat(value)


def _checked(kind: type, *, also: tuple[type, ...] = ()) -> Callable[[object], Any]:
    """Return an unstructure hook that passes `kind` values through and refuses others."""
    accepted = (kind, *also)

    def unstructure(value: object) -> object:
        if (isinstance(value, bool) and kind is not bool) or not isinstance(value, accepted):
            msg = f"expected {kind.__name__}, got {type(value).__name__} {value!r}"
            raise FieldValueError(msg)
        if kind is float and not math.isfinite(value):  # type: ignore[arg-type] # checked above
            msg = f"float {value!r} is not finite; JSON cannot hold it"
            raise FieldValueError(msg)
        return value

    return unstructure


def _is_enum(tp: object) -> bool:
    return isinstance(tp, type) and issubclass(tp, Enum)


def _enum_unstructurer(tp: type[Enum]) -> Callable[[object], Any]:
    def unstructure(value: object) -> object:
        if not isinstance(value, tp):
            msg = f"expected a {tp.__name__} member, got {value!r}"
            raise FieldValueError(msg)
        raw = value.value
        if not isinstance(raw, str | int | float | bool):
            msg = f"{tp.__name__} values must be str, int, float or bool to be stored, not {raw!r}"
            raise FieldValueError(msg)
        return raw

    return unstructure


_SCALARS = (int, str, float, bool, type(None))


def _is_scalar_union(tp: object) -> bool:
    return get_origin(tp) in (Union, UnionType) and all(arg in _SCALARS for arg in get_args(tp))


def _scalar_union_unstructurer(tp: object) -> Callable[[object], Any]:
    members = get_args(tp)

    def unstructure(value: object) -> object:
        kind = type(value)
        if kind in members or (kind is int and float in members):
            return value
        msg = f"expected {tp}, got {kind.__name__} {value!r}"
        raise FieldValueError(msg)

    return unstructure


def ambiguous_union(tp: object, seen: set[int] | None = None) -> object | None:
    """Return a union inside `tp` that would not decode to the type it was stored as."""
    seen = set() if seen is None else seen
    if id(tp) in seen:
        return None
    seen.add(id(tp))
    if get_origin(tp) in (Union, UnionType):
        others = [arg for arg in get_args(tp) if arg is not type(None)]
        scalars = all(arg in _SCALARS for arg in others)
        classes = all(isinstance(arg, type) and attrs.has(arg) for arg in others)
        if not (scalars or classes or len(others) == 1):
            return tp
    if isinstance(tp, type) and attrs.has(tp):
        attrs.resolve_types(tp)
        children: tuple[object, ...] = tuple(field.type for field in attrs.fields(tp))
    else:
        children = get_args(tp)
    for child in children:
        found = ambiguous_union(child, seen)
        if found is not None:
            return found
    return None


def _strict(kind: type, *, also: tuple[type, ...] = ()) -> Callable[[object, object], Any]:
    accepted = (kind, *also)

    def structure(value: object, _: object) -> object:
        if isinstance(value, bool) and kind is not bool:
            msg = f"expected {kind.__name__}, got {value!r}"
            raise FieldValueError(msg)
        if not isinstance(value, accepted):
            msg = f"expected {kind.__name__}, got {type(value).__name__} {value!r}"
            raise FieldValueError(msg)
        return float(value) if kind is float else value  # type: ignore[arg-type] # checked above

    return structure


_MAPPING_ORIGINS = (FrozenDict, collections.abc.Mapping, dict)


def _is_mapping(tp: object) -> bool:
    return tp in _MAPPING_ORIGINS or get_origin(tp) in _MAPPING_ORIGINS


def _mapping_args(tp: object) -> tuple[Any, Any]:
    args = get_args(tp)
    return (args[0], args[1]) if len(args) == 2 else (Any, Any)  # noqa: PLR2004


def make_converter() -> cattrs.Converter:
    """Build the strict cattrs converter fabula stores events with.

    It round-trips UUID, Decimal (as a string), timezone-aware datetime, date,
    Enum, nested attrs classes, tuples and mappings (decoded into
    `FrozenDict` unless the field is a `dict`), and refuses what would lose
    information: floats for Decimal fields, naive datetimes, strings for ints,
    non-finite numbers, and integers beyond 64 bits (JSON readers disagree
    on those; store them as Decimal or str).

    Returns:
        A new converter; extend it with your own hooks before handing it to
        an `EventSerializer`.
    """
    converter = cattrs.Converter(forbid_extra_keys=True)
    converter.register_unstructure_hook(UUID, unstructure_uuid)
    converter.register_structure_hook(UUID, _structure_uuid)
    converter.register_unstructure_hook(Decimal, _unstructure_decimal)
    converter.register_structure_hook(Decimal, _structure_decimal)
    converter.register_unstructure_hook(datetime, _unstructure_datetime)
    converter.register_structure_hook(datetime, _structure_datetime)
    converter.register_unstructure_hook(date, _unstructure_date)
    converter.register_structure_hook(date, _structure_date)
    converter.register_structure_hook(int, _strict(int))
    converter.register_structure_hook(float, _strict(float, also=(int,)))
    converter.register_structure_hook(str, _strict(str))
    converter.register_structure_hook(bool, _strict(bool))
    converter.register_unstructure_hook(int, _checked(int))
    converter.register_unstructure_hook(float, _checked(float, also=(int,)))
    converter.register_unstructure_hook(str, _checked(str))
    converter.register_unstructure_hook(bool, _checked(bool))
    converter.register_unstructure_hook_factory(_is_enum, _enum_unstructurer)
    configure_union_passthrough(int | str | float | bool | None, converter)
    converter.register_unstructure_hook_factory(_is_scalar_union, _scalar_union_unstructurer)
    converter.register_unstructure_hook_factory(_is_mapping, _mapping_unstructurer(converter))
    converter.register_structure_hook_factory(_is_mapping, _mapping_structurer(converter))
    return converter


def _mapping_unstructurer(
    converter: cattrs.Converter,
) -> Callable[[Any], Callable[[Any], dict[str, Any]]]:
    def factory(tp: Any) -> Callable[[Any], dict[str, Any]]:
        key_type, value_type = _mapping_args(tp)
        key: Callable[[Any], Any]
        if key_type is int:
            key = _int_key_text
        elif key_type is str:
            key = _checked(str)
        else:
            key = converter.get_unstructure_hook(key_type)
        value = converter.get_unstructure_hook(value_type)

        def unstructure(mapping: Any) -> dict[str, Any]:
            if not isinstance(mapping, Mapping):
                msg = f"expected a mapping, got {type(mapping).__name__} {mapping!r}"
                raise FieldValueError(msg)
            out = {key(k): value(v) for k, v in mapping.items()}
            if any(not isinstance(k, str) for k in out):
                msg = f"mapping keys must encode to strings: {mapping!r}"
                raise FieldValueError(msg)
            return out

        return unstructure

    return factory


def _mapping_structurer(converter: cattrs.Converter) -> Callable[[Any], Callable[[Any, Any], Any]]:
    def factory(tp: Any) -> Callable[[Any, Any], Any]:
        key_type, value_type = _mapping_args(tp)
        key: Callable[[Any], Any]
        if key_type is int:
            key = _int_key
        else:
            key_hook = converter.get_structure_hook(key_type)
            key = functools.partial(_apply_hook, key_hook, key_type)
        value_hook = converter.get_structure_hook(value_type)
        build: Callable[[Any], Any] = dict if (get_origin(tp) or tp) is dict else FrozenDict

        def structure(mapping: Any, _: Any) -> Any:
            if not isinstance(mapping, Mapping):
                msg = f"expected a JSON object, got {mapping!r}"
                raise FieldValueError(msg)
            return build({key(k): value_hook(v, value_type) for k, v in mapping.items()})

        return structure

    return factory


def _apply_hook(hook: Callable[[Any, Any], Any], tp: Any, value: Any) -> Any:
    return hook(value, tp)


def _int_key_text(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, int):
        msg = f"expected an int key, got {type(value).__name__} {value!r}"
        raise FieldValueError(msg)
    return str(value)


def _int_key(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)
    msg = f"expected an integer key, got {value!r}"
    raise FieldValueError(msg)
