"""Who may do what in the orders API: tokens, roles, owners, scoped keys, and a rate limit."""

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import pytest
from orders.api import create_app
from orders.auth import RateLimit, Role, Tokens
from orders.service import OrdersService

from .conftest import ADDRESS, ADMIN, SECRET, TOKENS, Shop, bearer


@pytest.fixture
async def app(service: OrdersService) -> AsyncIterator[httpx.AsyncClient]:
    """The API without default headers: each request says who it is."""
    transport = httpx.ASGITransport(app=create_app(service, tokens=TOKENS))
    async with httpx.AsyncClient(transport=transport, base_url="http://orders/api/v1") as api:
        yield api


class Customers:
    """Two customers with an order each, a product, and their tokens."""

    def __init__(self, shop: Shop) -> None:
        self.shop = shop

    async def make(self) -> "Customers":
        self.ada, self.bob = await self.shop.customer("Ada"), await self.shop.customer("Bob")
        self.pen = await self.shop.product("pen", "1.99")
        self.ada_order = await self.shop.order(self.ada)
        self.bob_order = await self.shop.order(self.bob)
        self.as_ada = bearer(Role.CUSTOMER, self.ada)
        self.as_bob = bearer(Role.CUSTOMER, self.bob)
        return self


@pytest.fixture
async def people(shop: Shop) -> Customers:
    return await Customers(shop).make()


