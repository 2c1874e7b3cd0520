"""One broken model file: `dagster definitions validate` fails, a running deployment keeps the rest."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance, materialize

from segment_profiles_pipeline.errors import ConfigError
from segment_profiles_pipeline.settings import PROJECT_ROOT, VALIDATION_CLI, strict_from_env
from segment_profiles_pipeline_tests.conftest import write

BROKEN = {
    "broken.sql": "SELECT FROM WHERE",
    "broken.yml": """
        primary_key: user_id
        mappings:
          - {name: broken_identify, action: identify, user_id: user_id, schedule: {interval: 1h}}
    """,
}


def test_lenient_definitions_keep_every_good_mapping_and_show_the_error(sample_models, settings_for, build):
    write(sample_models, BROKEN)
    with pytest.raises(ConfigError, match=r"broken\.sql: the SQL does not parse"):
        build(settings_for(sample_models))  # strict by default
    defs = build(settings_for(sample_models), strict=False)
    graph = defs.resolve_asset_graph()
    keys = set(graph.get_all_asset_keys())
    assert {AssetKey("users"), AssetKey(["profile_sync", "users_identify"])} <= keys
    assert {s.name for s in defs.schedules} >= {
        "users_identify_schedule",
        "account_memberships_group_schedule",
    }
    assert "broken_identify_schedule" not in {s.name for s in defs.schedules}
    assert {s.name for s in defs.sensors} == {"source_change_sensor", "sync_alert_sensor"}

    for key in (AssetKey("broken"), AssetKey(["profile_sync", "broken_identify"])):
        stub = defs.get_assets_def(key)
        description = stub.descriptions_by_key[key]
        assert description.startswith("**Does not load** (") and "the SQL does not parse" in description
        assert "broken.sql" in stub.metadata_by_key[key]["load_error"].value
    result = materialize(
        [defs.get_assets_def(AssetKey("broken"))], instance=DagsterInstance.ephemeral(), raise_on_error=False
    )
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "does not load" in failure.step_failure_data.error.message
    assert "the SQL does not parse" in failure.step_failure_data.error.message


def test_a_broken_computed_traits_file_becomes_a_stub_too(sample_models, settings_for, build):
    (sample_models / "computed_traits.yml").write_text("traits: [unclosed\n")
    defs = build(settings_for(sample_models), strict=False)
    stub = defs.get_assets_def(AssetKey("computed_traits"))
    assert "**Does not load**" in stub.descriptions_by_key[AssetKey("computed_traits")]
    assert defs.get_assets_def(AssetKey(["profile_sync", "users_identify"])) is not None


def test_strict_only_under_the_validate_command(monkeypatch) -> None:
    monkeypatch.delenv(VALIDATION_CLI, raising=False)
    assert strict_from_env() is False
    monkeypatch.setenv(VALIDATION_CLI, "1")
    assert strict_from_env() is True


def test_validate_fails_while_the_module_loads_for_a_server(sample_models, tmp_path: Path) -> None:
    """The real commands: what `dagster definitions validate` and a webserver's code server do."""
    write(sample_models, BROKEN)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SEGMENT_", "DAGSTER_", "SNOWFLAKE_"))}
    env.update(SEGMENT_PROFILES_MODELS_DIR=str(sample_models), DUCKDB_DATABASE=str(tmp_path / "w.duckdb"))
    dagster = Path(sys.executable).with_name("dagster")
    validate = subprocess.run(
        [str(dagster), "definitions", "validate", "-m", "segment_profiles_pipeline.definitions"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert validate.returncode != 0
    assert "broken.sql: the SQL does not parse" in validate.stdout + validate.stderr
    served = subprocess.run(
        [
            sys.executable,
            "-c",
            "from segment_profiles_pipeline.definitions import defs; defs = defs(); "
            "print(sorted(k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()))",
        ],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert served.returncode == 0, served.stderr
    assert "'broken'" in served.stdout and "'profile_sync/users_identify'" in served.stdout


def test_descriptions_show_files_relative_to_the_project_root(settings_for, build) -> None:
    defs = build(settings_for(PROJECT_ROOT / "models"))
    users = defs.get_assets_def(AssetKey("users")).descriptions_by_key[AssetKey("users")]
    assert users.endswith("SQL: `models/users.sql`, config: `models/users.yml`.")
    key = AssetKey(["profile_sync", "users_identify"])
    assert (
        "(mapping `users_identify` in `models/users.yml`)"
        in defs.get_assets_def(key).descriptions_by_key[key]
    )


def test_a_second_model_of_the_same_name_gets_its_own_stub(sample_models, settings_for, build) -> None:
    write(
        sample_models,
        {"zz/users.sql": "SELECT user_id FROM app.users", "zz/users.yml": "primary_key: user_id\n"},
    )
    defs = build(settings_for(sample_models), strict=False)
    key = AssetKey("users__does_not_load")
    assert "two models are named 'users'" in defs.get_assets_def(key).descriptions_by_key[key]
    assert defs.get_assets_def(AssetKey("users")).descriptions_by_key[AssetKey("users")].startswith("Users")
