"""Property-based fuzzing of the served API from its own OpenAPI schema (schemathesis).

Every operation gets generated requests, valid and invalid; each answer must
not be a server error and must conform to the schema: a documented status
code, content type and body shape. Bounded: a fixed number of examples per
operation, so it runs in seconds.
"""

from typing import Any
from uuid import uuid4

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from orders.api import create_app
from orders.auth import Role
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from .conftest import ADMIN, TOKENS, Server, bearer

CUSTOMER = bearer(Role.CUSTOMER, str(uuid4()))

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


# The schema comes from the application itself; the requests go to a served process.
schema = schemathesis.openapi.from_dict(create_app(tokens=TOKENS).openapi())


@schema.parametrize()
@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
@pytest.mark.parametrize("caller", ["admin", "customer", "nobody"])
def test_no_server_errors_and_schema_conformant_answers(
    case: Any, server: Server, caller: str
) -> None:
    """As an administrator, as a customer (mostly 403 and 404), and without a token (401)."""
    headers = {"admin": ADMIN, "customer": CUSTOMER, "nobody": {}}[caller]
    case.call_and_validate(base_url=server.url, headers=headers, checks=CHECKS)
