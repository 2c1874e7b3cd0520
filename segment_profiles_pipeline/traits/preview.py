"""Dagster metadata in the spirit of Segment's "Preview Trait": how many profiles have each
trait, and its most common values. Small by design (it is stored in the event log forever)."""

from __future__ import annotations

from typing import Any

from dagster import MetadataValue

from segment_profiles_pipeline.metadata import markdown_table
from segment_profiles_pipeline.traits.compute import AudiencesRunStats
from segment_profiles_pipeline.traits.config import TRAITS_TABLE, TraitsProject
from segment_profiles_pipeline.warehouse.base import WarehouseSession

TOP_VALUES = 3


def traits_preview(session: WarehouseSession, traits: TraitsProject) -> dict[str, Any]:
    """Per trait: profiles with a value and the most common values (lists: count only)."""
    keys = [t.key for t in traits.traits]
    counts = session.query("SELECT " + ", ".join(f"count({k})" for k in keys) + f" FROM {TRAITS_TABLE}").rows[
        0
    ]
    with_value = {k: int(n) for k, n in zip(keys, counts, strict=True)}
    rows = []
    for trait in traits.traits:
        if trait.type == "unique_list":
            common = "(list)"
        else:
            top = session.query(
                f"SELECT CAST({trait.key} AS VARCHAR) AS v, count(*) AS n FROM {TRAITS_TABLE} "
                f"WHERE {trait.key} IS NOT NULL GROUP BY {trait.key} ORDER BY n DESC, v LIMIT {TOP_VALUES}"
            )
            common = ", ".join(f"{v} ({n})" for v, n in top.rows) or "—"
        rows.append((trait.key, trait.type, trait.event, with_value[trait.key], common))
    return {
        "traits": markdown_table(
            ["trait", "type", "event", "profiles with a value", "most common values"], rows
        ),
        "profiles_with_value": MetadataValue.json(with_value),
    }


def audiences_preview(stats: AudiencesRunStats) -> dict[str, Any]:
    """Members and past members per audience."""
    rows = [(key, stats.members[key], stats.exited[key]) for key in stats.members]
    return {
        "audiences": markdown_table(["audience", "members", "exited (false)"], rows),
        "members": MetadataValue.json(stats.members),
    }
