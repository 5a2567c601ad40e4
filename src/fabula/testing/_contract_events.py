"""The events the store contract suite writes, registered under `fabula.testing.*` names."""

from __future__ import annotations

from decimal import Decimal

import attrs

from fabula._events import DomainEvent, EventRegistry, default_registry

__all__ = ["CONTRACT_EVENTS", "Deposited", "Withdrawn", "register_contract_events"]


@attrs.frozen
class Deposited(DomainEvent):
    """Money paid into an account (contract-suite event)."""

    amount: Decimal
    note: str = ""


@attrs.frozen
class Withdrawn(DomainEvent):
    """Money taken out of an account (contract-suite event)."""

    amount: Decimal


CONTRACT_EVENTS: dict[str, type[DomainEvent]] = {
    "fabula.testing.Deposited": Deposited,
    "fabula.testing.Withdrawn": Withdrawn,
}
"""The contract suite's event classes by stored name."""


def register_contract_events(registry: EventRegistry) -> None:
    """Register the contract suite's events in `registry`.

    They are in `default_registry` already; call this for a store under test
    whose serializer uses another registry.
    """
    for name, cls in CONTRACT_EVENTS.items():
        registry.register(cls, name)


register_contract_events(default_registry)
