"""Given / when / then for aggregates: past events, one action, the events it records."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any, Generic
from uuid import UUID

import attrs
from typing_extensions import TypeVar

from fabula._aggregate import Aggregate
from fabula._events import BASE_FIELDS, AggregateId, DomainEvent, coerce_id, id_type

__all__ = ["Given", "Outcome", "given", "scenario"]

A = TypeVar("A", bound=Aggregate[Any])
R = TypeVar("R", default=object)


def given(
    aggregate_type: type[A],
    *history: DomainEvent[Any],
    id: AggregateId | None = None,  # noqa: A002
) -> Given[A]:
    """Start a scenario: an aggregate of `aggregate_type` with `history` behind it.

    The history events are stamped with the aggregate's id and versions 1, 2,
    3..., so write them with their own fields only. With no history the
    aggregate is blank (as `Repository` builds it before replaying).

    Example:
        >>> given(Order, OrderCreated(customer_id=c)).when(
        ...     lambda order: order.submit()
        ... ).then_raises(EmptyOrderError)

    Args:
        aggregate_type: The aggregate class.
        *history: Past events, oldest first.
        id: The aggregate's id (or its text); a new one of the class's id
            type if omitted.

    Returns:
        The scenario, ready for `when`.
    """
    aggregate_id = aggregate_type.new_id() if id is None else aggregate_type.coerce_id(id)
    stamped = tuple(
        attrs.evolve(event, aggregate_id=_as_kind(type(event), aggregate_id), version=number)
        for number, event in enumerate(history, start=1)
    )
    return Given(aggregate_type, aggregate_id, stamped)


def _as_kind(event_class: type, aggregate_id: UUID | str) -> UUID | str:
    """The aggregate's id as `event_class` declares its `aggregate_id`."""
    kind = id_type(event_class)
    return aggregate_id if isinstance(aggregate_id, kind) else coerce_id(kind, aggregate_id)


@attrs.frozen
class Given(Generic[A]):
    """An aggregate type, an id and the history a scenario starts from."""

    aggregate_type: type[A]
    aggregate_id: AggregateId
    history: tuple[DomainEvent[Any], ...]

    def aggregate(self) -> A:
        """Return a fresh aggregate rebuilt from the history, to inspect or act on yourself.

        Each call rebuilds it anew (as `when` does), so a test can check the
        state the history leads to without running an action:

            >>> order = given(Order, OrderCreated(customer_id=c)).aggregate()
            >>> order.version
            1
        """
        return self.aggregate_type.from_events(self.aggregate_id, self.history)

    def when(self, action: Callable[[A], R]) -> Outcome[A, R]:
        """Run `action` on the rebuilt aggregate and capture what happened.

        If `action` returns an aggregate of the same type (a factory method,
        say), that aggregate's events are the ones checked. Whatever it
        returns is the outcome's `result`.

        Returns:
            The outcome, to check with `then` or `then_raises`.
        """
        aggregate = self.aggregate()
        try:
            result = action(aggregate)
        except Exception as exc:  # noqa: BLE001 - the outcome reports any failure
            return Outcome(aggregate, exc)
        if isinstance(result, self.aggregate_type) and result is not aggregate:
            aggregate = result
        return Outcome(aggregate, None, result)


@attrs.frozen
class Outcome(Generic[A, R]):
    """What a `when` did.

    Attributes:
        aggregate: The aggregate afterwards (the one the action returned, if
            it returned one of the same type).
        error: What the action raised, or None.
        result: What the action returned (None if it raised).
    """

    aggregate: A
    error: Exception | None
    result: R | None = None

    def then(self, *expected: DomainEvent[Any]) -> A:
        """Assert that the action succeeded and recorded exactly `expected`.

        Events are compared by type and their own fields; ids, timestamps,
        versions and metadata are ignored. Call it with no events to assert
        that nothing was recorded.

        Returns:
            The aggregate, for further assertions on its state.

        Raises:
            AssertionError: The action raised, or recorded other events.
        """
        if self.error is not None:
            msg = f"expected events {_show(expected)}, but the action raised {self.error!r}"
            raise AssertionError(msg) from self.error
        actual = self.aggregate.pending_events
        if [_essence(e) for e in actual] != [_essence(e) for e in expected]:
            msg = f"expected events:\n  {_show(expected)}\nrecorded events:\n  {_show(actual)}"
            raise AssertionError(msg)
        return self.aggregate

    def then_raises(
        self, error_type: type[BaseException], *, match: str | None = None
    ) -> BaseException:
        """Assert that the action raised `error_type` and recorded nothing.

        Args:
            error_type: The exception class expected (subclasses count).
            match: A regular expression the error's message must contain.

        Returns:
            The error, for further assertions.

        Raises:
            AssertionError: The action did not raise that error, or it
                recorded events before raising.
        """
        error = self.error
        if error is None:
            msg = (
                f"expected {error_type.__name__}, but the action succeeded and recorded "
                f"{_show(self.aggregate.pending_events)}"
            )
            raise AssertionError(msg)
        if not isinstance(error, error_type):
            msg = f"expected {error_type.__name__}, but the action raised {error!r}"
            raise AssertionError(msg) from error  # noqa: TRY004 - an assertion, not a type check
        if match is not None and not re.search(match, str(error)):
            msg = f"{error!r} does not match {match!r}"
            raise AssertionError(msg) from error
        if self.aggregate.pending_events:
            msg = (
                f"the action raised {error!r} but had recorded "
                f"{_show(self.aggregate.pending_events)} first"
            )
            raise AssertionError(msg)
        return error


def _essence(event: DomainEvent[Any]) -> tuple[type, dict[str, Any]]:
    fields = attrs.fields(type(event))
    return type(event), {
        f.name: getattr(event, f.name) for f in fields if f.name not in BASE_FIELDS
    }


def _show(events: Sequence[DomainEvent[Any]]) -> str:
    if not events:
        return "(none)"
    parts = []
    for event in events:
        cls, own = _essence(event)
        args = ", ".join(f"{k}={v!r}" for k, v in own.items())
        parts.append(f"{cls.__qualname__}({args})")
    return "\n  ".join(parts)


scenario = given
"""`given` under a name that does not clash with `hypothesis.given`."""
