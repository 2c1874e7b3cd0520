"""The explorer's two front ends: the ``profile_explorer`` Dagster job and the CLI, on a real DuckDB file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from dagster import Definitions

from segment_profiles_pipeline import explore as cli
from segment_profiles_pipeline.identity.explorer import JOB_NAME, build_explorer_job
from segment_profiles_pipeline.settings import PROJECT_ROOT
from segment_profiles_pipeline.warehouse.duckdb import DuckDBWarehouse
from segment_profiles_pipeline_tests.identity.test_explorer import P1, P2, build_scenario


@pytest.fixture
def project(tmp_path: Path) -> tuple[Path, Path]:
    """A models folder whose identity.yml names the event table, and a DuckDB file with the scenario."""
    models = tmp_path / "models"
    models.mkdir()
    (models / "identity.yml").write_text("sources:\n  events: [flex.test_event]\n")
    db = tmp_path / "w.duckdb"
    with DuckDBWarehouse(database=str(db)).session() as session:
        build_scenario(session)
    return models, db


def run_job(models: Path, db: Path, lookup: str):
    defs = Definitions(
        jobs=[build_explorer_job(models)], resources={"warehouse": DuckDBWarehouse(database=str(db))}
    )
    return defs.get_job_def(JOB_NAME).execute_in_process(
        run_config={"ops": {"explore_profile": {"config": {"lookup": lookup}}}}, raise_on_error=False
    )


def test_job_shows_the_profile_as_metadata(project: tuple[Path, Path]) -> None:
    result = run_job(*project, "email:ana@example.com")
    assert result.success
    [output] = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
    metadata = output.event_specific_data.metadata
    assert metadata["segment_id"].value == P1
    assert metadata["traits_available"].value is True
    assert [(r.data["type"], r.data["value"]) for r in metadata["identifiers"].records] == [
        ("anonymous_id", "a1"),
        ("anonymous_id", "a2"),
        ("user_id", "u1"),
        ("email", "ana@example.com"),
    ]
    assert [(r.data["trait"], r.data["value"], r.data["dry_run"]) for r in metadata["traits"].records] == [
        ("email", '"ana@example.com"', "False"),
        ("plan", '"pro"', "False"),
        ("total_inbounds", "3", "True"),
    ]
    assert [(r.data["segment_id"], r.data["merged_into"]) for r in metadata["merges"].records] == [(P2, P1)]
    assert [r.data["message_id"] for r in metadata["events"].records][1:] == ["m4", "m3", "m2", "m1"]
    assert metadata["profile"].value.startswith(f"```\nProfile {P1} (looked up by email:ana@example.com)")


def test_job_fails_with_the_reason_and_no_retry(project: tuple[Path, Path]) -> None:
    result = run_job(*project, "mail:ana@example.com")
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    error = failure.event_specific_data.error
    assert "unknown identifier type 'mail'" in error.message
    assert "Did you mean 'email'?" in error.message


def test_cli_text_json_and_errors(
    project: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    models, db = project
    monkeypatch.setenv("DUCKDB_DATABASE", str(db))
    monkeypatch.setenv("SEGMENT_PROFILES_MODELS_DIR", str(models))
    assert cli.main(["email:ana@example.com"]) == 0
    text = capsys.readouterr().out
    assert text.startswith(
        f"Profile {P1} (looked up by email:ana@example.com)\n  also known as (merged into it): {P2}"
    )
    assert '\nTraits (3)\n  email           "ana@example.com"  from users_identify' in text
    assert f"\nMerges (1)\n  {P2} merged into {P1}  at 2026-01-01 00:04:01  message m4" in text

    assert cli.main(["user_id:u1", "--json", "--events", "1"]) == 0
    data = orjson.loads(capsys.readouterr().out)
    assert data["segment_id"] == P1
    assert [e["source"] for e in data["events"]] == ["identify (users_identify)"]
    assert data["traits"][1] == {
        "trait": "plan",
        "value": "pro",
        "source": "users_identify",
        "updated_at": "2026-01-01T00:10:01+00:00",
        "dry_run": False,
    }

    assert cli.main(["email:nobody@example.com"]) == 2
    assert capsys.readouterr().err.startswith(
        "error (no_such_profile): no profile has email:nobody@example.com."
    )


def test_cli_names_a_missing_warehouse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("DUCKDB_DATABASE", str(tmp_path / "none.duckdb"))
    monkeypatch.setenv("SEGMENT_PROFILES_MODELS_DIR", str(tmp_path))
    assert cli.main(["user_id:u1"]) == 1
    assert "none.duckdb does not exist yet; materialize the sources first" in capsys.readouterr().err


def test_python_dash_m_entry_point(project: tuple[Path, Path]) -> None:
    models, db = project
    env = {"DUCKDB_DATABASE": str(db), "SEGMENT_PROFILES_MODELS_DIR": str(models), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-m", "segment_profiles_pipeline.explore", "anonymous_id:a2", "--json"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert orjson.loads(done.stdout)["segment_id"] == P1
