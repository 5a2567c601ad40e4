"""A child process that runs the order-summary projector until it is killed.

python projection_child.py PATH BATCH_SIZE
"""

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from fabula import Projector
from fabula.sqlite import SQLiteEventStore
from tests.support.read_models import OrderSummary


async def main(path: str, batch_size: int) -> None:
    store = SQLiteEventStore(path, synchronous="NORMAL")
    projector = Projector(store, [OrderSummary()], batch_size=batch_size)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    await projector.run()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
