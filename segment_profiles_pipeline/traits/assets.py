"""Dagster assets for computed traits and audiences.

``computed_traits`` depends on the event tables it reads and on the identity graph that keys
them on resolved profiles (all three tables of the ``identity_graph`` multi-asset: it cannot be
materialized in part, so an upstream selection such as a schedule's must take it whole);
``audiences`` on ``computed_traits``, on ``identity/id_graph`` (past memberships follow merges)
and on the models it joins, so lineage shows exactly what feeds a profile trait. The work
itself is in ``compute.py``; these functions only open a session, turn definition problems
into a ``Failure`` that names the file, trait and fix (not retried: retrying cannot fix a
definition), and report Segment-style preview metadata.
"""

import datetime as dt
import hashlib
from pathlib import Path

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    Config,
    Definitions,
    Failure,
    MaterializeResult,
    MetadataValue,
    ResourceParam,
    asset,
)
from pydantic import Field

from segment_profiles_pipeline.errors import ConfigError
from segment_profiles_pipeline.metadata import table_metadata
from segment_profiles_pipeline.project import TRAITS_FILE, ModelProblem, Project, check_unique_names
from segment_profiles_pipeline.traits.compute import compute_audiences, compute_traits
from segment_profiles_pipeline.traits.config import (
    AUDIENCES_TABLE,
    TRAITS_TABLE,
    TraitsProject,
    check_trait_key_clashes,
    load_traits,
)
from segment_profiles_pipeline.traits.preview import audiences_preview, traits_preview
from segment_profiles_pipeline.vocabulary import (
    DEFAULT_KEYS,
    POOL,
    WAREHOUSE_RETRY,
    AssetKeys,
    DomainDefs,
    build_broken_asset,
)
from segment_profiles_pipeline.warehouse.base import Warehouse

GROUP = "computed_traits"
TRAITS_KEY = AssetKey("computed_traits")
AUDIENCES_KEY = AssetKey("audiences")


class ComputedTraitsConfig(Config):
    full_refresh: bool = Field(
        default=False,
        description="Recompute every profile instead of only those with new events (the result is the same).",
    )


def build_traits_assets(
    traits: TraitsProject, kind: str, keys: AssetKeys = DEFAULT_KEYS
) -> list[AssetsDefinition]:
    """The ``computed_traits`` asset, plus ``audiences`` when the file defines any."""
    traits_key = keys(TRAITS_KEY)
    version = hashlib.sha256(traits.path.read_bytes()).hexdigest()[:16]
    file_metadata = {"traits_file": MetadataValue.path(traits.file)}

    @asset(
        key=traits_key,
        group_name=GROUP,
        kinds={kind},
        deps=[keys.source(schema, table) for schema, table in traits.event_tables()] + keys.graph,
        code_version=version,
        pool=POOL,
        retry_policy=WAREHOUSE_RETRY,
        metadata=file_metadata,
        description=f"`{TRAITS_TABLE}`: one row per identity-resolved profile, one column per computed trait "
        f"({', '.join(t.key for t in traits.traits)}).",
    )
    def computed_traits(
        context: AssetExecutionContext, config: ComputedTraitsConfig, warehouse: ResourceParam[Warehouse]
    ) -> MaterializeResult:
        with warehouse.session() as session:
            try:
                stats = compute_traits(session, traits, dt.datetime.now(dt.UTC), config.full_refresh)
            except ConfigError as exc:
                raise Failure(description=str(exc), allow_retries=False) from None
            metadata = {**table_metadata(session, TRAITS_TABLE), **traits_preview(session, traits)}
        context.log.info(
            f"{TRAITS_TABLE}: {stats.mode} run ({stats.reason}), {stats.profiles_recomputed} profile(s) recomputed"
        )
        if stats.unresolved_events:
            context.log.warning(
                f"{stats.unresolved_events} event row(s) read belong to no resolved profile (every identifier "
                "blocked or empty, or not in the identity graph yet) and are not counted; see docs/computed-traits.md"
            )
        return MaterializeResult(
            metadata={
                **metadata,
                "mode": stats.mode,
                "reason": stats.reason,
                "profiles_recomputed": MetadataValue.int(stats.profiles_recomputed),
                "new_events": MetadataValue.int(stats.new_events),
                "unresolved_events": MetadataValue.int(stats.unresolved_events),
                "profiles_moved": MetadataValue.int(stats.profiles_moved),
                "seconds": MetadataValue.float(round(stats.seconds, 3)),
            }
        )

    if not traits.audiences:
        return [computed_traits]

    @asset(
        key=keys(AUDIENCES_KEY),
        group_name=GROUP,
        kinds={kind},
        deps=[traits_key, keys.graph[0], *(keys(AssetKey(model)) for model in traits.joined_models())],
        code_version=version,
        pool=POOL,
        retry_policy=WAREHOUSE_RETRY,
        metadata=file_metadata,
        description=f"`{AUDIENCES_TABLE}`: one boolean column per audience "
        f"({', '.join(a.key for a in traits.audiences)}); true = member, false = left, null = never a member.",
    )
    def audiences(context: AssetExecutionContext, warehouse: ResourceParam[Warehouse]) -> MaterializeResult:
        with warehouse.session() as session:
            try:
                stats = compute_audiences(session, traits)
            except ConfigError as exc:
                raise Failure(description=str(exc), allow_retries=False) from None
            metadata = table_metadata(session, AUDIENCES_TABLE)
        context.log.info(f"{AUDIENCES_TABLE}: {stats.rows} profile(s), members {stats.members}")
        return MaterializeResult(metadata={**metadata, **audiences_preview(stats)})

    return [computed_traits, audiences]


def build_defs(
    models_dir: Path, project: Project, kind: str, *, strict: bool, keys: AssetKeys = DEFAULT_KEYS
) -> DomainDefs:
    """``computed_traits.yml`` (none: nothing to add): its assets, its sync mappings and the event
    tables it reads. A broken file raises when ``strict``, else becomes one stub asset showing the
    error, like a broken model (the identity graph then goes without the traits' events)."""
    try:
        traits = load_traits(models_dir)
        if traits is None:
            return DomainDefs()
        check_trait_key_clashes(traits, project)
        mappings = traits.sync_mappings()
        check_unique_names(mappings, {spec.mapping.name: spec.source.file for spec in project.mappings})
        return DomainDefs(
            defs=Definitions(assets=build_traits_assets(traits, kind, keys)),
            mappings=mappings,
            tables=traits.event_tables(),
        )
    except ConfigError as exc:
        if strict:
            raise
        problem = ModelProblem("computed_traits", models_dir / TRAITS_FILE, exc)
        return DomainDefs(defs=Definitions(assets=[build_broken_asset(keys(TRAITS_KEY), problem, GROUP)]))
