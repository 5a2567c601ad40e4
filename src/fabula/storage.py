"""For store authors: the protocols a store implements and the decisions it can reuse.

An application needs none of this: it uses `fabula.EventStore` and a store
from `fabula.memory`, `fabula.sqlite` or `fabula.postgres`. A new store
implements some of these protocols, one per capability, and proves it with
the matching contract suite in `fabula.testing`:

| capability | protocol | contract suite |
|---|---|---|
| events and the global log | `fabula.EventStore` | `EventStoreContract` |
| projection checkpoints | `ProjectionStore` | `ProjectionStoreContract` |
| one active projector among processes | `ProjectionLeases` | (the store's own tests) |
| snapshots | `SnapshotStore` | `SnapshotStoreContract` |
| idempotent commands | `IdempotencyStore` | `IdempotencyStoreContract` |
| reactions' checkpoints and parked events | `ReactionStore` | `ReactionStoreContract` |
| durable timers | `TimerStore` | `TimerStoreContract` |
| stored names for tools (the `fabula` command) | `SerializingStore` | - |

Backends do I/O and shared code decides. A store calls these instead of
deciding again: `prepare_append` / `prepare_appends` check and encode a
call before any I/O (`*_off_loop`: in a worker thread past 1,000 events,
so a huge batch does not stop the event loop); `check_concurrency` and `match_retry` decide between
a new append, a retry and a conflict from what the store read;
`explain_duplicate` words a unique-index violation; `decode_rows` turns
stored rows into events; `require_checkpoint` guards a checkpoint's move;
`build_from_log` and `apply_events` rebuild a read model.
"""

from fabula._events import EventRegistration
from fabula._frozen import FrozenDict
from fabula._idempotency import (
    IdempotencyRecord,
    IdempotencyStore,
    UnitOfWork,
    current_unit_of_work,
)
from fabula._projection_store import (
    LogReader,
    ProjectionLeases,
    ProjectionStore,
    SkippedEvent,
    apply_events,
    build_from_log,
    require_checkpoint,
)
from fabula._public import publish as _publish
from fabula._reaction_store import ReactionStore, TimerStore, checkpoint_name
from fabula._serialization import SerializedEvent
from fabula._snapshots import Snapshot, SnapshotCodec, SnapshotStore
from fabula._store import (
    SerializingStore,
    check_concurrency,
    event_type_names,
    validate_append,
    validate_read_all,
    validate_read_stream,
)
from fabula._store_base import LogPage
from fabula._stored import (
    PendingAppend,
    StoredEvent,
    decode_rows,
    explain_duplicate,
    match_retry,
    prepare_append,
    prepare_append_off_loop,
    prepare_appends,
    prepare_appends_off_loop,
    reads_stored_first,
)

__all__ = [
    "EventRegistration",
    "FrozenDict",
    "IdempotencyRecord",
    "IdempotencyStore",
    "LogPage",
    "LogReader",
    "PendingAppend",
    "ProjectionLeases",
    "ProjectionStore",
    "ReactionStore",
    "SerializedEvent",
    "SerializingStore",
    "SkippedEvent",
    "Snapshot",
    "SnapshotCodec",
    "SnapshotStore",
    "StoredEvent",
    "TimerStore",
    "UnitOfWork",
    "apply_events",
    "build_from_log",
    "check_concurrency",
    "checkpoint_name",
    "current_unit_of_work",
    "decode_rows",
    "event_type_names",
    "explain_duplicate",
    "match_retry",
    "prepare_append",
    "prepare_append_off_loop",
    "prepare_appends",
    "prepare_appends_off_loop",
    "reads_stored_first",
    "require_checkpoint",
    "validate_append",
    "validate_read_all",
    "validate_read_stream",
]

_publish(__name__, globals(), __all__)
