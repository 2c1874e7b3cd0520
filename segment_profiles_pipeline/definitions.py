"""Assemble the Dagster ``Definitions`` from the parts; nothing else happens here.

Loading never opens the warehouse: it only reads and validates the project's files and
environment, so a bad file fails ``dagster definitions validate`` with a clear message.

Strict or lenient: ``dagster definitions validate`` sets ``DAGSTER_IS_DEFS_VALIDATION_CLI=1``,
and under it (and in ``build_definitions`` by default, which the tests use) the first broken
model or YAML file fails the load. Everywhere else (webserver, daemon, run workers) the load is
lenient: a broken model becomes a stub asset showing its error and every other mapping keeps
its assets, schedules and sensors. Environment mistakes (warehouse, write key) fail both ways:
they are not one file among many.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from dagster import (
    AssetKey,
    AssetsDefinition,
    Definitions,
    definitions,
    in_process_executor,
    multiprocess_executor,
)

from segment_profiles_pipeline.automation.alert_sensor import build_alert_sensor
from segment_profiles_pipeline.automation.automation_sensor import build_automation_sensors
from segment_profiles_pipeline.automation.schedules import build_schedules
from segment_profiles_pipeline.automation.source_sensor import build_source_sensor
from segment_profiles_pipeline.errors import ConfigError
from segment_profiles_pipeline.identity.assets import identity_assets
from segment_profiles_pipeline.identity.explorer import build_explorer_job
from segment_profiles_pipeline.models.assets import build_model_asset, build_sources
from segment_profiles_pipeline.predictions import build_defs as build_prediction_defs
from segment_profiles_pipeline.profiles_sync import build_defs as build_profiles_sync_defs
from segment_profiles_pipeline.project import TRAITS_FILE, ModelProblem, collect_mappings, load_project
from segment_profiles_pipeline.settings import Settings
from segment_profiles_pipeline.sync.assets import build_sync_asset
from segment_profiles_pipeline.sync.readback import build_readback_check, profile_api_from_env
from segment_profiles_pipeline.sync.resources import SegmentDestination, segment_from_env
from segment_profiles_pipeline.sync.test_mapping import build_test_mapping_job
from segment_profiles_pipeline.traits import build_traits_assets, check_trait_key_clashes, load_traits
from segment_profiles_pipeline.traits.assets import GROUP as TRAITS_GROUP
from segment_profiles_pipeline.translator import SegmentProfilesTranslator
from segment_profiles_pipeline.vocabulary import AssetKeys, build_broken_asset, sync_asset_key
from segment_profiles_pipeline.warehouse.duckdb import DuckDBWarehouse
from segment_profiles_pipeline.warehouse.resources import warehouse_from_settings

if TYPE_CHECKING:  # imported only for a Snowflake deployment (see warehouse/resources.py)
    from segment_profiles_pipeline.warehouse.snowflake import SnowflakeWarehouse

VALIDATION_CLI = "DAGSTER_IS_DEFS_VALIDATION_CLI"
"""Set to ``1`` by ``dagster definitions validate`` itself (Dagster ≥ 1.10)."""


@dataclasses.dataclass(frozen=True)
class Resources:
    """The two resources every asset of the project uses."""

    warehouse: DuckDBWarehouse | SnowflakeWarehouse
    segment: SegmentDestination


def strict_from_env() -> bool:
    """Whether this load should fail on the first broken file (only under the validate command)."""
    return os.environ.get(VALIDATION_CLI) == "1"


def build_definitions(
    settings: Settings,
    *,
    strict: bool = True,
    resources: Resources | None = None,
    translator: SegmentProfilesTranslator | None = None,
) -> Definitions:
    """Everything the project defines. ``resources`` replaces the warehouse and destination read
    from the environment (the ``SegmentProfiles`` component configures them in YAML);
    ``translator`` sets keys, groups, owners, tags and freshness policies of the generated assets."""
    translator = translator or SegmentProfilesTranslator()
    keys = translator.asset_keys()
    if resources is None:
        resources = Resources(
            warehouse_from_settings(settings), segment_from_env(production=settings.production)
        )
    project = load_project(settings.models_dir, strict=strict)
    kind = settings.warehouse
    tables = [t for m in project.models.values() for t in m.upstream if t[0] != "models"]
    traits_assets: list[AssetsDefinition] = []
    problems = list(project.problems)
    try:
        traits = load_traits(settings.models_dir)
        if traits is not None:
            check_trait_key_clashes(traits, project)
            project = dataclasses.replace(project, mappings=collect_mappings(project, traits.sync_mappings()))
            tables += traits.event_tables()
            traits_assets = build_traits_assets(traits, kind, keys)
    except ConfigError as exc:
        if strict:
            raise
        problems.append(ModelProblem("computed_traits", settings.models_dir / TRAITS_FILE, exc))
    predictions = build_prediction_defs(settings.models_dir, kind, project.mappings, strict=strict, keys=keys)
    graph_inputs = project.mappings  # before the predictions' mapping: the graph must not read its own output
    project = dataclasses.replace(project, mappings=[*project.mappings, *predictions.mappings])
    tables += predictions.tables
    tables = list(dict.fromkeys(tables))
    assets = [
        *build_sources(tables, kind, settings.sample_users if settings.sample_data else None, keys),
        *(build_model_asset(m, kind, keys) for m in project.models.values()),
        *traits_assets,
        *identity_assets(settings.models_dir, graph_inputs, kind, predictions.tables, keys),
        *predictions.assets,
        *(build_sync_asset(spec, kind, keys) for spec in project.mappings),
        *build_profiles_sync_defs(settings.models_dir, project.mappings, kind, keys),
    ]
    assets += _stubs(
        problems, {k for a in assets for k in (a.keys if isinstance(a, AssetsDefinition) else [a.key])}, keys
    )
    defs = Definitions(
        assets=assets,
        asset_checks=[
            build_readback_check(s, keys) for s in project.mappings if s.mapping.action == "identify"
        ],
        jobs=[
            *(build_test_mapping_job(spec, keys) for spec in project.mappings),
            build_explorer_job(settings.models_dir),
        ],
        schedules=[*build_schedules(project.mappings, keys), *predictions.schedules],
        sensors=[
            build_source_sensor(tables, project.mappings, keys),
            build_alert_sensor(project.mappings),
            *build_automation_sensors(project.mappings, keys),
        ],
        resources={
            "warehouse": resources.warehouse,
            "segment": resources.segment,
            "profile_api": profile_api_from_env(),
        },
        # DuckDB has one writer per file: steps of a run execute one after another in one process
        # (no step start-up cost, no lock contention). Snowflake runs steps in parallel processes.
        executor=in_process_executor if kind == "duckdb" else multiprocess_executor,
    )
    return translator.apply(defs, {keys.sync(spec): spec for spec in project.mappings})


def _stubs(problems: Sequence[ModelProblem], taken: set[AssetKey], keys: AssetKeys) -> list[AssetsDefinition]:
    """One stub per broken model (and per mapping its YAML still names) where no good asset is,
    under the keys the translator gives them (a broken mapping has no spec: ``mapping`` is None)."""
    stubs = []
    for problem in problems:
        group = TRAITS_GROUP if problem.name == "computed_traits" else "models"
        key = keys(AssetKey(problem.name))
        if key in taken:  # e.g. a second file for a model name that loaded elsewhere
            key = keys(AssetKey(f"{problem.name}__does_not_load"))
        wanted = [(key, group)] + [
            (keys(sync_asset_key(name)), "profile_sync") for name in problem.mapping_names
        ]
        for stub_key, stub_group in wanted:
            if stub_key not in taken:
                taken.add(stub_key)
                stubs.append(build_broken_asset(stub_key, problem, stub_group))
    return stubs


@definitions
def defs() -> Definitions:
    """The shipped project, from the environment. Lazy, so importing this module (as the
    ``SegmentProfiles`` component does, for ``build_definitions``) loads nothing."""
    return build_definitions(Settings.from_env(), strict=strict_from_env())
