"""What the order service tells other services: its public events, and where it publishes them.

The contract names each published event `orders.v1.<Name>` and builds its
data explicitly, so the internal events can change without breaking
consumers (a new shape is published as `orders.v2.<Name>`). Customers'
names and shipping addresses are personal data and are not published:
a consumer that needs them asks this service.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

import fabula

from .domain import OrderCancelled, OrderConfirmed, OrderCreated, OrderItemAdded, OrderSubmitted

__all__ = ["EXCHANGE", "SOURCE", "STREAM", "SUBJECTS", "contract", "relays"]

SOURCE = "urn:fabula:orders"
"""The CloudEvents `source` of every event the service publishes."""

STREAM = "ORDERS"
"""The JetStream stream the events go to."""

SUBJECTS = ("orders.v1.>",)
"""The subjects that stream holds."""

EXCHANGE = "orders"
"""The RabbitMQ topic exchange the events go to."""


# --8<-- [start:contract]
def contract() -> fabula.IntegrationContract:
    """The order events other services may rely on, as `orders.v1.*`."""
    published = fabula.IntegrationContract(source=SOURCE)
    published.add(
        OrderCreated,
        "orders.v1.OrderCreated",
        lambda e: {"order_id": e.aggregate_id, "customer_id": e.customer_id},
    )
    published.add(
        OrderItemAdded,
        "orders.v1.OrderItemAdded",
        lambda e: {
            "order_id": e.aggregate_id,
            "product_id": e.product_id,
            "quantity": e.quantity,
            "unit_price": e.unit_price,
        },
    )
    published.add(
        OrderSubmitted,
        "orders.v1.OrderSubmitted",
        lambda e: {"order_id": e.aggregate_id, "total_amount": e.total_amount},
    )
    published.add(
        OrderConfirmed, "orders.v1.OrderConfirmed", lambda e: {"order_id": e.aggregate_id}
    )
    published.add(
        OrderCancelled,
        "orders.v1.OrderCancelled",
        lambda e: {"order_id": e.aggregate_id, "reason": e.reason},
    )
    return published


# --8<-- [end:contract]
def relays(urls: Sequence[str]) -> list[fabula.Relay]:
    """One relay per broker URL: `nats://` (JetStream) or `amqp://`/`amqps://` (RabbitMQ).

    Raises:
        ValueError: A URL of another scheme, or one given twice.
    """
    made: list[fabula.Relay] = []
    seen: set[str] = set()
    for url in urls:
        if url in seen:
            msg = f"--publish {url} is given twice"
            raise ValueError(msg)
        seen.add(url)
        scheme = urlsplit(url).scheme
        number = sum(1 for relay in made if relay.name.startswith(f"orders-{_kind(scheme)}"))
        name = f"orders-{_kind(scheme)}" + (f"-{number + 1}" if number else "")
        made.append(fabula.Relay(name, contract(), _publisher(scheme, url)))
    return made


def _kind(scheme: str) -> str:
    return "nats" if scheme in {"nats", "tls"} else "rabbitmq"


def _publisher(scheme: str, url: str) -> fabula.Publisher:
    if scheme in {"nats", "tls"}:
        from fabula.nats import JetStreamPublisher  # noqa: PLC0415 - an optional client

        return JetStreamPublisher(url, stream=STREAM, subjects=SUBJECTS)
    if scheme in {"amqp", "amqps"}:
        from fabula.rabbitmq import RabbitPublisher  # noqa: PLC0415 - an optional client

        return RabbitPublisher(url, exchange=EXCHANGE, name="orders-relay")
    msg = f"--publish takes a nats:// or amqp:// URL, not {url!r}"
    raise ValueError(msg)
