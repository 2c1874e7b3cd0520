"""Shared fixtures: a temporary project (models folder + DuckDB file) and its Definitions."""

from __future__ import annotations

import shutil
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from dagster import DagsterInstance, Definitions

from segment_profiles_pipeline.definitions import build_definitions
from segment_profiles_pipeline.settings import PROJECT_ROOT, Settings
from segment_profiles_pipeline.warehouse.duckdb import DuckDBWarehouse

SAMPLE_MODELS = PROJECT_ROOT / "models"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never inherit a developer's warehouse, write key, Profile API token or webhook."""
    for name in (
        "WAREHOUSE",
        "DUCKDB_DATABASE",
        "SAMPLE_DATA",
        "SAMPLE_USERS",
        "SEGMENT_PROFILES_MODELS_DIR",
        "SEGMENT_WRITE_KEY",
        "SEGMENT_REGION",
        "SEGMENT_ENDPOINT",
        "ALERT_WEBHOOK_URL",
        "SEGMENT_SPACE_ID",
        "SEGMENT_PROFILE_API_TOKEN",
        "SEGMENT_PROFILE_API_ENDPOINT",
        "SEGMENT_READBACK_SAMPLE",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    """An empty models folder."""
    path = tmp_path / "models"
    path.mkdir()
    return path


@pytest.fixture
def sample_models(tmp_path: Path) -> Path:
    """A copy of the shipped models folder, safe to edit."""
    path = tmp_path / "models"
    shutil.copytree(SAMPLE_MODELS, path)
    return path


def write(folder: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(textwrap.dedent(text).lstrip())
    return folder


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "warehouse.duckdb"


@pytest.fixture
def warehouse(db_path: Path) -> DuckDBWarehouse:
    return DuckDBWarehouse(database=str(db_path))


@pytest.fixture
def settings_for(db_path: Path) -> Callable[..., Settings]:
    def make(models: Path, *, sample_users: int = 200, sample_data: bool = True) -> Settings:
        return Settings(
            warehouse="duckdb",
            duckdb_database=db_path,
            sample_data=sample_data,
            sample_users=sample_users,
            models_dir=models,
        )

    return make


def materialize_all(defs: Definitions, instance: DagsterInstance | None = None, **kwargs):
    """Run the implicit all-assets job in process, like ``dagster asset materialize --select '*'``."""
    job = defs.resolve_implicit_global_asset_job_def()
    return job.execute_in_process(
        instance=instance or DagsterInstance.ephemeral(), raise_on_error=False, **kwargs
    )


@pytest.fixture
def build() -> Callable[[Settings], Definitions]:
    return build_definitions
