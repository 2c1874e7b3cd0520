"""Dagster assets for the identity graph: one multi-asset writing three tables, with checks.

``identity/id_graph``, ``identity/external_id_mapping`` and ``identity/profile_merges`` are one
computation (a merge touches all three), so they materialize together, downstream of the event
tables and of the models whose identify mappings feed the graph; with ``graph.source: segment``,
downstream of Segment's landed Profiles Sync tables instead (external assets, ``landed_specs``).
"""

import datetime as dt
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetSpec,
    Config,
    Definitions,
    MaterializeResult,
    MetadataValue,
    ResourceParam,
    multi_asset,
)
from pydantic import Field

from segment_profiles_pipeline.errors import ConfigError
from segment_profiles_pipeline.identity.compute import LANDED_COLUMNS, compute_identity, identify_sources
from segment_profiles_pipeline.identity.config import (
    EXTERNAL_ID_TABLE,
    ID_GRAPH_TABLE,
    MERGES_TABLE,
    IdentityProject,
    load_identity,
)
from segment_profiles_pipeline.identity.explorer import build_explorer_job
from segment_profiles_pipeline.metadata import table_metadata
from segment_profiles_pipeline.project import MappingSpec
from segment_profiles_pipeline.traits.config import load_traits
from segment_profiles_pipeline.vocabulary import DEFAULT_KEYS, POOL, WAREHOUSE_RETRY, AssetKeys
from segment_profiles_pipeline.warehouse.base import Warehouse, WarehouseSession, literal

GROUP = "identity"
LIMITS_CHECK = "identifier_limits"
UNIQUE_CHECK = "identifier_in_one_profile"
DESCRIPTIONS = {
    ID_GRAPH_TABLE: "one row per profile ever created: its segment_id and the canonical profile it belongs to now.",
    EXTERNAL_ID_TABLE: "one row per identifier (type, value): the canonical profile holding it, and the message that added it.",
    MERGES_TABLE: "one row per merge: which profile merged into which, when, triggered by which message.",
}
"""What each table of the graph holds (its asset's description)."""


class IdentityConfig(Config):
    full_refresh: bool = Field(
        default=False, description="Resolve every message again instead of only new ones (same result)."
    )


def limit_violations(session: WarehouseSession, identity: IdentityProject) -> int:
    """Profiles holding more values of a type than its limit (the resolver never lets this happen)."""
    limits = " ".join(f"WHEN {literal(t.type)} THEN {t.limit}" for t in identity.rules.types)
    return int(
        session.query(
            f"SELECT count(*) FROM (SELECT canonical_segment_id, external_id_type, count(*) AS n "
            f"FROM {EXTERNAL_ID_TABLE} GROUP BY 1, 2) AS c "
            f"WHERE c.n > CASE c.external_id_type {limits} ELSE 0 END"
        ).scalar()
        or 0
    )


def shared_identifiers(session: WarehouseSession) -> int:
    """Identifiers mapped to more than one profile (each must belong to exactly one)."""
    return int(
        session.query(
            f"SELECT count(*) FROM (SELECT external_id_type, external_id_value FROM {EXTERNAL_ID_TABLE} "
            "GROUP BY 1, 2 HAVING count(DISTINCT canonical_segment_id) > 1) AS d"
        ).scalar()
        or 0
    )


def build_identity_defs(
    identity: IdentityProject,
    event_tables: list[tuple[str, str]],
    mappings: list[MappingSpec],
    kind: str,
    keys: AssetKeys = DEFAULT_KEYS,
):
    """The identity multi-asset (group ``identity``) and its checks."""
    inputs = identify_sources(identity, mappings)
    tables = (
        [(schema, table) for schema, table in (t.split(".", 1) for t in identity.config.sources.events)]
        if identity.config.sources.events
        else event_tables
    )
    landed = landed_specs(identity, kind, keys)
    if landed:  # Segment's graph: its landed tables are the only inputs
        deps = [spec.key for spec in landed]
    else:
        deps = [keys.source(s, t) for s, t in tables] + [keys.source_asset(s.source) for s in inputs]
    version = hashlib.sha256(
        identity.path.read_bytes() if identity.path.exists() else b"defaults"
    ).hexdigest()[:16]
    graph_keys = keys.graph_tables
    specs = table_specs(
        ((key, f"`{table}`: {DESCRIPTIONS[table]}", {}) for table, key in graph_keys.items()),
        kind,
        GROUP,
        deps=deps,
        code_version=version,
    )
    graph_key = graph_keys[EXTERNAL_ID_TABLE]
    checks = [
        AssetCheckSpec(
            LIMITS_CHECK,
            asset=graph_key,
            description="No profile holds more identifiers of a type than its limit.",
        ),
        AssetCheckSpec(
            UNIQUE_CHECK, asset=graph_key, description="Every identifier belongs to exactly one profile."
        ),
    ]

    @multi_asset(
        name="identity_graph",
        specs=specs,
        check_specs=checks,
        pool=POOL,
        retry_policy=WAREHOUSE_RETRY,
        description=(
            "Segment's identity graph, read from its landed Profiles Sync tables (docs/identity.md)."
            if landed
            else "Segment's identity resolution over the event tables and identify mappings (docs/identity.md)."
        ),
    )
    def identity_graph(
        context: AssetExecutionContext, config: IdentityConfig, warehouse: ResourceParam[Warehouse]
    ):
        with warehouse.session() as session:
            stats = compute_identity(
                session, identity, list(tables), mappings, dt.datetime.now(dt.UTC), config.full_refresh
            )
            context.log.info(
                f"identity graph: {stats.mode} run ({stats.reason}), {stats.profiles} profile(s)"
            )
            run: dict[str, Any] = {
                "mode": stats.mode,
                "reason": stats.reason,
                "new_identifier_sets": MetadataValue.int(stats.candidates),
                "profiles_created": MetadataValue.int(stats.profiles_created),
                "merges": MetadataValue.int(stats.merges),
                "demotions": MetadataValue.int(stats.demotions),
                "profiles": MetadataValue.int(stats.profiles),
                "seconds": MetadataValue.float(round(stats.seconds, 3)),
            }
            for table, key in graph_keys.items():
                yield MaterializeResult(asset_key=key, metadata={**table_metadata(session, table), **run})
            over, shared = limit_violations(session, identity), shared_identifiers(session)
        yield AssetCheckResult(
            asset_key=graph_key,
            check_name=LIMITS_CHECK,
            passed=over == 0,
            severity=AssetCheckSeverity.ERROR,
            metadata={"profile_types_over_limit": MetadataValue.int(over)},
        )
        yield AssetCheckResult(
            asset_key=graph_key,
            check_name=UNIQUE_CHECK,
            passed=shared == 0,
            severity=AssetCheckSeverity.ERROR,
            metadata={"identifiers_in_several_profiles": MetadataValue.int(shared)},
        )

    return [*landed, identity_graph]


