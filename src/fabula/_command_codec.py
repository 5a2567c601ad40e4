"""Commands kept in storage (timers, process steps): their class's name and their fields as JSON."""

from __future__ import annotations

from typing import Any

import attrs
import cattrs

from fabula._commands import Command, CommandBus
from fabula._converter import decode_json, encode_json
from fabula.exceptions import SerializationError

__all__ = ["PlannedCommand", "command_type_name", "decode_command", "encode_command"]

_NOT_STORED = frozenset({"idempotency_key", "message_id"})


def command_type_name(kind: type) -> str:
    """How a stored command names its class: `module:qualname`."""
    return f"{kind.__module__}:{kind.__qualname__}"


def encode_command(converter: cattrs.Converter, command: Command[Any]) -> PlannedCommand:
    """Turn `command` into what is stored: its class's name and its fields as JSON.

    Its idempotency key and message id are not kept: whoever sends it gives
    it keys of its own.

    Raises:
        TypeError: It is not a `fabula.Command`.
        SerializationError: Its fields cannot be encoded.
    """
    if not isinstance(command, Command):
        msg = f"expected a fabula.Command, not {command!r}"
        raise TypeError(msg)
    try:
        fields = converter.unstructure(command)
        payload = encode_json({k: v for k, v in fields.items() if k not in _NOT_STORED})
    except Exception as exc:
        msg = f"the command {command!r} cannot be stored: {exc}"
        raise SerializationError(msg) from exc
    return PlannedCommand(command_type_name(type(command)), payload)


def decode_command(
    converter: cattrs.Converter, bus: CommandBus, command_type: str, fields: str
) -> Command[Any]:
    """Rebuild a stored command, its class found among those `bus` has handlers for.

    A class is never imported from what storage says: only the bus's own
    command types can be rebuilt.

    Raises:
        LookupError: The bus has no handler for `command_type`.
        SerializationError: The fields do not decode as that class.
    """
    kind = next((t for t in bus.message_types() if command_type_name(t) == command_type), None)
    if kind is None:
        msg = f"no handler on the bus for the stored command {command_type}"
        raise LookupError(msg)
    try:
        command: Command[Any] = converter.structure(decode_json(fields), kind)
    except Exception as exc:
        msg = f"a stored command does not decode as {kind.__qualname__}: {exc}"
        raise SerializationError(msg) from exc
    return command


@attrs.frozen
class PlannedCommand:
    """A command a process step decided to send, as stored.

    Attributes:
        command_type: Its class, as `module:qualname`.
        fields: Its fields, as JSON.
    """

    command_type: str
    fields: str
