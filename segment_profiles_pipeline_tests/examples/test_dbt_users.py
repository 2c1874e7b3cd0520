"""examples/dbt_users: real dbt (dbt-duckdb) builds a model, the sync sends it over HTTP, lineage and automation follow."""

import ast
import fcntl
import importlib
import os
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from dagster import AssetKey, DagsterInstance, evaluate_automation_conditions, materialize
from dagster_dbt import DbtCliResource

from segment_profiles_pipeline.settings import PROJECT_ROOT
from segment_profiles_pipeline.testing.segment_server import FakeSegmentServer
from segment_profiles_pipeline.warehouse.duckdb import DuckDBWarehouse
from segment_profiles_pipeline_tests.conftest import materialize_all
from segment_profiles_pipeline_tests.test_dependencies import _name

EXAMPLE = PROJECT_ROOT / "examples" / "dbt_users"
DIM_USERS = AssetKey("dim_users")
RAW_USERS = AssetKey("raw_users")
SYNC = AssetKey(["profile_sync", "dbt_users_identify"])
WRITE_KEY = "wk_dbt_example"


@pytest.fixture(scope="module")
def example() -> ModuleType:
    """The example's definitions module (importing it parses the dbt project when no manifest exists)."""
    return importlib.import_module("examples.dbt_users.dbt_users_example.definitions")


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSegmentServer]:
    with FakeSegmentServer(write_key=WRITE_KEY) as srv:
        monkeypatch.setenv("SEGMENT_WRITE_KEY", WRITE_KEY)
        monkeypatch.setenv("SEGMENT_ENDPOINT", srv.url)
        yield srv


def test_lineage_runs_from_the_dbt_seed_through_the_model_to_the_sync(
    example, settings_for, models_dir
) -> None:
    defs = example.build_example_definitions(settings_for(models_dir))
    graph = defs.resolve_asset_graph()
    assert graph.get(SYNC).parent_keys == {DIM_USERS}
    assert graph.get(DIM_USERS).parent_keys == {RAW_USERS}
    # both keys belong to the @dbt_assets multi-asset, not to stand-ins of an unknown upstream
    assert graph.get(DIM_USERS).is_materializable and "dbt" in graph.get(DIM_USERS).kinds
    assert defs.resolve_assets_def(DIM_USERS).op.name == "dbt_users"


def test_one_run_builds_the_dbt_model_and_sends_it_then_the_sync_follows_the_next_build(
    example, settings_for, models_dir, server
) -> None:
    defs = example.build_example_definitions(settings_for(models_dir))
    instance = DagsterInstance.ephemeral()
    result = materialize_all(defs, instance)
    assert result.success
    materialized = {e.asset_key for e in result.get_asset_materialization_events()}
    assert {RAW_USERS, DIM_USERS, SYNC} <= materialized
    # what dim_users.sql makes of seeds/raw_users.csv (lower-cased, trimmed email; joined name; u_ ids)
    assert sorted((m["type"], m["userId"], m["traits"]) for m in server.messages) == [
        ("identify", "u_1", {"email": "ada@example.com", "name": "Ada Lovelace", "plan": "pro"}),
        ("identify", "u_2", {"email": "grace@example.com", "name": "Grace Hopper", "plan": "free"}),
        ("identify", "u_3", {"email": "alan@example.com", "name": "Alan Turing", "plan": "pro"}),
    ]

    first = evaluate_automation_conditions(defs, instance)
    assert first.total_requested == 0  # the model and the sync ran together
    job = defs.resolve_implicit_global_asset_job_def()
    assert job.execute_in_process(instance=instance, asset_selection=[DIM_USERS]).success
    after_dbt = evaluate_automation_conditions(defs, instance, cursor=first.cursor)
    assert after_dbt.total_requested == 1 and after_dbt.get_requested_partitions(SYNC) == {None}


def test_dbt_waits_for_the_projects_writer_lock(example, db_path) -> None:
    """dbt writes the DuckDB file from a subprocess: it must queue behind a writer like any other step."""
    with (db_path.parent / (db_path.name + ".lock")).open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # another writer (a run in another process) holds the file
        result = materialize(
            [example.build_dbt_assets()],
            resources={
                "dbt": DbtCliResource(project_dir=example.DBT_PROJECT),
                "warehouse": DuckDBWarehouse(database=str(db_path), lock_timeout_s=0.2),
            },
            raise_on_error=False,
        )
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    assert "held the DuckDB file lock" in failure.step_failure_data.error.to_string()  # type: ignore[union-attr]
    assert not db_path.exists()  # dbt never opened the file


@pytest.mark.e2e
def test_dg_launch_from_the_example_folder_runs_dbt_and_the_sync(tmp_path, db_path) -> None:
    """The README's command, as a user runs it: `dg launch --assets '*'` in examples/dbt_users."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SEGMENT_", "DAGSTER_"))}
    env |= {"DAGSTER_HOME": str(tmp_path), "DUCKDB_DATABASE": str(db_path)}
    done = subprocess.run(
        [str(Path(sys.executable).parent / "dg"), "launch", "--assets", "*"],
        cwd=EXAMPLE,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-3000:]
    assert "DRY RUN of 'dbt_users_identify' shard 0 finished success: planned 3," in log
    assert 'Finished execution of step "dbt_users"' in log


def test_the_example_declares_every_package_it_imports() -> None:
    """The package's own test covers segment_profiles_pipeline/; the example's imports are the `dbt` extra's."""
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    declared = {_name(r) for r in [*project["dependencies"], *project["optional-dependencies"]["dbt"]]}
    assert {"dbt-core", "dbt-duckdb", "dagster-dbt"} <= declared
    tops: set[str] = set()
    for path in EXAMPLE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                tops.add(node.module.split(".")[0])
            elif isinstance(node, ast.Import):
                tops |= {a.name.split(".")[0] for a in node.names}
    distributions = {"dagster": "dagster", "dagster_dbt": "dagster-dbt"}
    third_party = tops - set(sys.stdlib_module_names) - {"segment_profiles_pipeline"}
    assert {distributions[t] for t in third_party} <= declared
