"""Every error answer of the HTTP API: `{"error": {"code": ..., "message": ...}}`.

Domain errors map to 4xx with their own message; a database that is
unavailable is a 503 whose details go to the log, not to the client; an
unexpected error is a 500 logged once (by `middleware.Guard`).
"""

import logging
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

import fabula

from .auth import AuthError, Forbidden, RateLimited
from .catalog import UnknownCustomerError, UnknownProductError
from .domain import InvalidOrderError, OrderStateError
from .schemas import Model
from .service import ReadModelUnavailableError

__all__ = [
    "READ_MODEL_RETRY_AFTER",
    "ErrorBody",
    "ErrorDetail",
    "KeyNotAcceptedError",
    "error_response",
    "install_error_handlers",
    "request_id",
    "responses",
]

logger = logging.getLogger("orders.api")


class ErrorDetail(Model):
    """What went wrong."""

    code: str
    message: str


class ErrorBody(Model):
    """The body of every error response."""

    error: ErrorDetail


class KeyNotAcceptedError(Exception):
    """An `Idempotency-Key` sent where it would have no effect (HTTP 400)."""


def responses(*statuses: int) -> dict[int | str, dict[str, object]]:
    """The error answers a route documents: 400, 413 and 422, and `statuses`."""
    return {status: {"model": ErrorBody} for status in (400, 413, 422, *statuses)}


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """An error answer in the API's shape."""
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
    # An order racing its customer's forget: the customer is gone.
    (fabula.SubjectForgottenError, 422, "unknown_customer"),
    (UnknownProductError, 422, "unknown_product"),
    (OrderStateError, 409, "invalid_state"),
    (InvalidOrderError, 422, "invalid_order"),
    (fabula.ConcurrencyError, 409, "conflict"),
    (fabula.IdempotencyConflictError, 422, "idempotency_key_reused"),
    (KeyNotAcceptedError, 400, "idempotency_key_not_accepted"),
    (fabula.exceptions.InvalidIdempotencyKeyError, 422, "validation_error"),
    (fabula.InvalidCursorError, 400, "invalid_cursor"),
    (fabula.InvalidPageSizeError, 422, "validation_error"),
)


def _describe(errors: Sequence[Mapping[str, object]]) -> str:
    parts = []
    for error in errors[:5]:
        loc = error.get("loc", ())
        path = loc if isinstance(loc, list | tuple) else ()
        where = ".".join(str(part) for part in path if part != "body")
        message = error.get("msg")
        parts.append(f"{where}: {message or 'invalid'}" if where else str(message or ""))
    return "; ".join(parts) or "invalid request"


def _too_many_digits(cause: BaseException | None) -> bool:
    """Whether parsing the body failed on an integer longer than Python converts."""
    return isinstance(cause, ValueError) and "integer string conversion" in str(cause)


def request_id(request: Request) -> str:
    """The id `middleware.Guard` gave the request ("-" outside it)."""
    return str(getattr(request.state, "request_id", "-"))


async def _on_validation(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    if any(error.get("type") == "json_invalid" for error in errors):
        return error_response(400, "malformed_json", "the request body is not valid JSON")
    return error_response(422, "validation_error", _describe(errors))


async def _on_http(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400 and _too_many_digits(exc.__cause__):  # noqa: PLR2004
        # Valid JSON that Python will not turn into an int (CVE-2020-10735's limit).
        limit = sys.get_int_max_str_digits()
        message = f"a number in the body has more than {limit} digits"
        return error_response(422, "validation_error", message)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    return error_response(exc.status_code, code, str(exc.detail))


def _on_domain(status: int, code: str) -> Callable[[Request, Exception], Awaitable[JSONResponse]]:
    async def handler(_: Request, exc: Exception) -> JSONResponse:
        return error_response(status, code, str(exc))

    return handler


async def _on_read_model(_: Request, exc: Exception) -> JSONResponse:
    headers = {"Retry-After": str(READ_MODEL_RETRY_AFTER)}
    return error_response(503, "read_model_unavailable", str(exc), headers)


async def _on_unauthenticated(request: Request, exc: Exception) -> JSONResponse:
    given = request.headers.get("authorization") is not None
    challenge = 'Bearer error="invalid_token"' if given else "Bearer"
    return error_response(401, "unauthenticated", str(exc), {"WWW-Authenticate": challenge})


async def _on_rate_limited(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RateLimited)
    headers = {"Retry-After": str(exc.retry_after)}
    return error_response(429, "too_many_requests", str(exc), headers)


async def _on_unavailable(request: Request, exc: Exception) -> JSONResponse:
    # What failed (a file path, the server's words) is for the log, not the client.
    rid = request_id(request)
    logger.warning("request %s: the database is unavailable: %s", rid, exc)
    message = f"the database is unavailable; try again shortly (request {rid})"
    return error_response(503, "unavailable", message, {"Retry-After": "1"})


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error the application raises in the API's shape, with its status."""
    app.add_exception_handler(ReadModelUnavailableError, _on_read_model)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    for error_type, status, code in _DOMAIN_ERRORS:
        app.add_exception_handler(error_type, _on_domain(status, code))
    app.add_exception_handler(fabula.StoreUnavailableError, _on_unavailable)
    app.add_exception_handler(AuthError, _on_unauthenticated)
    app.add_exception_handler(Forbidden, _on_domain(403, "forbidden"))
    app.add_exception_handler(RateLimited, _on_rate_limited)
