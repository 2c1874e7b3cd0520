"""Dagster assets for the ``profiles_sync`` schema: one multi-asset writing nine tables, with checks.

The nine tables are one computation (a merge or an acknowledged trait touches several), so they
materialize together, downstream of the identity graph and of every identify mapping's sync
asset (the acknowledged traits are the sync's output).
"""

import datetime as dt
from pathlib import Path
from typing import Any

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetSpec,
    Definitions,
    MaterializeResult,
    MetadataValue,
    ResourceParam,
    multi_asset,
)

from segment_profiles_pipeline.identity.config import IdentityProject, load_identity
from segment_profiles_pipeline.metadata import table_metadata
from segment_profiles_pipeline.profiles_sync import compile as sql
from segment_profiles_pipeline.profiles_sync.compute import compute_profiles_sync, trait_mappings
from segment_profiles_pipeline.profiles_sync.config import (
    CURRENT_TABLES,
    MATERIALIZED_TABLES,
    PROFILE_TRAITS_UPDATES_SYSTEM,
    RAW_TABLES,
    schema_of,
)
from segment_profiles_pipeline.project import MappingSpec
from segment_profiles_pipeline.vocabulary import DEFAULT_KEYS, POOL, WAREHOUSE_RETRY, AssetKeys
from segment_profiles_pipeline.warehouse.base import Warehouse

GROUP = "profiles_sync"
CURRENT_CHECK = "latest_update_is_current_state"
RESOLVED_CHECK = "acknowledged_traits_on_profiles"
DESCRIPTIONS = {
    "id_graph_updates": "append-only: a row per profile created and per profile a merge re-pointed.",
    "external_id_mapping_updates": "append-only: a row per identifier, on the profile it was first added to.",
    "profile_traits_updates": "append-only: a row per profile state change, carrying the complete trait state; one column per trait.",
    "user_traits": "a row per (canonical profile, trait) with its current value.",
    "user_identifiers": "a row per identifier with its canonical profile.",
    "profile_merges": "a row per merged-away profile and the canonical profile it belongs to.",
    "id_graph": "current state: a row per segment_id and its canonical profile.",
    "external_id_mapping": "current state: a row per identifier and its canonical profile.",
    "profile_traits": "current state: a row per profile ever created, traits on canonical ones, `merged_to` on merged-away ones.",
}


def build_profiles_sync_asset(
    identity: IdentityProject, mappings: list[MappingSpec], kind: str, keys: AssetKeys = DEFAULT_KEYS
):
    """The ``profiles_sync`` multi-asset (group ``profiles_sync``) and its checks."""
    schema = schema_of(identity)
    tables = (*RAW_TABLES, *MATERIALIZED_TABLES, *CURRENT_TABLES)
    table_keys = {table: keys(AssetKey([schema, table])) for table in tables}
    deps = [*keys.graph, *(keys.sync(s) for s in trait_mappings(mappings))]
    specs = [
        AssetSpec(
            table_keys[table],
            group_name=GROUP,
            kinds={kind},
            deps=deps,
            description=f"`{schema}.{table}` (Segment's Profiles Sync layout): {DESCRIPTIONS[table]}",
        )
        for table in tables
    ]
    traits_key = table_keys["profile_traits_updates"]
    checks = [
        AssetCheckSpec(
            CURRENT_CHECK,
            asset=traits_key,
            description="The latest row per segment_id equals profiles_sync.profile_traits (what consumers keep).",
        ),
        AssetCheckSpec(
            RESOLVED_CHECK,
            asset=traits_key,
            description="Every acknowledged record's traits are known and land on a profile of the graph.",
        ),
    ]

    @multi_asset(
        name="profiles_sync",
        specs=specs,
        check_specs=checks,
        pool=POOL,
        retry_policy=WAREHOUSE_RETRY,
        description="What Segment's Profiles Sync would land: the identity graph and the acknowledged traits (docs/identity.md).",
    )
    def profiles_sync(context: AssetExecutionContext, warehouse: ResourceParam[Warehouse]):
        with warehouse.session() as session:
            stats = compute_profiles_sync(session, identity, mappings, dt.datetime.now(dt.UTC))
            context.log.info(
                f"profiles_sync: appended {stats.appended}; {len(stats.trait_columns)} trait column(s)"
            )
            run: dict[str, Any] = {
                "trait_columns": MetadataValue.json(stats.trait_columns),
                "values_logged": MetadataValue.int(stats.values_logged),
                "dry_run_values": MetadataValue.int(stats.planned_values),
                "unresolved_records": MetadataValue.int(stats.unresolved_records),
                "unrecoverable_records": MetadataValue.int(stats.unrecoverable_records),
                "unread_mappings": ", ".join(stats.unread_mappings) or "none",
                "seconds": MetadataValue.float(round(stats.seconds, 3)),
            }
            for table, key in table_keys.items():
                appended = (
                    {"rows_appended": MetadataValue.int(stats.appended[table])} if table in RAW_TABLES else {}
                )
                yield MaterializeResult(
                    asset_key=key,
                    metadata={**table_metadata(session, f"{schema}.{table}"), **appended, **run},
                )
            columns = [c for c, _ in session.columns(schema, "profile_traits_updates")]
            drift = int(
                session.query(sql.drift_sql(schema, columns[len(PROFILE_TRAITS_UPDATES_SYSTEM) :])).scalar()
                or 0
            )
        yield AssetCheckResult(
            asset_key=traits_key,
            check_name=CURRENT_CHECK,
            passed=drift == 0,
            severity=AssetCheckSeverity.ERROR,
            metadata={"profiles_differing": MetadataValue.int(drift)},
        )
        yield AssetCheckResult(
            asset_key=traits_key,
            check_name=RESOLVED_CHECK,
            passed=stats.unresolved_records == 0 and stats.unrecoverable_records == 0,
            severity=AssetCheckSeverity.WARN,
            metadata={
                "unresolved_records": MetadataValue.int(stats.unresolved_records),
                "unrecoverable_records": MetadataValue.int(stats.unrecoverable_records),
            },
        )

    return profiles_sync


def build_defs(
    models_dir: Path, mappings: list[MappingSpec], kind: str, keys: AssetKeys = DEFAULT_KEYS
) -> Definitions:
    """What the layer adds: the ``profiles_sync`` asset and its checks, unless ``identity.yml``
    turns it off."""
    identity = load_identity(models_dir)
    if not identity.config.profiles_sync.enabled:
        return Definitions()
    return Definitions(assets=[build_profiles_sync_asset(identity, mappings, kind, keys)])
