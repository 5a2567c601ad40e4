"""The HTTP API: `GET /api/v1/shipments/{order_id}`, for administrators.

Tokens are the order service's (the same secret, `ORDERS_JWT_SECRET`):
one identity for both services. Errors have the order service's shape,
`{"error": {"code": ..., "message": ...}}`.
"""

from typing import Annotated, Literal
from uuid import UUID

import fastapi
import pydantic
from fastapi import FastAPI, Request
from orders.auth import NOBODY, Caller, Forbidden, Tokens
from orders.errors import install_error_handlers, responses

import fabula

from .service import ShippingService

__all__ = ["ShipmentOut", "create_app"]


class ShipmentOut(pydantic.BaseModel):
    """The shipment of an order."""

    model_config = pydantic.ConfigDict(extra="forbid")

    order_id: UUID
    status: Literal["open", "cancelled"]
    reason: str | None


def _current(request: Request) -> ShippingService:
    service = request.app.state.service
    if not isinstance(service, ShippingService):
        raise fabula.StoreUnavailableError("the service is not running")
    return service


async def _admin(request: Request) -> Caller:
    tokens: Tokens | None = request.app.state.tokens
    if tokens is None:
        return NOBODY
    who = tokens.check_header(request.headers.get("authorization", ""))
    if not who.is_admin:
        raise Forbidden("only an administrator may read shipments")
    return who


router = fastapi.APIRouter(prefix="/api/v1")


@router.get("/shipments/{order_id}", responses=responses(404, 401, 403))
async def get_shipment(
    order_id: UUID,
    service: Annotated[ShippingService, fastapi.Depends(_current)],
    who: Annotated[Caller, fastapi.Depends(_admin)],
) -> ShipmentOut:
    """The shipment of a confirmed order (404 until its confirmation has arrived)."""
    del who
    shipment = await service.shipment(order_id)
    if shipment is None:
        raise fastapi.HTTPException(404, f"there is no shipment of order {order_id}")
    return ShipmentOut(order_id=order_id, status=shipment.status.value, reason=shipment.reason)


def create_app(service: ShippingService, *, tokens: Tokens | None) -> FastAPI:
    """Build the API over a running service (None `tokens`: authentication off)."""
    app = FastAPI(title="shipping", version="1.0.0", redirect_slashes=False)
    app.state.service = service
    app.state.tokens = tokens
    install_error_handlers(app)
    app.include_router(router)
    return app
