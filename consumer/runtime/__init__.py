"""The streaming consumer runtime (ordering, concurrency, retries, commits); it knows nothing of Klaviyo."""

from consumer.runtime.engine import RuntimeHealth, StreamRuntime
from consumer.runtime.messages import Failure, FailureSink, Handled, InboundMessage, Message, Processor, classify
from consumer.runtime.policy import RetryPolicy

__all__ = [
    "Failure",
    "FailureSink",
    "Handled",
    "InboundMessage",
    "Message",
    "Processor",
    "RetryPolicy",
    "RuntimeHealth",
    "StreamRuntime",
    "classify",
]
