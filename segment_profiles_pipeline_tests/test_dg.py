"""The `dg` CLI works from the repository as the README says: `[tool.dg]` in pyproject.toml.

Each test runs the real `dg` command of the project's venv in a subprocess (what a user types),
with a clean environment and a throwaway DAGSTER_HOME and DuckDB file.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import duckdb

from segment_profiles_pipeline.settings import PROJECT_ROOT
from segment_profiles_pipeline_tests.conftest import write

DG = Path(sys.executable).with_name("dg")


def dg(
    args: list[str], tmp_path: Path, timeout: float = 120, cwd: Path = PROJECT_ROOT, **extra: str
) -> subprocess.CompletedProcess:
    home = tmp_path / "dagster_home"
    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SEGMENT_", "DAGSTER_", "SNOWFLAKE_"))}
    for name in ("WAREHOUSE", "SAMPLE_DATA", "ALERT_WEBHOOK_URL", "VIRTUAL_ENV"):
        env.pop(name, None)
    env.update(DAGSTER_HOME=str(home), DUCKDB_DATABASE=str(tmp_path / "warehouse.duckdb"), **extra)
    return subprocess.run([str(DG), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_pyproject_declares_a_dg_project() -> None:
    config = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
    assert config["tool"]["dg"]["directory_type"] == "project"
    project = config["tool"]["dg"]["project"]
    assert project["root_module"] == "segment_profiles_pipeline"
    assert project["code_location_target_module"] == "segment_profiles_pipeline.definitions"


def test_dg_check_defs_passes_on_the_shipped_project(tmp_path: Path) -> None:
    result = dg(["check", "defs"], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "All definitions loaded successfully" in result.stdout + result.stderr


def test_dg_check_defs_is_strict_and_names_the_broken_file(sample_models: Path, tmp_path: Path) -> None:
    """`dg check defs` sets DAGSTER_IS_DEFS_VALIDATION_CLI=1 like `dagster definitions validate`."""
    write(sample_models, {"broken.sql": "SELECT FROM WHERE", "broken.yml": "primary_key: user_id\n"})
    result = dg(["check", "defs"], tmp_path, SEGMENT_PROFILES_MODELS_DIR=str(sample_models))
    assert result.returncode != 0
    assert "broken.sql: the SQL does not parse" in result.stdout + result.stderr


def test_dg_list_defs_shows_models_syncs_schedules_and_sensors(tmp_path: Path) -> None:
    result = dg(["list", "defs", "--json"], tmp_path)
    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)
    assets = {a["asset_key"]: a for a in listed["assets"]}
    assert assets["profile_sync/users_identify"]["dependency_keys"] == ["users"]
    assert assets["users"]["group_name"] == "models"
    assert {"users_identify_schedule", "account_memberships_group_schedule"} <= {
        s["name"] for s in listed["schedules"]
    }
    assert {"source_change_sensor", "sync_alert_sensor"} <= {s["name"] for s in listed["sensors"]}


def test_dg_launch_materializes_everything_like_make_run(tmp_path: Path) -> None:
    result = dg(["launch", "--assets", "*"], tmp_path, SAMPLE_USERS="50")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True)
    try:
        synced = con.sql(
            "SELECT mapping, dry_run, planned > 0 FROM _segment_profiles.sync_history ORDER BY mapping"
        ).fetchall()
    finally:
        con.close()
    assert ("users_identify", True, True) in synced
    assert {m for m, _, _ in synced} >= {
        "users_identify",
        "account_memberships_group",
        "computed_traits_identify",
    }


def test_make_run_and_dev_use_dg() -> None:
    dry = subprocess.run(
        ["make", "-n", "run", "dev"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=30
    )
    assert dry.returncode == 0, dry.stderr
    assert ".venv/bin/dg launch --assets '*'" in dry.stdout
    assert ".venv/bin/dg dev" in dry.stdout


def test_shipped_instance_config_limits_the_warehouse_pool_to_one_run(tmp_path: Path) -> None:
    import shutil

    from dagster import DagsterInstance
    from dagster._core.instance.config import PoolGranularity

    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(PROJECT_ROOT / "instance" / "dagster.yaml", home / "dagster.yaml")
    with DagsterInstance.from_config(str(home)) as instance:
        pools = instance.get_concurrency_config().pool_config
        assert pools.default_pool_limit == 1
        assert pools.pool_granularity == PoolGranularity.RUN
    dry = subprocess.run(["make", "-n", "home"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=30)
    assert "cp instance/dagster.yaml" in dry.stdout


def test_uv_lock_matches_pyproject_and_the_py313_target_uses_it() -> None:
    """`uv sync` (the README's alternative to make) installs what pyproject declares, pinned."""
    uv = Path(sys.executable).with_name("uv")
    check = subprocess.run(
        [str(uv), "lock", "--check", "--offline"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.returncode == 0, check.stderr
    dry = subprocess.run(
        ["make", "-n", "test-py313"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=30
    )
    assert dry.returncode == 0, dry.stderr
    assert re.search(r"uv sync --frozen --extra dev --python \S*python3\.13\b", dry.stdout), dry.stdout
    assert ".venv-py313/bin/mypy" in dry.stdout and ".venv-py313/bin/pytest" in dry.stdout
    pinned = subprocess.run(
        ["make", "-n", "test-py313", "PY313=/opt/py/bin/python3.13"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert "--python /opt/py/bin/python3.13" in pinned.stdout
