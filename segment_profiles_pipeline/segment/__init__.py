"""The Segment side: Tracking API facts (spec), batching of serialised messages, the HTTP client."""

from segment_profiles_pipeline.segment.batching import MessageTooLargeError, plan_batches, request_body
from segment_profiles_pipeline.segment.client import DeliveryStats, SegmentClient
from segment_profiles_pipeline.segment.outcomes import DeliveryFailure, Outcome
from segment_profiles_pipeline.segment.spec import (
    MAX_BATCH_MESSAGES,
    MAX_MESSAGE_BYTES,
    MAX_MESSAGE_ID_CHARS,
    MAX_REQUEST_BYTES,
    REGIONS,
    resolve_endpoint,
)

__all__ = [
    "MAX_BATCH_MESSAGES",
    "MAX_MESSAGE_BYTES",
    "MAX_MESSAGE_ID_CHARS",
    "MAX_REQUEST_BYTES",
    "REGIONS",
    "DeliveryFailure",
    "DeliveryStats",
    "MessageTooLargeError",
    "Outcome",
    "SegmentClient",
    "plan_batches",
    "request_body",
    "resolve_endpoint",
]
