import asyncio
from decimal import Decimal
from uuid import uuid4

import attrs

import fabula


@fabula.event("quickstart.ItemAdded")  # the stable name it is stored under
@attrs.frozen
class ItemAdded(fabula.DomainEvent):
    product: str
    price: Decimal


@attrs.define
class Cart(fabula.Aggregate):
    total: Decimal = Decimal(0)

    def add(self, product: str, price: Decimal) -> None:
        if price <= 0:  # check invariants first, then record
            raise fabula.DomainError(f"{product} needs a positive price, not {price}")
        self.record(ItemAdded(product=product, price=price))

    @fabula.apply  # state changes only here, so replaying history rebuilds it
    def _added(self, event: ItemAdded) -> None:
        self.total += event.price


async def main() -> None:
    async with fabula.memory.InMemoryEventStore() as store:
        repo = fabula.Repository(store)
        cart = Cart(id=uuid4())
        cart.add("tea", Decimal("3.50"))
        cart.add("scones", Decimal("2.25"))
        await repo.save(cart)

        again = await repo.get(Cart, cart.id)
        print(f"cart at version {again.version}, total {again.total}")
        for recorded in await store.read_all():
            print(recorded.position, type(recorded.event).__name__, recorded.event.timestamp)


asyncio.run(main())
