"""The HTTP API: FastAPI routes under `/api/v1` over an `OrdersService`.

Every error is answered as `{"error": {"code": ..., "message": ...}}`:

| status | when |
|---|---|
| 400 | malformed JSON, a bad page cursor |
| 404 | the path names an unknown order or customer |
| 409 | the order's status forbids the change, or a conflict outlasted the retries |
| 413 | the request body is larger than `MAX_BODY_BYTES` |
| 422 | invalid input; an unknown customer or product in the body; |
|     | an idempotency key reused with another body |
| 503 | the database is unavailable; or, on reads of orders, the read model |
|     | is not following the events (`read_model_unavailable`, with `Retry-After`) |

Commands return once the read model reflects them, so a GET after a
successful POST sees its effect.
"""

import contextlib
from collections.abc import AsyncIterator
from typing import Annotated
from uuid import UUID

import fastapi
import fastapi.responses
from fastapi import FastAPI, Header, Query, Request

import fabula

from .auth import NOBODY, Caller, Forbidden, RateLimit, Tokens
from .catalog import Product, UnknownCustomerError, UnknownProductError
from .domain import OrderStatus, ShippingAddress
from .errors import KeyNotAcceptedError, install_error_handlers, responses
from .messages import (
    AddOrderItem,
    CancelOrder,
    CreateCustomer,
    CreateOrder,
    CreateProduct,
    ExportCustomer,
    GetCustomerOrders,
    GetOrderById,
    GetProduct,
    ListProducts,
    SubmitOrder,
)
from .middleware import MAX_BODY_BYTES, Guard, LimitBody
from .schemas import (
    Cancellation,
    CustomerCreated,
    CustomerExportOut,
    HealthOut,
    NewCustomer,
    NewItem,
    NewOrder,
    NewProduct,
    OrderCreatedOut,
    OrderOut,
    OrderPage,
    OrderSummaryOut,
    ProductCreated,
    ProductOut,
    ProductPage,
    RelayOut,
    StatusOut,
)
from .service import OrdersService
from .telemetry import metrics_text

__all__ = ["MAX_BODY_BYTES", "create_app"]

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        description="Repeat a request with the same key and body to get the first answer again.",
    ),
]


def _current(request: Request) -> OrdersService:
    service = request.app.state.service
    if not isinstance(service, OrdersService):
        raise fabula.StoreUnavailableError("the service is not running")
    return service


async def _caller(request: Request) -> Caller:
    """Who is calling: the bearer token's caller (401 without a valid one), rate-limited."""
    tokens: Tokens | None = request.app.state.tokens
    if tokens is None:
        who = NOBODY
    else:
        who = tokens.check_header(request.headers.get("authorization", ""))
    limit: RateLimit | None = request.app.state.rate_limit
    if limit is not None:
        client = request.client.host if request.client else "-"
        limit.take(f"{who.role}:{who.subject}" if tokens is not None else client)
    return who


def _admin(who: Caller) -> None:
    if not who.is_admin:
        raise Forbidden("only an administrator may do this")


svc = Annotated[OrdersService, fastapi.Depends(_current)]
caller = Annotated[Caller, fastapi.Depends(_caller)]
router = fastapi.APIRouter(prefix="/api/v1")
_AUTH = (401, 403, 429)


def _no_key(key: str | None) -> None:
    # A catalog write is not an event: its record could not commit with it.
    if key is not None:
        msg = "Idempotency-Key has no effect on this route: it is accepted on orders only"
        raise KeyNotAcceptedError(msg)


@router.post("/customers", status_code=201, responses=responses(*_AUTH))
async def create_customer(
    body: NewCustomer, service: svc, who: caller, idempotency_key: IdempotencyKey = None
) -> CustomerCreated:
    """Add a customer (administrators). An `Idempotency-Key` is refused here (400)."""
    _admin(who)
    _no_key(idempotency_key)
    customer_id = await service.execute(CreateCustomer(name=body.name, email=body.email))
    return CustomerCreated(customer_id=customer_id)


@router.delete("/customers/{customer_id}", status_code=204, responses=responses(404, *_AUTH))
async def forget_customer(customer_id: UUID, service: svc, who: caller) -> fastapi.Response:
    """Forget a customer (right to erasure; administrators, or the customer themself).

    Their name, email and addresses are gone for good: orders keep their
    lines and totals with `customer_name` null, new orders for them are
    refused (422), and a second DELETE answers 404.
    """
    _own_or_admin(who, customer_id)
    try:
        await service.forget_customer(customer_id)
    except UnknownCustomerError as exc:
        raise fastapi.HTTPException(404, str(exc)) from exc
    return fastapi.Response(status_code=204)


