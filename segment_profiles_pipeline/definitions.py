"""Assemble the Dagster ``Definitions`` from the parts; nothing else happens here.

Loading never opens the warehouse: it only reads and validates the project's files and
environment, so a bad file fails ``dagster definitions validate`` with a clear message.
"""

from __future__ import annotations

import dataclasses

from dagster import Definitions, in_process_executor, multiprocess_executor

from segment_profiles_pipeline.automation import build_alert_sensor, build_schedules, build_source_sensor
from segment_profiles_pipeline.models.assets import build_model_asset, build_sources
from segment_profiles_pipeline.project import collect_mappings, load_project
from segment_profiles_pipeline.settings import Settings
from segment_profiles_pipeline.sync.assets import build_sync_asset
from segment_profiles_pipeline.sync.resources import segment_from_env
from segment_profiles_pipeline.traits import build_traits_assets, check_trait_key_clashes, load_traits
from segment_profiles_pipeline.warehouse.resources import warehouse_from_settings


def build_definitions(settings: Settings) -> Definitions:
    project = load_project(settings.models_dir)
    kind = settings.warehouse
    tables = [t for m in project.models.values() for t in m.upstream if t[0] != "models"]
    traits_assets = []
    traits = load_traits(settings.models_dir)
    if traits is not None:
        check_trait_key_clashes(traits, project)
        project = dataclasses.replace(
            project, mappings=collect_mappings(project.models, traits.sync_mappings())
        )
        tables += traits.event_tables()
        traits_assets = build_traits_assets(traits, kind)
    tables = list(dict.fromkeys(tables))
    assets = [
        *build_sources(tables, kind, settings.sample_users if settings.sample_data else None),
        *(build_model_asset(m, kind) for m in project.models.values()),
        *traits_assets,
        *(build_sync_asset(spec, kind) for spec in project.mappings),
    ]
    return Definitions(
        assets=assets,
        schedules=build_schedules(project.mappings),
        sensors=[build_source_sensor(tables, project.mappings), build_alert_sensor(project.mappings)],
        resources={"warehouse": warehouse_from_settings(settings), "segment": segment_from_env()},
        # DuckDB has one writer per file: steps of a run execute one after another in one process
        # (no step start-up cost, no lock contention). Snowflake runs steps in parallel processes.
        executor=in_process_executor if kind == "duckdb" else multiprocess_executor,
    )


defs = build_definitions(Settings.from_env())
