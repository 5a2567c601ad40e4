"""The API's ASGI middleware: a body size limit, request ids, and one log line per crash."""

import logging
import re
import uuid
from collections.abc import Awaitable, Callable

import fastapi
from starlette.types import Message, Receive, Scope, Send

from .errors import error_response

__all__ = ["MAX_BODY_BYTES", "Guard", "LimitBody"]

logger = logging.getLogger("orders.api")

MAX_BODY_BYTES = 64 * 1024
"""The largest request body accepted."""


_CLIENT_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


class Guard:
    """ASGI middleware: an id for every request, and one log line and a 500 for a crash.

    The id is the client's `X-Request-ID` when that is a plain token of up to
    64 characters, else a new one; the answer carries it in `X-Request-ID`,
    and 5xx answers and log lines name it, so a report can be matched to
    the log. An unexpected error is logged here, once, with its traceback
    (the server would log it a second time if it saw it).
    """

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one request, with its id."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers", ())).get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _CLIENT_ID.fullmatch(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = [*message.get("headers", ()), (b"x-request-id", request_id.encode())]
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            logger.exception("request %s failed with an unexpected error", request_id)
            if not started:
                message = f"an unexpected error occurred (request {request_id}); it has been logged"
                await error_response(500, "internal_error", message)(scope, receive, send_with_id)


class LimitBody:
    """ASGI middleware: refuse request bodies larger than `limit` bytes with 413."""

    def __init__(self, app: Callable[..., Awaitable[None]], limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one request, reading at most `limit` bytes of its body."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                response = error_response(413, "body_too_large", self._message())
                await response(scope, receive, send)
                return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise fastapi.HTTPException(413, self._message())
            return message

        await self.app(scope, limited, send)

    def _message(self) -> str:
        return f"the request body is larger than {self.limit} bytes"
