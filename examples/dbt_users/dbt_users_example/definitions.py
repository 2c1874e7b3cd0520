"""The dbt example: a dbt project (dbt-duckdb) whose model ``dim_users`` feeds an identify mapping.

One code location holds both halves, as a user's would: the dbt project loaded with dagster-dbt
(``@dbt_assets``: seed ``raw_users``, model ``dim_users`` and its tests as asset checks) and this
pipeline built from ``segment/`` (whose ``upstream.yml`` maps ``main.dim_users``). The sync
asset depends on the key dagster-dbt gives the model, so lineage runs raw_users → dim_users →
profile_sync/dbt_users_identify, ``dg launch --assets '*'`` from this folder runs all of it in
one run, and the mapping's ``on_upstream_change`` condition syncs after every dbt build.

dbt writes the project's DuckDB file from a subprocess, so the dbt step holds the project's
writer lock (``<db>.lock``) for the whole command, like every other writer: sensors skip their
tick and other runs wait instead of failing on DuckDB's own lock.
"""

import dataclasses
import fcntl
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dagster import AssetExecutionContext, AssetsDefinition, Definitions, ResourceParam
from dagster_dbt import DbtCliResource, DbtProject, dbt_assets

from segment_profiles_pipeline.definitions import build_definitions
from segment_profiles_pipeline.errors import ConfigError
from segment_profiles_pipeline.settings import Settings, strict_from_env
from segment_profiles_pipeline.vocabulary import POOL
from segment_profiles_pipeline.warehouse.duckdb import DuckDBWarehouse

EXAMPLE = Path(__file__).resolve().parent.parent
SEGMENT_MODELS = EXAMPLE / "segment"
"""This example's models folder: only ``upstream.yml`` (the dbt model's mapping)."""
DUCKDB_ENV = "SEGMENT_PROFILES_DBT_DUCKDB"
"""Read by ``dbt/profiles.yml``: the DuckDB file dbt writes, set from the warehouse resource."""

# dagster-dbt runs `dbt` from PATH (its resource and its manifest preparer alike); `.venv/bin/dg`
# runs without the venv activated, so put this interpreter's scripts folder (where dbt-core's is) first.
os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
DBT_PROJECT = DbtProject(project_dir=EXAMPLE / "dbt", profiles_dir=EXAMPLE / "dbt")

# Processes loading the code at once (`dg dev`'s webserver and daemon, test workers) parse one
# after another: two `dbt parse` writing one target folder could leave a torn manifest.
DBT_PROJECT.manifest_path.parent.mkdir(parents=True, exist_ok=True)
with (DBT_PROJECT.manifest_path.parent / ".prepare.lock").open("w") as _lock:
    fcntl.flock(_lock, fcntl.LOCK_EX)
    DBT_PROJECT.prepare_if_dev()  # `dg dev`: re-parse on every load, so edits to the dbt project show
    if not DBT_PROJECT.manifest_path.exists():  # a fresh clone: parse once (`dbt parse`, no warehouse)
        DBT_PROJECT.preparer.prepare(DBT_PROJECT)


def build_dbt_assets() -> AssetsDefinition:
    """The dbt project's assets: ``dbt build`` under the project's DuckDB writer lock."""

    @dbt_assets(manifest=DBT_PROJECT.manifest_path, project=DBT_PROJECT, pool=POOL)
    def dbt_users(
        context: AssetExecutionContext, dbt: DbtCliResource, warehouse: ResourceParam[DuckDBWarehouse]
    ) -> Iterator[Any]:
        database = Path(warehouse.database).resolve()
        os.environ[DUCKDB_ENV] = str(database)  # the dbt subprocess inherits it
        with warehouse.writer_lock():  # queue behind the syncs: DuckDB has one writer per file
            yield from dbt.cli(["build"], context=context).stream()

    return dbt_users


def build_example_definitions(settings: Settings, *, strict: bool = True) -> Definitions:
    """The pipeline over ``segment/`` merged with the dbt project's assets, on the DuckDB of ``settings``."""
    if settings.warehouse != "duckdb":
        raise ConfigError(
            f"the dbt example runs on DuckDB (dbt-duckdb), not {settings.warehouse}.",
            field="WAREHOUSE",
            fix="unset WAREHOUSE (or set it to duckdb) to run the example.",
        )
    pipeline = build_definitions(
        dataclasses.replace(settings, models_dir=SEGMENT_MODELS, sample_data=False), strict=strict
    )
    dbt = Definitions(assets=[build_dbt_assets()], resources={"dbt": DbtCliResource(project_dir=DBT_PROJECT)})
    return Definitions.merge(pipeline, dbt)


defs = build_example_definitions(Settings.from_env(), strict=strict_from_env())
