"""Profiles Sync: the tables Segment's Profiles Sync would land, in Segment's schema and names.

``build_defs`` (the Dagster asset and checks, group ``profiles_sync``), ``compute_profiles_sync``
(the work), ``compile`` (pure SQL), ``config`` (Segment's table and column names), ``sources``
(the acknowledged-trait log and the explorer's ``profile_trait_sources`` sidecar).
"""

from segment_profiles_pipeline.profiles_sync.assets import build_defs
from segment_profiles_pipeline.profiles_sync.compute import ProfilesSyncStats, compute_profiles_sync

__all__ = ["ProfilesSyncStats", "build_defs", "compute_profiles_sync"]
