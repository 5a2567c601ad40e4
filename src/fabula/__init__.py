"""fabula: async-first, fully typed CQRS and event sourcing on attrs and cattrs.

Declare events as frozen attrs classes with a stable name, write aggregates
whose methods record them, and keep them in an event store:

    store = fabula.memory.InMemoryEventStore()
    repo = fabula.Repository(store)
    await repo.save(order)
    again = await repo.get(Order, order.id)

The layers, from the inside out (docs/architecture.md draws them):

- **The kernel** (this package's private modules): events and their
  registry, serialization, aggregates, the repository, commands and
  queries, projections and pagination, reactions, process managers and
  durable timers. It decides everything that needs
  no I/O, stores' decisions included (`fabula._stored`,
  `fabula._projection_store`).
- **The stores**, which only do I/O around those decisions:
  `fabula.memory`, `fabula.sqlite`, `fabula.postgres`, one module or
  package each; store authors implement the protocols in `fabula.storage`.
- **Integrations and tools**: `fabula.testing` (contract suites,
  given/when/then, strategies) and the `fabula` command (`fabula.cli`).
- **The application** on top: `examples/orders` is the reference.

This module exports what an application uses every day; every error is in
`fabula.exceptions`, the most common ones here too.
"""

from importlib import import_module as _import_module
from importlib.metadata import PackageNotFoundError as _PackageNotFoundError
from importlib.metadata import version as _version
from types import ModuleType as _ModuleType
from typing import TYPE_CHECKING as _TYPE_CHECKING

from fabula import exceptions, memory, storage
from fabula._aggregate import Aggregate, apply
from fabula._capabilities import SqlStore, Store
from fabula._commands import (
    Command,
    CommandBus,
    Handler,
    HandlerObject,
    Message,
    Middleware,
    Next,
    Query,
    QueryBus,
)
from fabula._deletion import StreamDeleted, StreamDeletionStore
from fabula._events import (
    AggregateId,
    DomainEvent,
    EventMetadata,
    EventRegistry,
    JSONObject,
    JSONValue,
    Upcaster,
    current_metadata,
    default_registry,
    event,
    upcaster,
)
from fabula._idempotency import Idempotency
from fabula._inbox import Inbox, InboxHandler, IntegrationEventReceived, register_inbox_events
from fabula._integration import IntegrationContract, IntegrationEvent, Publisher, Relay
from fabula._middleware import Correlation, LogDispatch, RetryOnConflict
from fabula._monitor import LagReading, Monitor
from fabula._pagination import CursorCodec, KeyPart, Page, check_page_size
from fabula._personal import KeyEncryptionKey, KeyWrapper, personal
from fabula._personal_store import PersonalDataStore, SubjectForgotten
from fabula._process import Process, ProcessManager, ProcessStepped, register_process_events
from fabula._projection import Projection, VersionGuard, handles
from fabula._projections import ProjectionFailure, ProjectionState, ProjectionStatus, Projector
from fabula._public import publish as _publish
from fabula._reaction import Reaction, ReactionContext, reacts
from fabula._reaction_store import ParkedEvent, ParkRequest, Timer
from fabula._reactor import ReactionState, ReactionStatus, Reactor
from fabula._repository import Repository
from fabula._serialization import EventSerializer, make_converter
from fabula._sql import Dialect, ReadModel, Sql, SqlProjection
from fabula._store import (
    AppendResult,
    EventStore,
    EventTypeFilter,
    Expected,
    ExpectedVersion,
    RecordedEvent,
    StreamAppend,
)
from fabula._timers import Timers
from fabula.exceptions import (
    AggregateNotFoundError,
    BrokerUnavailableError,
    ConcurrencyError,
    DomainError,
    FabulaError,
    IdempotencyConflictError,
    IntegrationEventError,
    InvalidCursorError,
    InvalidPageSizeError,
    PersonalDataError,
    StoreError,
    StoreUnavailableError,
    StreamDeletedError,
    StreamNotDeletedError,
    SubjectForgottenError,
)

if _TYPE_CHECKING:
    from fabula import postgres as postgres
    from fabula import sqlite as sqlite

try:
    __version__ = _version("fabula")
except _PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0+unknown"

__all__ = [
    "Aggregate",
    "AggregateId",
    "AggregateNotFoundError",
    "AppendResult",
    "BrokerUnavailableError",
    "Command",
    "CommandBus",
    "ConcurrencyError",
    "Correlation",
    "CursorCodec",
    "Dialect",
    "DomainError",
    "DomainEvent",
    "EventMetadata",
    "EventRegistry",
    "EventSerializer",
    "EventStore",
    "EventTypeFilter",
    "Expected",
    "ExpectedVersion",
    "FabulaError",
    "Handler",
    "HandlerObject",
    "Idempotency",
    "IdempotencyConflictError",
    "Inbox",
    "InboxHandler",
    "IntegrationContract",
    "IntegrationEvent",
    "IntegrationEventError",
    "IntegrationEventReceived",
    "InvalidCursorError",
    "InvalidPageSizeError",
    "JSONObject",
    "JSONValue",
    "KeyEncryptionKey",
    "KeyPart",
    "KeyWrapper",
    "LagReading",
    "LogDispatch",
    "Message",
    "Middleware",
    "Monitor",
    "Next",
    "Page",
    "ParkRequest",
    "ParkedEvent",
    "PersonalDataError",
    "PersonalDataStore",
    "Process",
    "ProcessManager",
    "ProcessStepped",
    "Projection",
    "ProjectionFailure",
    "ProjectionState",
    "ProjectionStatus",
    "Projector",
    "Publisher",
    "Query",
    "QueryBus",
    "Reaction",
    "ReactionContext",
    "ReactionState",
    "ReactionStatus",
    "Reactor",
    "ReadModel",
    "RecordedEvent",
    "Relay",
    "Repository",
    "RetryOnConflict",
    "Sql",
    "SqlProjection",
    "SqlStore",
    "Store",
    "StoreError",
    "StoreUnavailableError",
    "StreamAppend",
    "StreamDeleted",
    "StreamDeletedError",
    "StreamDeletionStore",
    "StreamNotDeletedError",
    "SubjectForgotten",
    "SubjectForgottenError",
    "Timer",
    "Timers",
    "Upcaster",
    "VersionGuard",
    "__version__",
    "apply",
    "check_page_size",
    "current_metadata",
    "default_registry",
    "event",
    "exceptions",
    "handles",
    "make_converter",
    "memory",
    "personal",
    "reacts",
    "register_inbox_events",
    "register_process_events",
    "storage",
    "upcaster",
]

_publish(__name__, globals(), __all__)

_LAZY = frozenset({"sqlite", "postgres"})


def __getattr__(name: str) -> _ModuleType:
    """Import `fabula.sqlite` and `fabula.postgres` on first use (psycopg only when needed)."""
    if name in _LAZY:
        return _import_module(f"fabula.{name}")
    msg = f"module 'fabula' has no attribute {name!r}"
    raise AttributeError(msg)


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
