"""PostgresEventStore: the event store for several processes on several machines.

Install with `pip install fabula[postgres]` (psycopg 3 and psycopg-pool).
The package's parts, each doing the I/O for decisions made in the kernel:

- `_store`: the `PostgresEventStore` facade: opening, reads, snapshots.
- `_append`: appends, idempotency records, and the outcome of a commit
  whose answer was lost.
- `_notify`: LISTEN/NOTIFY between processes.
- `_projections`: checkpoints, leases and rebuilds (a collaborator of the store).
- `_schema`: the schema, its migrations and every statement.
- `_connections`: the pool, psycopg's errors mapped to fabula's in one
  place, and connection strings checked and shown without their password.
- `_inspect`: the `fabula` command's read-only view.
"""

from fabula._metrics import Horizon
from fabula._public import publish as _publish
from fabula.postgres._connections import check_conninfo
from fabula.postgres._store import PostgresEventStore, Tx

__all__ = ["Horizon", "PostgresEventStore", "Tx", "check_conninfo"]

_publish(__name__, globals(), __all__)
