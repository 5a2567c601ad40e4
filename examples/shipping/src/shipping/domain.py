"""A shipment per confirmed order: opened when the order is confirmed, cancelled with it."""

import enum
from uuid import UUID

import attrs

import fabula

__all__ = [
    "Shipment",
    "ShipmentCancelled",
    "ShipmentOpened",
    "ShipmentStatus",
]


class ShipmentStatus(enum.Enum):
    """Where a shipment is."""

    OPEN = "open"
    CANCELLED = "cancelled"


@fabula.event("shipping.ShipmentOpened")
@attrs.frozen(kw_only=True)
class ShipmentOpened(fabula.DomainEvent):
    """An order was confirmed: its goods are to be shipped."""


@fabula.event("shipping.ShipmentCancelled")
@attrs.frozen(kw_only=True)
class ShipmentCancelled(fabula.DomainEvent):
    """The order was cancelled before it left: nothing is shipped."""

    reason: str


@attrs.define
class Shipment(fabula.Aggregate):
    """The shipment of one order; its id is the order's id.

    Attributes:
        status: OPEN or CANCELLED.
        reason: Why it was cancelled.
    """

    status: ShipmentStatus = ShipmentStatus.OPEN
    reason: str | None = None

    @classmethod
    def open(cls, order_id: UUID) -> "Shipment":
        """Open the shipment of a confirmed order."""
        shipment = cls(id=order_id)
        shipment.record(ShipmentOpened())
        return shipment

    def cancel(self, reason: str) -> None:
        """Cancel it (once: cancelling a cancelled shipment records nothing)."""
        if self.status is ShipmentStatus.OPEN:
            self.record(ShipmentCancelled(reason=reason))

    @fabula.apply
    def _opened(self, event: ShipmentOpened) -> None:
        del event
        self.status = ShipmentStatus.OPEN

    @fabula.apply
    def _cancelled(self, event: ShipmentCancelled) -> None:
        self.status = ShipmentStatus.CANCELLED
        self.reason = event.reason
