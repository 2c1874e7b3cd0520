"""Moved to ``segment_profiles_pipeline.state`` (one module per state table).

Kept only for the modules that still import from here; new code imports
``segment_profiles_pipeline.state`` and its table modules.
"""

from segment_profiles_pipeline.state import STATE_SCHEMA, ensure_state
from segment_profiles_pipeline.state.failed_records import FAILED
from segment_profiles_pipeline.state.ledger import LEDGER
from segment_profiles_pipeline.state.outbox import OUTBOX
from segment_profiles_pipeline.state.sync_history import HISTORY

__all__ = ["FAILED", "HISTORY", "LEDGER", "OUTBOX", "STATE_SCHEMA", "ensure_state"]