@router.get("/customers/{customer_id}/export", responses=responses(404, *_AUTH))
async def export_customer(customer_id: UUID, service: svc, who: caller) -> CustomerExportOut:
    """Everything held about a customer (right of access; administrators, or the customer).

    Their catalog record, their orders, and the personal data their events
    hold, in clear; 404 once they are forgotten.
    """
    _own_or_admin(who, customer_id)
    try:
        data = await service.ask(ExportCustomer(customer_id=customer_id))
    except UnknownCustomerError as exc:
        raise fastapi.HTTPException(404, str(exc)) from exc
    return CustomerExportOut.model_validate({
        "customer": {
            "id": data.customer.id, "name": data.customer.name, "email": data.customer.email
        },
        "orders": [OrderSummaryOut.of(view) for view in data.orders],
        "events": data.events["events"],
    })  # fmt: skip


def _own_or_admin(who: Caller, customer_id: UUID) -> None:
    if not who.is_admin and customer_id != who.customer_id:
        raise Forbidden("a customer may do this only for themselves")


@router.post("/products", status_code=201, responses=responses(*_AUTH))
async def create_product(
    body: NewProduct, service: svc, who: caller, idempotency_key: IdempotencyKey = None
) -> ProductCreated:
    """Add a product at a price (administrators). An `Idempotency-Key` is refused here (400)."""
    _admin(who)
    _no_key(idempotency_key)
    command = CreateProduct(name=body.name, price=body.price, stock=body.stock)
    product_id = await service.execute(command)
    return ProductCreated(product_id=product_id)


def _product_out(product: Product) -> ProductOut:
    return ProductOut(
        product_id=product.id, name=product.name, price=f"{product.price:.2f}", stock=product.stock
    )


@router.get("/products", responses=responses(401, 429))
async def list_products(
    service: svc,
    who: caller,
    page_size: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
) -> ProductPage:
    """Page through the products, oldest first (anyone signed in)."""
    del who
    page = await service.ask(ListProducts(page_size=page_size, cursor=cursor))
    return ProductPage(items=[_product_out(p) for p in page.items], next_cursor=page.next_cursor)


@router.get("/products/{product_id}", responses=responses(404, 401, 429))
async def get_product(product_id: UUID, service: svc, who: caller) -> ProductOut:
    """Return a product with its stock: units available, or null when not tracked."""
    del who
    try:
        product = await service.ask(GetProduct(product_id=product_id))
    except UnknownProductError as exc:
        raise fastapi.HTTPException(404, str(exc)) from exc
    return _product_out(product)


# --8<-- [start:route]
@router.post("/orders", status_code=201, responses=responses(409, *_AUTH))
async def create_order(
    body: NewOrder, service: svc, who: caller, idempotency_key: IdempotencyKey = None
) -> OrderCreatedOut:
    """Open a draft order for a customer (a customer: only for themselves)."""
    if not who.is_admin and body.customer_id != who.customer_id:
        raise Forbidden("a customer may open orders only for themselves")
    address = ShippingAddress(**body.shipping_address.model_dump())
    command = CreateOrder(
        customer_id=body.customer_id,
        shipping_address=address,
        idempotency_key=who.scoped(idempotency_key),
    )
    return OrderCreatedOut(order_id=await service.execute(command))


# --8<-- [end:route]
@router.post("/orders/{order_id}/items", responses=responses(404, 409, *_AUTH))
async def add_item(
    order_id: UUID,
    body: NewItem,
    service: svc,
    who: caller,
    idempotency_key: IdempotencyKey = None,
) -> StatusOut:
    """Add units of a product to a draft order (to its line, if it has one)."""
    command = AddOrderItem(
        order_id=order_id,
        product_id=body.product_id,
        quantity=body.quantity,
        owner=who.customer_id,
        idempotency_key=who.scoped(idempotency_key),
    )
    await service.execute(command)
    return StatusOut(status="item_added")


@router.post("/orders/{order_id}/submit", responses=responses(404, 409, *_AUTH))
async def submit_order(
    order_id: UUID, service: svc, who: caller, idempotency_key: IdempotencyKey = None
) -> StatusOut:
    """Submit a draft order."""
    command = SubmitOrder(
        order_id=order_id, owner=who.customer_id, idempotency_key=who.scoped(idempotency_key)
    )
    await service.execute(command)
    return StatusOut(status="submitted")


@router.post("/orders/{order_id}/cancel", responses=responses(404, 409, *_AUTH))
async def cancel_order(
    order_id: UUID,
    body: Cancellation,
    service: svc,
    who: caller,
    idempotency_key: IdempotencyKey = None,
) -> StatusOut:
    """Cancel a draft or submitted order."""
    command = CancelOrder(
        order_id=order_id,
        reason=body.reason,
        owner=who.customer_id,
        idempotency_key=who.scoped(idempotency_key),
    )
    await service.execute(command)
    return StatusOut(status="cancelled")


@router.get("/orders/{order_id}", responses=responses(404, 503, *_AUTH))
async def get_order(order_id: UUID, service: svc, who: caller) -> OrderOut:
    """Return an order with its lines (a customer: only their own)."""
    view = await service.ask(GetOrderById(order_id=order_id))
    if view is None or (not who.is_admin and view.customer_id != who.customer_id):
        raise fastapi.HTTPException(404, f"there is no order {order_id}")
    return OrderOut.of_view(view)


