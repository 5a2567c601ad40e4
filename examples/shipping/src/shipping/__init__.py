"""The shipping service: a second fabula service that hears of orders only through a broker.

It consumes the order service's integration events (`orders.v1.*`) from
NATS JetStream or RabbitMQ through a `fabula.Inbox`, keeps a `Shipment`
aggregate per confirmed order in its own SQLite store, and serves
`GET /api/v1/shipments/{order_id}`.
"""
