"""What happens after an order's events: its stock is reserved, and abandoned drafts expire.

- `Fulfilment`, a process manager per submitted order: it reserves each
  line's units of tracked products; when every line is held it confirms
  the order; when one cannot be, it releases what it holds and cancels the
  order ("out of stock: <product>"); when the order is cancelled later, it
  gives the units back. It learns each answer from the stock's events.
- `DraftExpiry`, a reaction: each change to a draft (re)schedules a durable
  timer that cancels the draft as "abandoned" once `ttl` has passed with no
  change; submitting or cancelling the order cancels the timer.

Both run in the service's `fabula.Reactor` (see `orders.service`).
"""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID

import attrs

import fabula

from .domain import Order, OrderCancelled, OrderCreated, OrderItemAdded, OrderSubmitted
from .messages import CancelOrder, ConfirmOrder, ExpireDraft, ReleaseStock, ReserveStock
from .stock import StockReservationRefused, StockReserved, stock_id

__all__ = ["DraftExpiry", "Fulfilling", "Fulfilment", "Line", "draft_timer"]


@attrs.frozen
class Line:
    """A line of tracked stock that the process reserves."""

    product_id: UUID
    quantity: int


@attrs.frozen
class Fulfilling:
    """One order's fulfilment: the lines to reserve and the answers so far.

    Attributes:
        lines: The order's lines of tracked products.
        reserved: The products whose units the order holds.
        answered: The products whose reservation was answered (held or refused).
        confirmed: Whether the process confirmed the order.
        cancelled: Whether the order is cancelled (by the process or its customer).
    """

    lines: tuple[Line, ...] = ()
    reserved: tuple[UUID, ...] = ()
    answered: tuple[UUID, ...] = ()
    confirmed: bool = False
    cancelled: bool = False

    @property
    def waiting(self) -> bool:
        """Whether some reservation has not been answered yet."""
        return len(self.answered) < len(self.lines)


# --8<-- [start:process]
class Fulfilment(fabula.ProcessManager[Fulfilling]):
    """Reserves a submitted order's stock, then confirms it or cancels it.

    Args:
        repository: Reads the order's lines and which products are tracked
            when the order is submitted (the process's steps keep what it
            decided, so this read is never repeated).
    """

    name = "fulfilment"
    state = Fulfilling

    def __init__(self, repository: fabula.Repository) -> None:
        self._repository = repository

    def process_id(self, recorded: fabula.RecordedEvent) -> str | None:
        """An order's events and the stock's answers about it share its process."""
        event = recorded.event
        if isinstance(event, StockReserved | StockReservationRefused):
            return str(event.order_id)
        return str(event.aggregate_id)

    @fabula.reacts
    async def _submitted(self, _: OrderSubmitted, process: fabula.Process[Fulfilling]) -> None:
        order_id = UUID(process.id)
        order = await self._repository.get(Order, order_id)
        tracked = [await self._tracked(line.product_id) for line in order.lines.values()]
        lines = [
            Line(line.product_id, line.quantity)
            for line, is_tracked in zip(order.lines.values(), tracked, strict=True)
            if is_tracked
        ]
        process.state = Fulfilling(lines=tuple(lines))
        for line in lines:
            process.send(
                ReserveStock(product_id=line.product_id, order_id=order_id, quantity=line.quantity)
            )
        if not lines:
            process.send(ConfirmOrder(order_id=order_id))
            process.finish()  # nothing held: a later cancellation has nothing to give back

    @fabula.reacts
    async def _reserved(self, event: StockReserved, process: fabula.Process[Fulfilling]) -> None:
        state = process.state
        if event.product_id in state.answered:
            return
        state = attrs.evolve(
            state,
            reserved=(*state.reserved, event.product_id),
            answered=(*state.answered, event.product_id),
        )
        if state.cancelled:  # too late: the order was cancelled while this was asked
            process.send(ReleaseStock(product_id=event.product_id, order_id=event.order_id))
        elif not state.waiting:
            process.send(ConfirmOrder(order_id=event.order_id))
            state = attrs.evolve(state, confirmed=True)
        process.state = state
        self._finish_if_done(process)

    @fabula.reacts
    async def _refused(
        self, event: StockReservationRefused, process: fabula.Process[Fulfilling]
    ) -> None:
        state = process.state
        if event.product_id in state.answered:
            return
        state = attrs.evolve(state, answered=(*state.answered, event.product_id))
        if not state.cancelled:
            reason = f"out of stock: {event.product_name}"
            process.send(CancelOrder(order_id=event.order_id, reason=reason))
            self._release_all(process, state, event.order_id)
            state = attrs.evolve(state, cancelled=True, reserved=())
        process.state = state
        self._finish_if_done(process)

    @fabula.reacts
    async def _cancelled(self, _: OrderCancelled, process: fabula.Process[Fulfilling]) -> None:
        state = process.state
        if not process.started or state.cancelled:
            return  # a draft's cancellation, or the one this process asked for
        order_id = UUID(process.id)
        self._release_all(process, state, order_id)
        process.state = attrs.evolve(state, cancelled=True, reserved=())
        self._finish_if_done(process)

    def _release_all(
        self, process: fabula.Process[Fulfilling], state: Fulfilling, order_id: UUID
    ) -> None:
        for product_id in state.reserved:
            process.send(ReleaseStock(product_id=product_id, order_id=order_id))

    def _finish_if_done(self, process: fabula.Process[Fulfilling]) -> None:
        if process.state.cancelled and not process.state.waiting:
            process.finish()

    async def _tracked(self, product_id: UUID) -> bool:
        found = await self._repository.store.read_stream(stock_id(product_id), limit=1)
        return bool(found)


# --8<-- [end:process]


def draft_timer(order_id: UUID | str) -> str:
    """The name of the durable timer that expires a draft."""
    return f"expire-draft:{order_id}"


# --8<-- [start:timer]
class DraftExpiry(fabula.Reaction):
    """Cancels a draft with no change for `ttl` as "abandoned", by a durable timer.

    Args:
        ttl: How long a draft may sit unchanged.
    """

    name = "draft-expiry"

    def __init__(self, ttl: timedelta) -> None:
        self.ttl = ttl

    @fabula.reacts
    async def _created(self, event: OrderCreated, ctx: fabula.ReactionContext) -> None:
        await self._restart_clock(event, ctx)

    @fabula.reacts
    async def _item_added(self, event: OrderItemAdded, ctx: fabula.ReactionContext) -> None:
        await self._restart_clock(event, ctx)

    @fabula.reacts
    async def _submitted(self, event: OrderSubmitted, ctx: fabula.ReactionContext) -> None:
        await ctx.cancel(draft_timer(event.aggregate_id))

    @fabula.reacts
    async def _cancelled(self, event: OrderCancelled, ctx: fabula.ReactionContext) -> None:
        await ctx.cancel(draft_timer(event.aggregate_id))

    async def _restart_clock(self, event: fabula.DomainEvent, ctx: fabula.ReactionContext) -> None:
        expire = ExpireDraft(order_id=event.aggregate_id, version=event.version)
        await ctx.schedule(
            draft_timer(event.aggregate_id), at=event.timestamp + self.ttl, command=expire
        )


# --8<-- [end:timer]
