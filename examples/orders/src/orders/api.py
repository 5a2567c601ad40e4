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
import logging
import re
import sys
import unicodedata
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal
from uuid import UUID

import fastapi
import pydantic
from fastapi import FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

import fabula

from .catalog import UnknownCustomerError, UnknownProductError
from .domain import InvalidOrderError, OrderStateError, OrderStatus, ShippingAddress
from .messages import (
    AddOrderItem,
    CancelOrder,
    CreateCustomer,
    CreateOrder,
    CreateProduct,
    GetCustomerOrders,
    GetOrderById,
    ListProducts,
    SubmitOrder,
)
from .read_model import OrderSummaryView, OrderView
from .service import OrdersService, ReadModelUnavailableError

__all__ = ["MAX_BODY_BYTES", "create_app"]

logger = logging.getLogger("orders.api")

MAX_BODY_BYTES = 64 * 1024
"""The largest request body accepted."""


def _printable(value: str) -> str:
    """Refuse control characters (NUL, escapes, line breaks): names are one line of text."""
    if any(unicodedata.category(char) == "Cc" for char in value):
        msg = "must not contain control characters"
        raise ValueError(msg)
    return value


def _plain_decimal(value: object) -> object:
    """Take a price only as plain ASCII decimal text: no float, no "1_000", no other digits."""
    if not isinstance(value, str) or _PLAIN_DECIMAL.fullmatch(value) is None:
        msg = 'must be a decimal string such as "12.50": ASCII digits, at most 2 decimals'
        raise ValueError(msg)
    return value


_PLAIN_DECIMAL = re.compile(r"[0-9]{1,7}(\.[0-9]{1,2})?")

Text = Annotated[
    str,
    pydantic.Field(min_length=1, max_length=200, pattern=r"\S"),
    pydantic.AfterValidator(_printable),
]
Price = Annotated[
    Decimal,
    pydantic.BeforeValidator(_plain_decimal),
    pydantic.Field(ge=0, le=Decimal("1000000.00"), max_digits=9, decimal_places=2),
]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        description="Repeat a request with the same key and body to get the first answer again.",
    ),
]


class _Model(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)


class NewCustomer(_Model):
    """A customer to add."""

    name: Text
    email: Annotated[
        str,
        pydantic.Field(max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$"),
        pydantic.AfterValidator(_printable),
    ]


class NewProduct(_Model):
    """A product to add; the price is a decimal string such as "12.50"."""

    name: Text
    price: Price


class Address(_Model):
    """A shipping address."""

    street: Text
    city: Text
    postal_code: Annotated[
        str,
        pydantic.Field(min_length=1, max_length=20, pattern=r"\S"),
        pydantic.AfterValidator(_printable),
    ]
    country: Text


class NewOrder(_Model):
    """An order to open."""

    customer_id: UUID
    shipping_address: Address


class NewItem(_Model):
    """Units of a product to add to an order."""

    product_id: UUID
    quantity: Annotated[int, pydantic.Field(strict=True, ge=1, le=10_000)]


class Cancellation(_Model):
    """Why an order is cancelled."""

    reason: Annotated[
        str,
        pydantic.Field(min_length=1, max_length=500, pattern=r"\S"),
        pydantic.AfterValidator(_printable),
    ]


class CustomerCreated(_Model):
    """The new customer's id."""

    customer_id: UUID


class ProductCreated(_Model):
    """The new product's id."""

    product_id: UUID


class ProductOut(_Model):
    """A product at its current price."""

    product_id: UUID
    name: str
    price: Annotated[str, pydantic.Field(examples=["12.50"])]


class OrderCreatedOut(_Model):
    """The new order's id."""

    order_id: UUID


class StatusOut(_Model):
    """What a command did."""

    status: Literal["item_added", "submitted", "cancelled"]


class OrderItemOut(_Model):
    """One line of an order."""

    product_id: UUID
    product: str
    qty: int
    unit_price: str


class OrderSummaryOut(_Model):
    """An order, without its lines."""

    id: UUID
    customer_id: UUID
    customer_name: str
    status: OrderStatus
    total_amount: str
    item_count: int
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, view: OrderSummaryView) -> "OrderSummaryOut":
        """Convert a read-model view."""
        return cls(
            id=view.id,
            customer_id=view.customer_id,
            customer_name=view.customer_name,
            status=view.status,
            total_amount=f"{view.total_amount:.2f}",
            item_count=view.item_count,
            created_at=view.created_at,
            updated_at=view.updated_at,
        )


