"""The events the store contract suite writes, under `fabula.testing.*` names.

Importing `fabula.testing` registers nothing: the suite registers these two
in `default_registry` as its first test starts, and a test of one's own
that stores them calls `register_contract_events` first.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import attrs

from fabula._events import DomainEvent, EventRegistry

__all__ = ["CONTRACT_EVENTS", "Deposited", "Withdrawn", "register_contract_events"]


@attrs.frozen
class Deposited(DomainEvent[str]):
    """Money paid into an account (contract-suite event)."""

    amount: Decimal
    note: str = ""


@attrs.frozen
class Withdrawn(DomainEvent[str]):
    """Money taken out of an account (contract-suite event)."""

    amount: Decimal


CONTRACT_EVENTS: dict[str, type[DomainEvent[Any]]] = {
    "fabula.testing.Deposited": Deposited,
    "fabula.testing.Withdrawn": Withdrawn,
}
"""The contract suite's event classes by stored name."""


def register_contract_events(registry: EventRegistry) -> None:
    """Register the contract suite's events in `registry` (again is harmless).

    The contract suite does it for `default_registry`; call this for a store
    under test whose serializer uses another registry, or before storing
    `Deposited` or `Withdrawn` in a test of one's own.
    """
    for name, cls in CONTRACT_EVENTS.items():
        registry.register(cls, name)
