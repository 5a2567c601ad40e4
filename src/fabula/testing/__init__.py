"""Tools for testing fabula applications and stores: import them in your own tests.

- A contract suite per capability, each run unchanged against every store
  (subclass it and provide the `event_store_factory` fixture, one for all):
  `EventStoreContract`, `ProjectionStoreContract`, `SnapshotStoreContract`,
  `IdempotencyStoreContract`, `ReactionStoreContract` and
  `TimerStoreContract`.
- `check_against_model`: the hypothesis state machine the suite runs, for
  use on its own.
- `given` (also named `scenario`, beside hypothesis's own `given`): given /
  when / then scenarios for aggregates.
- `fabula.testing.strategies`: hypothesis strategies that build events.

Needs the `testing` extra: `pip install 'fabula[testing]'`.
"""

try:
    import hypothesis as _hypothesis  # noqa: F401
    import pytest as _pytest  # noqa: F401, PT013 - only checks that pytest is installed
except ImportError as exc:  # pragma: no cover - depends on the environment
    msg = "fabula.testing needs pytest and hypothesis: pip install 'fabula[testing]'"
    raise ImportError(msg) from exc

from fabula._public import publish as _publish
from fabula.testing import strategies
from fabula.testing._contract import EventStoreContract, StoreFactory
from fabula.testing._contract_events import (
    CONTRACT_EVENTS,
    Deposited,
    Withdrawn,
    register_contract_events,
)
from fabula.testing._contract_idempotency import IdempotencyStoreContract
from fabula.testing._contract_projections import ProjectionStoreContract
from fabula.testing._contract_reactions import ReactionStoreContract, TimerStoreContract
from fabula.testing._contract_snapshots import SnapshotStoreContract
from fabula.testing._model import check_against_model
from fabula.testing._scenario import Given, Outcome, given, scenario
from fabula.testing._suite import deposit

__all__ = [
    "CONTRACT_EVENTS",
    "Deposited",
    "EventStoreContract",
    "Given",
    "IdempotencyStoreContract",
    "Outcome",
    "ProjectionStoreContract",
    "ReactionStoreContract",
    "SnapshotStoreContract",
    "StoreFactory",
    "TimerStoreContract",
    "Withdrawn",
    "check_against_model",
    "deposit",
    "given",
    "register_contract_events",
    "scenario",
    "strategies",
]

_publish(__name__, globals(), __all__)
