"""Generated fast paths for encoding and decoding one event class.

cattrs' generic hooks cost a Python call per field and per check; most event
fields are plain str, int, bool, float, UUID and Decimal, which a generated
function can check and convert inline. The fast paths only ever accept or
give up (raise `Mismatch`): the caller then takes the fully checked cattrs
path, which either succeeds or raises the precise error. So they change
speed, never behaviour.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from decimal import Decimal
from typing import Any
from uuid import UUID

import attrs
import cattrs

from fabula._uuids import uuid_from_hex

__all__ = ["Mismatch", "fast_decoder", "fast_encoder"]


class Mismatch(Exception):  # noqa: N818 - a control-flow signal, not an error for users
    """The fast path does not handle this value; take the checked path."""


_SCALARS = (str, int, bool)


def _fields(cls: type) -> list[attrs.Attribute[Any]]:
    from fabula._events import BASE_FIELDS  # noqa: PLC0415 - _events imports nothing from here

    attrs.resolve_types(cls)
    return [f for f in attrs.fields(cls) if f.name not in BASE_FIELDS and f.init]


def fast_decoder(cls: type, converter: cattrs.Converter) -> Callable[..., Any]:
    """Generate `decode(payload, aggregate_id, version, event_id, timestamp, metadata)`."""
    fields = _fields(cls)
    env: dict[str, Any] = {
        "Mismatch": Mismatch,
        "cls": cls,
        "Decimal": Decimal,
        "uuid_from_hex": uuid_from_hex,
    }
    lines = [
        "def decode(p, aggregate_id, version, event_id, timestamp, metadata):",
        f"    if len(p) != {len(fields)}:",
        "        raise Mismatch",
    ]
    for i, field in enumerate(fields):
        tp = field.type
        lines.append(f"    v{i} = p[{field.name!r}]")
        if tp in _SCALARS or tp is float:
            env[f"t{i}"] = tp
            lines.append(f"    if v{i}.__class__ is not t{i}: raise Mismatch")
        elif tp is UUID:
            # UUID(text) strips every dash and reads 32 hex digits: so does this,
            # for the 36-character form only, without UUID.__init__'s checks.
            lines += [
                f"    if v{i}.__class__ is not str: raise Mismatch",
                f"    h = v{i}.replace('-', '')",
                f"    if len(v{i}) != 36 or len(h) != 32: raise Mismatch",
                f"    v{i} = uuid_from_hex(h)",
            ]
        elif tp is Decimal:
            lines += [
                f"    if v{i}.__class__ is not str: raise Mismatch",
                f"    v{i} = Decimal(v{i})",
            ]
        else:
            env[f"h{i}"], env[f"T{i}"] = converter.get_structure_hook(tp), tp
            lines.append(f"    v{i} = h{i}(v{i}, T{i})")
    arguments = [f"{field.alias}=v{i}" for i, field in enumerate(fields)]
    arguments += [f"{name}={name}" for name in _BASE_ARGUMENTS]
    lines.append(f"    return cls({', '.join(arguments)})")
    return _compile(lines, env, "decode", cls)


_BASE_ARGUMENTS = ("aggregate_id", "version", "event_id", "timestamp", "metadata")


def fast_encoder(cls: type) -> Callable[[Any], dict[str, Any]]:
    """Generate `encode(event) -> dict` for classes whose own fields are all simple.

    Raises:
        Mismatch: A field's type is not one the fast path handles.
    """
    fields = _fields(cls)
    env: dict[str, Any] = {
        "Mismatch": Mismatch,
        "UUID": UUID,
        "Decimal": Decimal,
        "isfinite": math.isfinite,
    }
    lines = ["def encode(e):"]
    items = []
    for i, field in enumerate(fields):
        tp = field.type
        lines.append(f"    v{i} = e.{field.name}")
        if tp in _SCALARS:
            env[f"t{i}"] = tp
            lines.append(f"    if v{i}.__class__ is not t{i}: raise Mismatch")
        elif tp is float:
            lines.append(
                f"    if v{i}.__class__ is not float or not isfinite(v{i}): raise Mismatch"
            )
        elif tp is UUID:
            lines += [f"    if v{i}.__class__ is not UUID: raise Mismatch", f"    v{i} = str(v{i})"]
        elif tp is Decimal:
            lines += [
                f"    if v{i}.__class__ is not Decimal or not v{i}.is_finite(): raise Mismatch",
                f"    v{i} = str(v{i})",
            ]
        else:
            raise Mismatch
        items.append(f"{field.name!r}: v{i}")
    lines.append(f"    return {{{', '.join(items)}}}")
    return _compile(lines, env, "encode", cls)


def _compile(lines: list[str], env: dict[str, Any], name: str, cls: type) -> Callable[..., Any]:
    source = "\n".join(lines)
    code = compile(source, f"<fabula generated {name} {cls.__qualname__}>", "exec")
    exec(code, env)  # noqa: S102 - source built above from attribute names, as attrs does
    function: Callable[..., Any] = env[name]
    return function
