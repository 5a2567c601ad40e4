"""fabula: async-first, fully typed CQRS and event sourcing on attrs and cattrs.

Declare events as frozen attrs classes with a stable name, write aggregates
whose methods record them, and keep them in an event store:

    store = fabula.memory.InMemoryEventStore()
    repo = fabula.Repository(store)
    await repo.save(order)
    again = await repo.get(Order, order.id)
"""

from importlib.metadata import PackageNotFoundError as _PackageNotFoundError
from importlib.metadata import version as _version

from fabula import exceptions, memory
from fabula._aggregate import Aggregate, apply
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
from fabula._events import (
    AggregateId,
    DomainEvent,
    EventMetadata,
    EventRegistration,
    EventRegistry,
    JSONObject,
    JSONValue,
    Upcaster,
    current_metadata,
    default_registry,
    event,
    upcaster,
)
from fabula._frozen import FrozenDict
from fabula._idempotency import (
    Idempotency,
    IdempotencyRecord,
    IdempotencyStore,
    UnitOfWork,
    current_unit_of_work,
)
from fabula._middleware import Correlation, LogDispatch, RetryOnConflict
from fabula._pagination import CursorCodec, KeyPart, Page, check_page_size
from fabula._projection import Projection, VersionGuard, handles
from fabula._projection_store import ProjectionStore, SkippedEvent
from fabula._projections import ProjectionFailure, ProjectionState, ProjectionStatus, Projector
from fabula._repository import Repository
from fabula._serialization import EventSerializer, SerializedEvent, make_converter
from fabula._snapshots import Snapshot, SnapshotCodec, SnapshotStore
from fabula._store import (
    AppendResult,
    EventStore,
    EventTypeFilter,
    Expected,
    ExpectedVersion,
    RecordedEvent,
    StreamAppend,
)
from fabula._store_base import LogPage
from fabula.exceptions import (
    AggregateNotFoundError,
    CheckpointError,
    ConcurrencyError,
    DomainError,
    DuplicateEventIdError,
    DuplicateEventTypeError,
    DuplicateHandlerError,
    EmptyAppendError,
    EventTypeError,
    EventVersionError,
    FabulaError,
    HandlerNotFoundError,
    IdempotencyConflictError,
    IdempotencyKeyTakenError,
    InvalidAppendError,
    InvalidCursorError,
    InvalidPageSizeError,
    InvalidReadError,
    MessageTypeError,
    MissingApplyHandlerError,
    NotAnEventError,
    ProjectionError,
    SchemaVersionError,
    SerializationError,
    StoreClosedError,
    StoreError,
    StoreUnavailableError,
    StreamMismatchError,
    UnknownEventTypeError,
    UnregisteredEventError,
    UpcastError,
)

try:
    __version__ = _version("fabula")
except _PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0+unknown"

__all__ = [
    "Aggregate",
    "AggregateId",
    "AggregateNotFoundError",
    "AppendResult",
    "CheckpointError",
    "Command",
    "CommandBus",
    "ConcurrencyError",
    "Correlation",
    "CursorCodec",
    "DomainError",
    "DomainEvent",
    "DuplicateEventIdError",
    "DuplicateEventTypeError",
    "DuplicateHandlerError",
    "EmptyAppendError",
    "EventMetadata",
    "EventRegistration",
    "EventRegistry",
    "EventSerializer",
    "EventStore",
    "EventTypeError",
    "EventTypeFilter",
    "EventVersionError",
    "Expected",
    "ExpectedVersion",
    "FabulaError",
    "FrozenDict",
    "Handler",
    "HandlerNotFoundError",
    "HandlerObject",
    "Idempotency",
    "IdempotencyConflictError",
    "IdempotencyKeyTakenError",
    "IdempotencyRecord",
    "IdempotencyStore",
    "InvalidAppendError",
    "InvalidCursorError",
    "InvalidPageSizeError",
    "InvalidReadError",
    "JSONObject",
    "JSONValue",
    "KeyPart",
    "LogDispatch",
    "LogPage",
    "Message",
    "MessageTypeError",
    "Middleware",
    "MissingApplyHandlerError",
    "Next",
    "NotAnEventError",
    "Page",
    "Projection",
    "ProjectionError",
    "ProjectionFailure",
    "ProjectionState",
    "ProjectionStatus",
    "ProjectionStore",
    "Projector",
    "Query",
    "QueryBus",
    "RecordedEvent",
    "Repository",
    "RetryOnConflict",
    "SchemaVersionError",
    "SerializationError",
    "SerializedEvent",
    "SkippedEvent",
    "Snapshot",
    "SnapshotCodec",
    "SnapshotStore",
    "StoreClosedError",
    "StoreError",
    "StoreUnavailableError",
    "StreamAppend",
    "StreamMismatchError",
    "UnitOfWork",
    "UnknownEventTypeError",
    "UnregisteredEventError",
    "UpcastError",
    "Upcaster",
    "VersionGuard",
    "__version__",
    "apply",
    "check_page_size",
    "current_metadata",
    "current_unit_of_work",
    "default_registry",
    "event",
    "exceptions",
    "handles",
    "make_converter",
    "memory",
    "upcaster",
]
