"""Commands, queries, their buses and middleware chains."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from typing import Any, Generic, Protocol, TypeAlias, TypeVar, cast, overload, runtime_checkable
from uuid import UUID, uuid4

import attrs

from fabula import _telemetry as telemetry
from fabula.exceptions import DuplicateHandlerError, HandlerNotFoundError, MessageTypeError

__all__ = [
    "Command",
    "CommandBus",
    "Handler",
    "HandlerObject",
    "Message",
    "Middleware",
    "Next",
    "Query",
    "QueryBus",
]

R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)
M = TypeVar("M", bound="Message")
M_contra = TypeVar("M_contra", bound="Message", contravariant=True)
H = TypeVar("H", bound="Handler[Any, Any]")


@attrs.frozen(kw_only=True)
class Message:
    """What commands and queries share: an id and the correlation they belong to.

    Attributes:
        message_id: Unique per message; events a command causes carry it as
            their `causation_id`.
        correlation_id: Shared by everything one outside request set off;
            new if omitted (see `Correlation`).
    """

    message_id: UUID = attrs.field(factory=uuid4)
    correlation_id: UUID | None = None


@attrs.frozen(kw_only=True)
class Command(Message, Generic[R_co]):
    """Base class of commands: frozen attrs classes that ask for a change.

    Parametrise it with the handler's result type, so `await
    bus.dispatch(command)` is typed: `class PlaceOrder(Command[UUID]): ...`.

    Attributes:
        idempotency_key: With the idempotency middleware, a command runs at
            most once per key.
    """

    idempotency_key: str | None = None


@attrs.frozen(kw_only=True)
class Query(Message, Generic[R_co]):
    """Base class of queries: frozen attrs classes that ask for a view.

    Parametrise it with the result type: `class GetOrder(Query[OrderView]): ...`.
    """


@runtime_checkable
class HandlerObject(Protocol[M_contra, R_co]):
    """A handler written as an object with an async `handle` method."""

    def handle(self, message: M_contra, /) -> Awaitable[R_co]:
        """Handle `message` and return its result."""
        ...


Handler: TypeAlias = Callable[[M], Awaitable[R]] | HandlerObject[M, R]
"""A handler: an async callable taking the message, or an object with `handle`."""

Next: TypeAlias = Callable[[Any], Awaitable[object]]
"""The rest of the chain, as a middleware sees it: call it with the message."""

Middleware: TypeAlias = Callable[[Any, Next], Awaitable[object]]
"""An async callable `(message, call_next) -> result` wrapped around handlers."""


@attrs.define
class _Use:
    middleware: Middleware
    for_types: tuple[type, ...] | None


@attrs.define(repr=False)
class _Bus(Generic[M]):
    _kind: type[M]
    _handlers: dict[type, Callable[[Any], Awaitable[Any]]] = attrs.field(init=False, factory=dict)
    _uses: list[_Use] = attrs.field(init=False, factory=list)
    _chains: dict[type, Next] = attrs.field(init=False, factory=dict)

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__}: {len(self._handlers)} handlers, {len(self._uses)} middleware>"
        )

    @overload
    def register(self, message_type: type[M], handler: None = None) -> Callable[[H], H]: ...
    @overload
    def register(self, message_type: type[M], handler: H) -> H: ...
    def register(self, message_type: type[M], handler: H | None = None) -> H | Callable[[H], H]:
        """Register the one handler of `message_type`; with no handler, a decorator.

        Raises:
            DuplicateHandlerError: `message_type` already has a handler.
            MessageTypeError: `message_type` is not a message class of this
                bus, or the handler is neither async callable nor has `handle`.
        """
        if not (isinstance(message_type, type) and issubclass(message_type, self._kind)):
            msg = f"{message_type!r} is not a subclass of fabula.{self._kind.__name__}"
            raise MessageTypeError(msg)
        if handler is None:

            def decorate(function: H) -> H:
                self.register(message_type, function)
                return function

            return decorate
        if message_type in self._handlers:
            raise DuplicateHandlerError(message_type)
        call = handler.handle if isinstance(handler, HandlerObject) else handler
        if not callable(call):
            msg = f"the handler of {message_type.__qualname__} must be callable, not {handler!r}"
            raise MessageTypeError(msg)
        self._handlers[message_type] = call
        self._chains.clear()
        return handler

    def use(self, middleware: Middleware, *, for_types: Collection[type] | None = None) -> None:
        """Add middleware around every handler, or only those of `for_types`.

        Middleware runs in the order it was added: the first added is the
        outermost, seeing the message first and the result last.
        """
        if not callable(middleware):
            msg = f"middleware must be an async callable, not {middleware!r}"
            raise MessageTypeError(msg)
        types = None if for_types is None else tuple(for_types)
        self._uses.append(_Use(middleware, types))
        self._chains.clear()

    def message_types(self) -> tuple[type, ...]:
        """The message types that have a registered handler, in registration order."""
        return tuple(self._handlers)

    def has_middleware(self, kind: type) -> bool:
        """Whether middleware of class `kind` wraps every handler (added without `for_types`)."""
        return any(use.for_types is None and isinstance(use.middleware, kind) for use in self._uses)

    async def _dispatch(self, message: object) -> object:
        if not isinstance(message, self._kind):
            msg = f"{message!r} is not a fabula.{self._kind.__name__}"
            raise MessageTypeError(msg)
        kind = type(message)
        chain = self._chains.get(kind)
        if chain is None:
            chain = self._chains[kind] = self._chain(kind)
        return await chain(message)

    def _chain(self, kind: type) -> Next:
        handler = self._handlers.get(kind)
        if handler is None:
            raise HandlerNotFoundError(kind)
        chain = handler
        for use in reversed(self._uses):
            if use.for_types is None or issubclass(kind, use.for_types):
                chain = _wrap(use.middleware, chain)
        return chain


def _wrap(middleware: Middleware, call_next: Next) -> Next:
    async def call(message: object) -> object:
        return await middleware(message, call_next)

    return call


class CommandBus(_Bus[Command[Any]]):
    """Routes each command to its one handler, through the middleware.

    Example:
        >>> bus = CommandBus()
        >>> bus.use(RetryOnConflict())
        >>> bus.register(PlaceOrder, place_order)
        >>> order_id = await bus.dispatch(PlaceOrder(customer_id=c))
    """

    def __init__(self) -> None:
        super().__init__(Command)

    async def dispatch(self, command: Command[R]) -> R:
        """Run `command` through the middleware to its handler; return the result.

        Raises:
            HandlerNotFoundError: No handler is registered for its type.
            MessageTypeError: It is not a Command.
        """
        if not telemetry.enabled():
            return cast("R", await self._dispatch(command))
        with telemetry.span("fabula.command", _attributes("command", command)):
            return cast("R", await self._dispatch(command))


class QueryBus(_Bus[Query[Any]]):
    """Routes each query to its one handler (which reads only read models)."""

    def __init__(self) -> None:
        super().__init__(Query)

    async def dispatch(self, query: Query[R]) -> R:
        """Run `query` through the middleware to its handler; return the result.

        Raises:
            HandlerNotFoundError: No handler is registered for its type.
            MessageTypeError: It is not a Query.
        """
        if not telemetry.enabled():
            return cast("R", await self._dispatch(query))
        with telemetry.span("fabula.query", _attributes("query", query)):
            return cast("R", await self._dispatch(query))


def _attributes(kind: str, message: Message) -> dict[str, str | int]:
    """A dispatch span's attributes: the message's type and ids."""
    found: dict[str, str | int] = {
        f"fabula.{kind}.type": type(message).__qualname__,
        "fabula.message_id": str(message.message_id),
    }
    if message.correlation_id is not None:
        found["fabula.correlation_id"] = str(message.correlation_id)
    key = getattr(message, "idempotency_key", None)
    if key is not None:
        found["fabula.idempotency_key"] = key
    return found
