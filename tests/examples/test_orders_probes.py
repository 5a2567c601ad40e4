"""`GET /health` and `GET /ready`: outside /api/v1, without a token, for supervisors."""

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal

import httpx
import pytest
from orders.api import create_app
from orders.messages import CreateCustomer, CreateProduct
from orders.service import OrdersService

from .conftest import TOKENS


@pytest.fixture
async def probe(service: OrdersService) -> AsyncIterator[httpx.AsyncClient]:
    """The API in-process, called without a token; /ready allows 0.2 s of lag."""
    app = create_app(service, tokens=TOKENS, ready_max_lag=0.2)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://orders") as client:
        yield client


async def test_health_and_ready_answer_without_a_token(probe: httpx.AsyncClient) -> None:
    """A running service is alive and ready; the API itself still wants a token."""
    assert (await probe.get("/health")).json() == {"status": "alive"}
    ready = await probe.get("/ready")
    assert (ready.status_code, ready.json()) == (200, {"status": "ready"})
    assert (await probe.get("/api/v1/products")).status_code == 401


async def test_not_ready_once_the_projector_stops(
    probe: httpx.AsyncClient, service: OrdersService
) -> None:
    """A stopped projector: 503 with the reason, and Retry-After; still alive."""
    await service._stop_projector()
    answer = await probe.get("/ready")
    assert answer.status_code == 503
    assert answer.headers["retry-after"] == "5"
    assert answer.json() == {
        "status": "unavailable",
        "reason": "the read model is not being updated: its projector has stopped",
    }
    assert (await probe.get("/health")).status_code == 200


async def test_not_ready_while_the_read_model_lags(
    probe: httpx.AsyncClient, service: OrdersService
) -> None:
    """A projector alive but stalled: ready until its oldest unapplied event is too old."""
    await service._stop_projector()
    stalled = asyncio.Event()

    async def stall() -> None:  # alive, and applies nothing
        await stalled.wait()

    service._projecting = asyncio.create_task(stall())
    try:
        assert (await probe.get("/ready")).status_code == 200
        await service.commands.dispatch(CreateCustomer(name="Ada", email="ada@example.org"))
        await service.commands.dispatch(CreateCustomer(name="Bob", email="bob@example.org"))
        assert (await probe.get("/ready")).status_code == 200  # customers are not events
        await service.commands.dispatch(CreateProduct(name="ink", price=Decimal("1.00"), stock=3))
        await asyncio.sleep(0.3)
        answer = await probe.get("/ready")
        assert answer.status_code == 503
        assert "behind the events" in answer.json()["reason"]
    finally:
        stalled.set()
        await service._projecting
