"""`GET /metrics` of a served process: Prometheus text, for administrators."""

import uuid
from pathlib import Path

import httpx
from orders.auth import Role

from .conftest import ADMIN, Place, Server, bearer


def test_metrics_in_prometheus_text(tmp_path: Path) -> None:
    """An event appended shows in the counters; the gauges name the projections."""
    server = Server(Place("sqlite", tmp_path))
    server.start()
    try:
        product = {"name": "ink", "price": "1.00", "stock": 3}
        created = httpx.post(f"{server.url}/api/v1/products", json=product, headers=ADMIN)
        assert created.status_code == 201, created.text
        answer = httpx.get(f"{server.url}/metrics", headers=ADMIN, timeout=30)
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"].startswith("text/plain")
        text = answer.text
        assert 'fabula_events_appended_total{fabula_store="sqlite"' in text
        assert "fabula_append_duration" in text
        assert 'fabula_projection="order_summary"' in text
        assert httpx.get(f"{server.url}/metrics", timeout=30).status_code == 401
        customer = bearer(Role.CUSTOMER, str(uuid.uuid4()))
        assert httpx.get(f"{server.url}/metrics", headers=customer, timeout=30).status_code == 403
    finally:
        server.stop()