def error_of(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    message: str = response.json()["error"]["message"]
    return message


def forged(**claims: Any) -> dict[str, str]:
    """A token with these claims, signed with the service's secret unless `key` is given."""
    key = claims.pop("key", SECRET)
    now = datetime.now(UTC)
    body = {"sub": "someone", "role": "admin", "iat": now, "exp": now + timedelta(hours=1)}
    body.update(claims)
    body = {name: value for name, value in body.items() if value is not None}
    return {"Authorization": f"Bearer {jwt.encode(body, key, algorithm='HS256')}"}


class TestAuthentication:
    async def test_no_token_is_401_with_a_bearer_challenge(self, app: httpx.AsyncClient) -> None:
        for method, path in [("GET", "/products"), ("POST", "/customers"), ("GET", "/orders/x")]:
            response = await app.request(method, path, json={})
            error_of(response, 401, "unauthenticated")
            assert response.headers["www-authenticate"] == "Bearer"

    @pytest.mark.parametrize(
        "headers",
        [
            {"Authorization": "Bearer"},
            {"Authorization": "Basic YWRtaW46YWRtaW4="},
            {"Authorization": "Bearer not.a.token"},
            forged(key="another-secret-of-at-least-32-characters!"),
            forged(role="root"),
            forged(role="customer", sub="not-a-uuid"),
            forged(exp=None),
            forged(sub=None),
        ],
    )
    async def test_a_bad_token_is_401(
        self, app: httpx.AsyncClient, headers: dict[str, str]
    ) -> None:
        response = await app.get("/products", headers=headers)
        error_of(response, 401, "unauthenticated")
        assert response.headers["www-authenticate"].startswith("Bearer")

    async def test_an_unsigned_token_is_401(self, app: httpx.AsyncClient) -> None:
        """alg=none is never accepted, whatever the claims."""
        now = datetime.now(UTC)
        claims = {"sub": "x", "role": "admin", "iat": now, "exp": now + timedelta(hours=1)}
        unsigned = jwt.encode(claims, key="", algorithm="none")
        response = await app.get("/products", headers={"Authorization": f"Bearer {unsigned}"})
        error_of(response, 401, "unauthenticated")

    async def test_an_expired_token_is_401_and_says_so(self, app: httpx.AsyncClient) -> None:
        yesterday = Tokens(SECRET, clock=lambda: datetime.now(UTC) - timedelta(days=1))
        token = yesterday.issue(Role.ADMIN, "tests", timedelta(hours=1))
        response = await app.get("/products", headers={"Authorization": f"Bearer {token}"})
        assert error_of(response, 401, "unauthenticated") == "the token has expired"
        assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'

    def test_secrets_are_long_and_tokens_well_formed(self) -> None:
        with pytest.raises(ValueError, match="at least 32 characters"):
            Tokens("short")
        with pytest.raises(ValueError, match="badly formed"):
            TOKENS.issue(Role.CUSTOMER, "not-a-uuid", timedelta(hours=1))
        with pytest.raises(ValueError, match="lifetime must be positive"):
            TOKENS.issue(Role.ADMIN, "tests", timedelta(0))
        assert "x" * 32 not in repr(TOKENS)


class TestRoles:
    async def test_customers_read_products_but_do_not_keep_the_catalogs(
        self, app: httpx.AsyncClient, people: Customers
    ) -> None:
        assert (await app.get("/products", headers=people.as_ada)).status_code == 200
        body = {"name": "Eve", "email": "eve@example.org"}
        error_of(await app.post("/customers", json=body, headers=people.as_ada), 403, "forbidden")
        product = {"name": "gold pen", "price": "0.01"}
        error_of(await app.post("/products", json=product, headers=people.as_ada), 403, "forbidden")

    async def test_a_customer_opens_orders_only_for_themselves(
        self, app: httpx.AsyncClient, people: Customers
    ) -> None:
        mine = {"customer_id": people.ada, "shipping_address": ADDRESS}
        assert (await app.post("/orders", json=mine, headers=people.as_ada)).status_code == 201
        theirs = {"customer_id": people.bob, "shipping_address": ADDRESS}
        response = await app.post("/orders", json=theirs, headers=people.as_ada)
        error_of(response, 403, "forbidden")

    async def test_another_customers_order_does_not_exist_for_them(
        self, app: httpx.AsyncClient, people: Customers
    ) -> None:
        """Reading or acting on it is a 404, as for an order that is not there; it is untouched."""
        order, ada = people.bob_order, people.as_ada
        item = {"product_id": people.pen, "quantity": 1}
        attempts = [
            app.get(f"/orders/{order}", headers=ada),
            app.post(f"/orders/{order}/items", json=item, headers=ada),
            app.post(f"/orders/{order}/submit", headers=ada),
            app.post(f"/orders/{order}/cancel", json={"reason": "mine now"}, headers=ada),
        ]
        for attempt in attempts:
            error_of(await attempt, 404, "not_found")
        view = (await app.get(f"/orders/{order}", headers=people.as_bob)).json()
        assert (view["status"], view["items"]) == ("draft", [])
        response = await app.post(f"/orders/{order}/items", json=item, headers=people.as_bob)
        assert response.status_code == 200
        assert (await app.get(f"/orders/{order}", headers=ADMIN)).json()["item_count"] == 1

    async def test_a_customer_lists_only_their_own_orders(
        self, app: httpx.AsyncClient, people: Customers
    ) -> None:
        own = await app.get(f"/customers/{people.ada}/orders", headers=people.as_ada)
        assert [o["id"] for o in own.json()["items"]] == [people.ada_order]
        other = await app.get(f"/customers/{people.bob}/orders", headers=people.as_ada)
        error_of(other, 403, "forbidden")
        everyone = await app.get(f"/customers/{people.bob}/orders", headers=ADMIN)
        assert [o["id"] for o in everyone.json()["items"]] == [people.bob_order]

    async def test_idempotency_keys_are_each_callers_own(
        self, app: httpx.AsyncClient, people: Customers
    ) -> None:
        """The same key from two customers makes two orders; repeated by one, one order."""
        key = {"Idempotency-Key": "checkout-1"}
        ada = {"customer_id": people.ada, "shipping_address": ADDRESS}
        bob = {"customer_id": people.bob, "shipping_address": ADDRESS}
        first = await app.post("/orders", json=ada, headers={**people.as_ada, **key})
        again = await app.post("/orders", json=ada, headers={**people.as_ada, **key})
        other = await app.post("/orders", json=bob, headers={**people.as_bob, **key})
        assert [r.status_code for r in (first, again, other)] == [201, 201, 201]
        assert first.json() == again.json() != other.json()


class TestLimits:
    async def test_past_the_rate_limit_is_429_with_retry_after(
        self, service: OrdersService, people: Customers
    ) -> None:
        """Two requests a second per caller: a third at once waits; another caller does not."""
        now = [1000.0]
        limit = RateLimit(2, clock=lambda: now[0])
        transport = httpx.ASGITransport(app=create_app(service, tokens=TOKENS, rate_limit=limit))
        async with httpx.AsyncClient(transport=transport, base_url="http://o/api/v1") as app:
            answers = [(await app.get("/products", headers=people.as_ada)) for _ in range(3)]
            assert [a.status_code for a in answers] == [200, 200, 429]
            assert answers[2].headers["retry-after"] == "1"
            error_of(answers[2], 429, "too_many_requests")
            assert (await app.get("/products", headers=people.as_bob)).status_code == 200
            now[0] += 0.5  # half a second: one more request
            assert (await app.get("/products", headers=people.as_ada)).status_code == 200
            assert (await app.get("/products", headers=people.as_ada)).status_code == 429

    def test_a_rate_limit_is_a_positive_number(self) -> None:
        for bad in (0, -1, float("nan"), float("inf"), "2"):
            with pytest.raises(ValueError, match="rate limit"):
                RateLimit(bad)  # type: ignore[arg-type]
        slow = RateLimit(0.5, clock=lambda: 0.0)
        slow.take("x")  # a rate below one a second still allows one request

    async def test_a_trailing_slash_is_404_not_a_redirect(self, app: httpx.AsyncClient) -> None:
        """No 307 whose Location would echo the Host header a client sent."""
        response = await app.get("/products/", headers={**ADMIN, "Host": "evil.example"})
        error_of(response, 404, "not_found")
        assert "location" not in response.headers

    async def test_products_come_in_pages(self, shop: Shop) -> None:
        for n in range(5):
            await shop.product(f"p{n}", "1.00")
        seen, cursor = [], None
        while True:
            params = {"page_size": 2} | ({"cursor": cursor} if cursor else {})
            page = await shop.get("/products", params=params)
            seen += [p["name"] for p in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == [f"p{n}" for n in range(5)]
        bad = await shop.api.get("/products", params={"cursor": "nonsense"})
        error_of(bad, 400, "invalid_cursor")
