"""A small order domain the tests share: events of every storable kind and an aggregate."""

import enum
from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal
from uuid import UUID, uuid4

import attrs

import fabula


class Colour(enum.Enum):
    RED = "red"
    GREEN = "green"


class Priority(enum.IntEnum):
    LOW = 1
    HIGH = 2


@attrs.frozen
class Address:
    street: str
    city: str
    country: str = "NL"


@attrs.frozen
class Line:
    product_id: UUID
    quantity: int
    unit_price: Decimal


@fabula.event("tests.OrderCreated")
@attrs.frozen
class OrderCreated(fabula.DomainEvent):
    customer_id: UUID
    address: Address


@fabula.event("tests.OrderItemAdded")
@attrs.frozen(kw_only=True)
class OrderItemAdded(fabula.DomainEvent):
    product_id: UUID
    quantity: int
    unit_price: Decimal


@fabula.event("tests.OrderSubmitted")
@attrs.frozen
class OrderSubmitted(fabula.DomainEvent):
    total: Decimal


@fabula.event("tests.Everything")
@attrs.frozen
class Everything(fabula.DomainEvent):
    """Carries one field of every kind the serializer promises to round-trip."""

    uid: UUID
    amount: Decimal
    at: datetime
    day: date
    colour: Colour
    priority: Priority
    address: Address
    lines: tuple[Line, ...]
    pair: tuple[int, str]
    tags: fabula.storage.FrozenDict[str, int]
    by_product: Mapping[UUID, Decimal]
    by_number: dict[int, str]
    ratio: float
    flag: bool
    note: str | None


class OrderError(fabula.DomainError):
    """An order invariant was violated."""


class OrderStatus(enum.Enum):
    DRAFT = "draft"
    SUBMITTED = "submitted"


@attrs.define
class Order(fabula.Aggregate):
    customer_id: UUID | None = None
    status: OrderStatus = OrderStatus.DRAFT
    lines: dict[UUID, Line] = attrs.Factory(dict)

    @classmethod
    def create(cls, customer_id: UUID, address: Address) -> "Order":
        order = cls(id=uuid4())
        order.record(OrderCreated(customer_id=customer_id, address=address))
        return order

    def add_item(self, product_id: UUID, quantity: int, unit_price: Decimal) -> None:
        if self.status is not OrderStatus.DRAFT:
            msg = f"order {self.id} is {self.status.value}; only drafts change"
            raise OrderError(msg)
        if quantity < 1:
            msg = f"quantity must be at least 1, not {quantity}"
            raise OrderError(msg)
        self.record(OrderItemAdded(product_id=product_id, quantity=quantity, unit_price=unit_price))

    def submit(self) -> None:
        if not self.lines:
            msg = "an empty order cannot be submitted"
            raise OrderError(msg)
        if self.status is not OrderStatus.DRAFT:
            msg = f"order {self.id} is already {self.status.value}"
            raise OrderError(msg)
        self.record(OrderSubmitted(total=self.total))

    @property
    def total(self) -> Decimal:
        return sum((line.unit_price * line.quantity for line in self.lines.values()), Decimal(0))

    @fabula.apply
    def _created(self, event: OrderCreated) -> None:
        self.customer_id = event.customer_id

    @fabula.apply
    def _item_added(self, event: OrderItemAdded) -> None:
        line = self.lines.get(event.product_id)
        quantity = event.quantity + (line.quantity if line else 0)
        self.lines[event.product_id] = Line(event.product_id, quantity, event.unit_price)

    @fabula.apply
    def _submitted(self, _: OrderSubmitted) -> None:
        self.status = OrderStatus.SUBMITTED


ADDRESS = Address(street="Main 1", city="Utrecht")


# -- an aggregate with string ids ---------------------------------------------


@fabula.event("tests.Counted")
@attrs.frozen
class Counted(fabula.DomainEvent[str]):
    by: int


@attrs.define
class Tally(fabula.Aggregate[str]):
    """A counter whose ids are strings ("tally-1"), with an event that says so."""

    count: int = 0

    def add(self, by: int) -> None:
        self.record(Counted(by=by))

    @fabula.apply
    def _counted(self, event: Counted) -> None:
        self.count += event.by