def landed_specs(identity: IdentityProject, kind: str, keys: AssetKeys = DEFAULT_KEYS) -> list[AssetSpec]:
    """With ``graph.source: segment``: Segment's landed Profiles Sync tables as external assets
    (Segment writes them; this project only reads them)."""
    schema = identity.config.graph.landed_schema
    if identity.config.graph.source != "segment" or schema is None:
        return []
    return table_specs(
        (
            (
                keys.source(schema, table),
                f"`{schema}.{table}`, landed by Segment's Profiles Sync (read by `identity_graph`).",
                {"columns_read": ", ".join(columns)},
            )
            for table, columns in LANDED_COLUMNS.items()
        ),
        kind,
        "sources",
    )


def table_specs(
    tables: Iterable[tuple[AssetKey, str, Mapping[str, str]]],
    kind: str,
    group: str,
    *,
    deps: Sequence[AssetKey] = (),
    code_version: str | None = None,
) -> list[AssetSpec]:
    """One spec per (key, description, metadata), in ``group`` with the warehouse's kind: the
    graph's own tables and Segment's landed ones are built by one function, so they cannot come
    to differ in what every table of the layer carries."""
    return [
        AssetSpec(
            key,
            group_name=group,
            kinds={kind},
            deps=deps,
            code_version=code_version,
            description=description,
            metadata=metadata,
        )
        for key, description, metadata in tables
    ]


def identity_assets(
    models_dir: Path,
    mappings: list[MappingSpec],
    kind: str,
    more_events: Sequence[tuple[str, str]] = (),
    keys: AssetKeys = DEFAULT_KEYS,
) -> list:
    """What ``definitions.py`` adds: the identity assets over the traits' event tables and
    ``more_events`` (the predictions' event tables), Segment's defaults when ``identity.yml`` is
    missing. ``mappings`` are the identify mappings that may feed the graph: never a layer keyed on
    the graph itself (traits, predictions), which would be a cycle. A broken traits file leaves the
    graph without the traits' events (definitions reports that file's error itself); a broken
    identity file fails the load."""
    identity = load_identity(models_dir)
    check_mappings_against(identity, mappings)
    try:
        traits = load_traits(models_dir)
    except ConfigError:
        traits = None
    events = list(dict.fromkeys([*(traits.event_tables() if traits else []), *more_events]))
    return build_identity_defs(identity, events, mappings, kind, keys)


def build_defs(
    models_dir: Path,
    mappings: list[MappingSpec],
    kind: str,
    more_events: Sequence[tuple[str, str]] = (),
    keys: AssetKeys = DEFAULT_KEYS,
) -> Definitions:
    """What the identity layer adds: the graph's assets and checks (``identity_assets``) and the
    ``profile_explorer`` job."""
    return Definitions(
        assets=identity_assets(models_dir, mappings, kind, more_events, keys),
        jobs=[build_explorer_job(models_dir)],
    )


def check_mappings_against(identity: IdentityProject, mappings: list[MappingSpec]) -> None:
    """Fail the load when ``sources.identify_mappings`` names no identify mapping of a model."""
    wanted = identity.config.sources.identify_mappings or []
    known = {
        s.mapping.name
        for s in mappings
        if s.mapping.action == "identify" and s.source.table.startswith("models.")
    }
    for name in wanted:
        if name not in known:
            raise ConfigError(
                f"identify mapping '{name}' is not an identify mapping of any model.",
                file=identity.file,
                field="sources.identify_mappings",
                fix=f"use one of: {', '.join(sorted(known)) or '(none)'}",
            )
