"""Give public objects the module users import them from, so tracebacks show public paths."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Iterable, Mapping

__all__ = ["publish"]


def publish(module: str, namespace: Mapping[str, object], names: Iterable[str]) -> None:
    """Set `__module__` to `module` for each class and function in `names` defined privately.

    A class's own string annotations are resolved first, in its defining
    module: `typing.get_type_hints` (which attrs and cattrs call, for
    subclasses too) evaluates them in the namespace `__module__` names, and
    `fabula` does not import `UUID` or `datetime`.

    Args:
        module: The public module, such as `"fabula"`.
        namespace: Its globals.
        names: Its `__all__`.
    """
    for name in names:
        obj = namespace[name]
        if not (isinstance(obj, type) or inspect.isfunction(obj)):
            continue
        home = obj.__module__
        if not any(part.startswith("_") for part in home.split(".")):
            continue  # defined in a public module already
        if isinstance(obj, type):
            _resolve_own_annotations(obj)
        obj.__module__ = module


def _resolve_own_annotations(cls: type) -> None:
    own = inspect.get_annotations(cls)
    if not any(isinstance(value, str) for value in own.values()):
        return
    hints = typing.get_type_hints(cls, include_extras=True)
    cls.__annotations__ = {key: hints.get(key, value) for key, value in own.items()}