class OrderOut(OrderSummaryOut):
    """An order with its lines."""

    items: list[OrderItemOut]

    @classmethod
    def of_view(cls, view: OrderView) -> "OrderOut":
        """Convert a read-model view."""
        items = [
            OrderItemOut(
                product_id=item.product_id,
                product=item.product,
                qty=item.qty,
                unit_price=f"{item.unit_price:.2f}",
            )
            for item in view.items
        ]
        return cls(**OrderSummaryOut.of(view).model_dump(), items=items)


class OrderPage(_Model):
    """A page of orders, newest first, and the cursor of the next page (null on the last)."""

    items: list[OrderSummaryOut]
    next_cursor: str | None


class ErrorDetail(_Model):
    """What went wrong."""

    code: str
    message: str


class ErrorBody(_Model):
    """The body of every error response."""

    error: ErrorDetail


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ErrorBody} for status in (400, 413, 422, *statuses)}


def _error(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = ErrorBody(error=ErrorDetail(code=code, message=message))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


READ_MODEL_RETRY_AFTER = 5
"""Seconds a client is asked to wait before reading orders again when the read model is down."""


# FastAPI answers a body it cannot parse (bad UTF-8, nesting too deep) with a 400.
_HTTP_CODES = {
    400: "malformed_json",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
}

# Exceptions of the application, each with its status and code.
_DOMAIN_ERRORS: tuple[tuple[type[Exception], int, str], ...] = (
    (fabula.AggregateNotFoundError, 404, "not_found"),
    (UnknownCustomerError, 422, "unknown_customer"),
    (UnknownProductError, 422, "unknown_product"),
    (OrderStateError, 409, "invalid_state"),
    (InvalidOrderError, 422, "invalid_order"),
    (fabula.ConcurrencyError, 409, "conflict"),
    (fabula.IdempotencyConflictError, 422, "idempotency_key_reused"),
    (fabula.exceptions.InvalidIdempotencyKeyError, 422, "validation_error"),
    (fabula.InvalidCursorError, 400, "invalid_cursor"),
    (fabula.InvalidPageSizeError, 422, "validation_error"),
    (fabula.StoreUnavailableError, 503, "unavailable"),
)


def _describe(errors: list[dict[str, Any]]) -> str:
    parts = []
    for error in errors[:5]:
        where = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
        parts.append(f"{where}: {error.get('msg', 'invalid')}" if where else error.get("msg", ""))
    return "; ".join(parts) or "invalid request"


class _LimitBody:
    """ASGI middleware: refuse request bodies larger than `limit` bytes with 413."""

    def __init__(self, app: Callable[..., Awaitable[None]], limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
        send: Callable[[MutableMapping[str, Any]], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                response = _error(413, "body_too_large", self._message())
                await response(scope, receive, send)
                return
        seen = 0

        async def limited() -> MutableMapping[str, Any]:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise fastapi.HTTPException(413, self._message())
            return message

        await self.app(scope, limited, send)

    def _message(self) -> str:
        return f"the request body is larger than {self.limit} bytes"


def _too_many_digits(cause: BaseException | None) -> bool:
    """Whether parsing the body failed on an integer longer than Python converts."""
    return isinstance(cause, ValueError) and "integer string conversion" in str(cause)


def _install_error_handlers(app: FastAPI) -> None:
    async def on_validation(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = list(exc.errors())
        if any(error.get("type") == "json_invalid" for error in errors):
            return _error(400, "malformed_json", "the request body is not valid JSON")
        return _error(422, "validation_error", _describe(errors))

    async def on_http(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 400 and _too_many_digits(exc.__cause__):  # noqa: PLR2004
            # Valid JSON that Python will not turn into an int (CVE-2020-10735's limit).
            limit = sys.get_int_max_str_digits()
            message = f"a number in the body has more than {limit} digits"
            return _error(422, "validation_error", message)
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        return _error(exc.status_code, code, str(exc.detail))

    def on_domain(
        status: int, code: str
    ) -> Callable[[Request, Exception], Awaitable[JSONResponse]]:
        async def handler(_: Request, exc: Exception) -> JSONResponse:
            return _error(status, code, str(exc))

        return handler

    async def on_read_model(_: Request, exc: Exception) -> JSONResponse:
        headers = {"Retry-After": str(READ_MODEL_RETRY_AFTER)}
        return _error(503, "read_model_unavailable", str(exc), headers)

    async def on_unexpected(_: Request, exc: Exception) -> JSONResponse:
        logger.error("unexpected error", exc_info=exc)
        return _error(500, "internal_error", "an unexpected error occurred; it has been logged")

    app.add_exception_handler(ReadModelUnavailableError, on_read_model)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    for error_type, status, code in _DOMAIN_ERRORS:
        app.add_exception_handler(error_type, on_domain(status, code))
    app.add_exception_handler(Exception, on_unexpected)


def _current(request: Request) -> OrdersService:
    service = request.app.state.service
    if not isinstance(service, OrdersService):
        raise fabula.StoreUnavailableError("the service is not running")
    return service


svc = Annotated[OrdersService, fastapi.Depends(_current)]
router = fastapi.APIRouter(prefix="/api/v1")


@router.post("/customers", status_code=201, responses=_errors())
async def create_customer(body: NewCustomer, service: svc) -> CustomerCreated:
    """Add a customer."""
    customer_id = await service.execute(CreateCustomer(name=body.name, email=body.email))
    return CustomerCreated(customer_id=customer_id)


@router.post("/products", status_code=201, responses=_errors())
async def create_product(body: NewProduct, service: svc) -> ProductCreated:
    """Add a product at a price."""
    product_id = await service.execute(CreateProduct(name=body.name, price=body.price))
    return ProductCreated(product_id=product_id)


@router.get("/products", responses=_errors())
async def list_products(service: svc) -> list[ProductOut]:
    """List the products, oldest first."""
    products = await service.ask(ListProducts())
    return [ProductOut(product_id=p.id, name=p.name, price=f"{p.price:.2f}") for p in products]


# --8<-- [start:route]
@router.post("/orders", status_code=201, responses=_errors(409))
async def create_order(
    body: NewOrder, service: svc, idempotency_key: IdempotencyKey = None
) -> OrderCreatedOut:
    """Open a draft order for a customer."""
    address = ShippingAddress(**body.shipping_address.model_dump())
    command = CreateOrder(
        customer_id=body.customer_id,
        shipping_address=address,
        idempotency_key=idempotency_key,
    )
    return OrderCreatedOut(order_id=await service.execute(command))


# --8<-- [end:route]
@router.post("/orders/{order_id}/items", responses=_errors(404, 409))
async def add_item(
    order_id: UUID, body: NewItem, service: svc, idempotency_key: IdempotencyKey = None
) -> StatusOut:
    """Add units of a product to a draft order (to its line, if it has one)."""
    command = AddOrderItem(
        order_id=order_id,
        product_id=body.product_id,
        quantity=body.quantity,
        idempotency_key=idempotency_key,
    )
    await service.execute(command)
    return StatusOut(status="item_added")


@router.post("/orders/{order_id}/submit", responses=_errors(404, 409))
async def submit_order(
    order_id: UUID, service: svc, idempotency_key: IdempotencyKey = None
) -> StatusOut:
    """Submit a draft order."""
    await service.execute(SubmitOrder(order_id=order_id, idempotency_key=idempotency_key))
    return StatusOut(status="submitted")


@router.post("/orders/{order_id}/cancel", responses=_errors(404, 409))
async def cancel_order(
    order_id: UUID, body: Cancellation, service: svc, idempotency_key: IdempotencyKey = None
) -> StatusOut:
    """Cancel a draft or submitted order."""
    command = CancelOrder(order_id=order_id, reason=body.reason, idempotency_key=idempotency_key)
    await service.execute(command)
    return StatusOut(status="cancelled")


@router.get("/orders/{order_id}", responses=_errors(404, 503))
async def get_order(order_id: UUID, service: svc) -> OrderOut:
    """Return an order with its lines."""
    view = await service.ask(GetOrderById(order_id=order_id))
    if view is None:
        raise fastapi.HTTPException(404, f"there is no order {order_id}")
    return OrderOut.of_view(view)


@router.get("/customers/{customer_id}/orders", responses=_errors(404, 503))
async def customer_orders(
    customer_id: UUID,
    service: svc,
    status: OrderStatus | None = None,
    page_size: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
) -> OrderPage:
    """Page through a customer's orders, newest first."""
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


def create_app(
    service: OrdersService | None = None, *, database: str = "orders.db", schema: str = "public"
) -> FastAPI:
    """Build the API.

    Args:
        service: A running service to serve; the caller opens and closes it.
            Without one, the app opens an `OrdersService` on `database` for
            its lifespan (what `orders serve` does).
        database: The SQLite file or PostgreSQL URL, when the app opens the
            service itself.
        schema: The PostgreSQL schema, when the app opens the service itself.
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
    )
    app.state.service = service
    app.add_middleware(_LimitBody)
    _install_error_handlers(app)
    app.include_router(router)
    return app
