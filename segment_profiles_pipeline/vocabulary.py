"""The asset graph's shared vocabulary: keys, pool, retry policy and the lenient-load stub.

Why one module: every domain (models, traits, identity, predictions, profile_sync,
profiles_sync, automation) names assets of the others, for deps, schedules and sensors. Taking
those names from here, not from another domain's ``assets`` module, keeps the domains side by
side: each builds its own definitions, and none imports another's asset factories.
"""

from __future__ import annotations

from dagster import (
    AssetKey,
    AssetsDefinition,
    Backoff,
    Failure,
    Jitter,
    MetadataValue,
    RetryPolicy,
    StaticPartitionsDefinition,
    asset,
)

from segment_profiles_pipeline.identity.config import EXTERNAL_ID_TABLE, ID_GRAPH_TABLE, MERGES_TABLE
from segment_profiles_pipeline.project import ModelProblem, display_path

POOL = "warehouse"
"""Dagster pool of every step that writes the warehouse (DuckDB has one writer per file)."""

WAREHOUSE_RETRY = RetryPolicy(max_retries=3, delay=2, backoff=Backoff.EXPONENTIAL, jitter=Jitter.PLUS_MINUS)
"""Transient warehouse errors (a lock held too long, a dropped Snowflake session) retry the step."""

GRAPH_TABLE_KEYS = {
    table: AssetKey(table.split(".")) for table in (ID_GRAPH_TABLE, EXTERNAL_ID_TABLE, MERGES_TABLE)
}
"""The identity graph's three tables → their assets (one multi-asset writes all three)."""
GRAPH_KEYS = list(GRAPH_TABLE_KEYS.values())
"""What a layer keyed on resolved profiles depends on: all three, as the multi-asset cannot be subset."""


def source_key(schema: str | None, table: str) -> AssetKey:
    """The asset of a source table (an external asset, or another asset's table)."""
    return AssetKey([schema or "main", table])


def sync_asset_key(mapping_name: str) -> AssetKey:
    """The profile_sync asset of a mapping."""
    return AssetKey(["profile_sync", mapping_name])


def shard_partitions(shards: int) -> StaticPartitionsDefinition | None:
    """A sharded mapping's partitions (``shard_0`` …); none for one shard."""
    return StaticPartitionsDefinition([f"shard_{i}" for i in range(shards)]) if shards > 1 else None


def mapping_test_job_name(mapping_name: str) -> str:
    """The Test Mapping job of a mapping (``sync/test_mapping.py``)."""
    return f"{mapping_name}_test_mapping"


def build_broken_asset(key: AssetKey, problem: ModelProblem, group: str) -> AssetsDefinition:
    """What a file (or one of its mappings) that failed to load looks like in a lenient load.

    It keeps its place in the graph, says what is wrong in its description and metadata, and a
    materialization fails with the load error, so the mistake is visible where the user looks,
    while every other model, mapping, schedule and sensor keeps working."""
    where = display_path(problem.path)

    @asset(
        key=key,
        group_name=group,
        description=f"**Does not load** ({where}): {problem.error}\n\nFix the file; the deployment picks it up "
        "on the next code location reload. `dagster definitions validate` fails until then.",
        metadata={"load_error": MetadataValue.text(str(problem.error)), "file": MetadataValue.path(where)},
    )
    def broken() -> None:
        raise Failure(description=f"{where} does not load: {problem.error}", allow_retries=False)

    return broken
