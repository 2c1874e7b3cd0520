"""Assemble the Dagster ``Definitions`` from the parts; nothing else happens here.

Loading never opens the warehouse: it only reads and validates the project's files and
environment, so a bad file fails ``dagster definitions validate`` with a clear message.

Strict or lenient: ``dagster definitions validate`` sets ``DAGSTER_IS_DEFS_VALIDATION_CLI=1``
(``settings.strict_from_env``: the environment is read only in ``settings.py``),
and under it (and in ``build_definitions`` by default, which the tests use) the first broken
model or YAML file fails the load. Everywhere else (webserver, daemon, run workers) the load is
lenient: a broken model becomes a stub asset showing its error and every other mapping keeps
its assets, schedules and sensors. Environment mistakes (warehouse, write key) fail both ways:
they are not one file among many.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from dagster import (
    AssetsDefinition,
    Definitions,
    definitions,
    in_process_executor,
    multiprocess_executor,
)

from segment_profiles_pipeline import automation, identity, models, predictions, profiles_sync, sync, traits
from segment_profiles_pipeline.project import collect_mappings, load_project
from segment_profiles_pipeline.settings import Settings, strict_from_env
from segment_profiles_pipeline.sync.readback import profile_api_from_env
from segment_profiles_pipeline.sync.resources import SegmentDestination, segment_from_env
from segment_profiles_pipeline.translator import SegmentProfilesTranslator
from segment_profiles_pipeline.vocabulary import build_stubs
from segment_profiles_pipeline.warehouse.duckdb import DuckDBWarehouse
from segment_profiles_pipeline.warehouse.resources import warehouse_from_settings

if TYPE_CHECKING:  # imported only for a Snowflake deployment (see warehouse/resources.py)
    from segment_profiles_pipeline.warehouse.snowflake import SnowflakeWarehouse


@dataclasses.dataclass(frozen=True)
class Resources:
    """The two resources every asset of the project uses."""

    warehouse: DuckDBWarehouse | SnowflakeWarehouse
    segment: SegmentDestination


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
    kind, models_dir = settings.warehouse, settings.models_dir
    # What feeds other domains flows explicitly: the traits' and predictions' sync mappings (built
    # by the sync and automation domains) and the event tables they read (sources of the models
    # domain, watched by the source sensor).
    trait_defs = traits.build_defs(models_dir, project, kind, strict=strict, keys=keys)
    mappings = collect_mappings(project, trait_defs.mappings)
    prediction_defs = predictions.build_defs(models_dir, kind, mappings, strict=strict, keys=keys)
    graph_inputs = mappings  # before the predictions' mapping: the graph must not read its own output
    mappings = [*mappings, *prediction_defs.mappings]
    tables = list(
        dict.fromkeys(
            [
                *(t for m in project.models.values() for t in m.upstream if t[0] != "models"),
                *trait_defs.tables,
                *prediction_defs.tables,
            ]
        )
    )
    domains = [
        models.build_defs(
            project, tables, kind, settings.sample_users if settings.sample_data else None, keys
        ),
        trait_defs.defs,
        identity.build_defs(models_dir, graph_inputs, kind, prediction_defs.tables, keys),
        prediction_defs.defs,
        sync.build_defs(mappings, kind, keys),
        profiles_sync.build_defs(models_dir, mappings, kind, keys),
        automation.build_defs(tables, mappings, keys),
    ]
    taken = {
        k
        for domain in domains
        for a in domain.assets or []
        for k in (a.keys if isinstance(a, AssetsDefinition) else [a.key])
    }
    defs = Definitions.merge(
        *domains,
        Definitions(
            assets=build_stubs(project.problems, taken, keys),
            resources={
                "warehouse": resources.warehouse,
                "segment": resources.segment,
                "profile_api": profile_api_from_env(),
            },
            # DuckDB has one writer per file: steps of a run execute one after another in one process
            # (no step start-up cost, no lock contention). Snowflake runs steps in parallel processes.
            executor=in_process_executor if kind == "duckdb" else multiprocess_executor,
        ),
    )
    return translator.apply(defs, {keys.sync(spec): spec for spec in mappings})


@definitions
def defs() -> Definitions:
    """The shipped project, from the environment. Lazy, so importing this module (as the
    ``SegmentProfiles`` component does, for ``build_definitions``) loads nothing."""
    return build_definitions(Settings.from_env(), strict=strict_from_env())
