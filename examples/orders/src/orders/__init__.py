"""The orders reference application: an order service built on fabula.

- `orders.domain`: the `Order` aggregate and its events;
- `orders.catalog`: the customers and products tables;
- `orders.read_model`: the order read model, its projection and queries;
- `orders.messages`: the commands and queries;
- `orders.handlers`: what each command and query does;
- `orders.service`: `OrdersService`, which wires the store, the buses and the projector;
- `orders.api`: the FastAPI application (`create_app`);
- `orders.cli`: the `orders` command (`serve`, `demo`, `rebuild-read-model`).
"""
