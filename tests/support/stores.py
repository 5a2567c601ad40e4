"""Types of the store fixtures in `tests/conftest.py`."""

from collections.abc import Callable
from typing import TypeAlias

from fabula.sqlite import SQLiteEventStore

OpenSQLite: TypeAlias = Callable[..., SQLiteEventStore]
"""`open_sqlite(path=None, **options)`: a SQLiteEventStore closed at teardown."""
