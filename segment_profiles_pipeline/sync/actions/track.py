"""Send Track: ``event`` from a column or a fixed name, ``properties`` like traits.

The destination emits ``{userId, anonymousId, timestamp, event, messageId, integrations, properties,
context: {consent}, type: 'track'}``; ``group_id`` is one of its fields but is never put in the
message, so mappings cannot set it (config.ACTION_FIELDS). Which records are sent (each new key
once; changed keys only with ``send: upsert``; deletes never) is the plan's business (sync/plan.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from segment_profiles_pipeline.config import EventName
from segment_profiles_pipeline.sync.actions.errors import MISSING_EVENT_NAME


def event(name: EventName, row: Mapping[str, Any]) -> str:
    """The event name of one record; a null or empty name column rejects the record."""
    if name.value is not None:
        return name.value
    assert name.column is not None  # EventName validates exactly one of the two
    value = row.get(name.column.lower())
    if value is None or str(value).strip() == "":
        raise MISSING_EVENT_NAME(f"Column {name.column} is null or empty.")
    return str(value)