@router.get("/customers/{customer_id}/orders", responses=responses(404, 503, *_AUTH))
async def customer_orders(
    customer_id: UUID,
    service: svc,
    who: caller,
    *,
    status: OrderStatus | None = None,
    page_size: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
) -> OrderPage:
    """Page through a customer's orders, newest first (a customer: only their own)."""
    if not who.is_admin and customer_id != who.customer_id:
        raise Forbidden("a customer may list only their own orders")
    query = GetCustomerOrders(
        customer_id=customer_id, status=status, page_size=page_size, cursor=cursor
    )
    try:
        page = await service.ask(query)
    except UnknownCustomerError as exc:
        raise fastapi.HTTPException(404, str(exc)) from exc
    return OrderPage(
        items=[OrderSummaryOut.of(view) for view in page.items], next_cursor=page.next_cursor
    )


@router.get("/relays", responses=responses(*_AUTH))
async def relays(service: svc, who: caller) -> list[RelayOut]:
    """The relays publishing the order events to brokers, with their lag (administrators)."""
    _admin(who)
    published = {relay.name: relay for relay in service.relays}
    return [
        RelayOut(
            name=status.name,
            broker=published[status.name].publisher.target,
            state=status.state.value,
            checkpoint=status.checkpoint,
            lag=status.lag,
            parked_events=status.parked_events,
        )
        for status in await service.reactor.status()
        if status.name in published
    ]


probes = fastapi.APIRouter()


@probes.get("/health", responses={200: {"description": "The process is alive."}})
async def health() -> HealthOut:
    """Whether the process is alive (for a supervisor): always 200 while it answers."""
    return HealthOut(status="alive")


@probes.get(
    "/ready",
    responses={200: {"description": "Ready."}, 503: {"description": "Not ready, with why."}},
)
async def ready(request: Request) -> fastapi.responses.JSONResponse:
    """Whether to send it requests (for a load balancer): 200, or 503 with the reason."""
    service = request.app.state.service
    reason = (
        "the service is not running"
        if not isinstance(service, OrdersService)
        else await service.readiness(request.app.state.ready_max_lag)
    )
    if reason is None:
        return fastapi.responses.JSONResponse({"status": "ready"})
    return fastapi.responses.JSONResponse(
        {"status": "unavailable", "reason": reason}, status_code=503, headers={"Retry-After": "5"}
    )


@probes.get(
    "/metrics",
    responses={200: {"content": {"text/plain": {}}}, **responses(404, *_AUTH)},
)
async def prometheus(request: Request, who: caller) -> fastapi.Response:
    """The metrics in Prometheus' text format (administrators: a scraper sends a token)."""
    _admin(who)
    if not request.app.state.metrics:
        raise fastapi.HTTPException(404, "metrics are not set up: install the otel extra")
    body, kind = metrics_text()
    return fastapi.Response(body, media_type=kind)


def create_app(
    service: OrdersService | None = None,
    *,
    tokens: Tokens | None,
    rate_limit: RateLimit | None = None,
    ready_max_lag: float = 10.0,
    metrics: bool = False,
    database: str = "orders.db",
    schema: str = "public",
) -> FastAPI:
    """Build the API.

    Args:
        service: A running service to serve; the caller opens and closes it.
            Without one, the app opens an `OrdersService` on `database` for
            its lifespan.
        tokens: Checks the callers' bearer tokens. None turns authentication
            off: every request then acts as an administrator (for local
            development only; there is no default, so it is always a choice).
        rate_limit: Requests a second allowed per caller (per client address
            without authentication); None for no limit.
        database: The SQLite file or PostgreSQL URL, when the app opens the
            service itself.
        schema: The PostgreSQL schema, when the app opens the service itself.
        ready_max_lag: `GET /ready` answers 503 while the read model's oldest
            unapplied event is older than this, in seconds.
        metrics: Serve `GET /metrics` (the process's meter provider reads
            into Prometheus: see `orders.telemetry.set_up`).
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if service is not None:
            yield
            return
        async with OrdersService.open(database, schema=schema) as opened:
            app.state.service = opened
            yield

    app = FastAPI(
        title="orders",
        summary="The fabula reference order service.",
        version="1.0.0",
        lifespan=lifespan,
        # A path with a trailing slash is a 404, not a redirect that would
        # echo the request's Host header back in its Location.
        redirect_slashes=False,
    )
    app.state.service = service
    app.state.tokens = tokens
    app.state.rate_limit = rate_limit
    app.state.ready_max_lag = ready_max_lag
    app.state.metrics = metrics
    app.add_middleware(LimitBody)
    app.add_middleware(Guard)
    install_error_handlers(app)
    app.include_router(router)
    app.include_router(probes)  # outside /api/v1, and no token: for supervisors
    return app
