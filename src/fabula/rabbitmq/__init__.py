"""RabbitMQ for integration events: a relay's publisher and an inbox's consumer.

Install with `pip install fabula[rabbitmq]` (it brings aio-pika).
"""

from fabula._public import publish as _publish
from fabula.rabbitmq._consumer import RabbitConsumer
from fabula.rabbitmq._publisher import RabbitPublisher

__all__ = ["RabbitConsumer", "RabbitPublisher"]

_publish(__name__, globals(), __all__)
