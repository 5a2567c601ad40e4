"""NATS JetStream for integration events: a relay's publisher and an inbox's consumer.

Install with `pip install fabula[nats]` (it brings nats-py).
"""

from fabula._public import publish as _publish
from fabula.nats._consumer import JetStreamConsumer
from fabula.nats._publisher import JetStreamPublisher

__all__ = ["JetStreamConsumer", "JetStreamPublisher"]

_publish(__name__, globals(), __all__)
