"""A child process that dispatches idempotent commands until it is killed.

    python idempotency_child.py PATH ROUND

Each command opens a new account stream with two events, under its own key,
and its handler returns the stream id; one "ack" line per dispatch.
"""

import asyncio
import sys
from decimal import Decimal

import attrs

from fabula import Command, CommandBus, Idempotency, StreamAppend, default_registry
from fabula.sqlite import SQLiteEventStore
from fabula.storage import current_unit_of_work
from fabula.testing import Deposited, register_contract_events

register_contract_events(default_registry)


@attrs.frozen
class Open(Command[str]):
    account: str


async def open_account(command: Open) -> str:
    unit = current_unit_of_work()
    assert unit is not None
    events = [Deposited(amount=Decimal(1)), Deposited(amount=Decimal(2))]
    unit.appends.append(StreamAppend(command.account, events, expected_version=0))
    return command.account


async def main(path: str, round_number: str) -> None:
    store = SQLiteEventStore(path)
    bus = CommandBus()
    bus.use(Idempotency(store))
    bus.register(Open, open_account)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    n = 0
    while True:
        n += 1
        account = f"acc-{round_number}-{n}"
        await bus.dispatch(Open(account=account, idempotency_key=f"key-{account}"))
        sys.stdout.write(f"ack {account}\n")
        sys.stdout.flush()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
