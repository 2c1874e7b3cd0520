"""The ``SegmentProfiles`` Component: scaffolded, validated and run by the real ``dg`` in a ``dg``
project of a user's own (hand-made, no network), and, in process, the same definitions as the
standalone project with its settings taken from YAML.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
import yaml
from dagster import AssetKey, EnvVar
from dagster._core.remote_representation.external_data import RepositorySnap
from dagster.components.testing import create_defs_folder_sandbox

from segment_profiles_pipeline.component import SegmentProfiles
from segment_profiles_pipeline.definitions import build_definitions
from segment_profiles_pipeline.errors import ConfigError
from segment_profiles_pipeline.settings import PROJECT_ROOT, Settings
from segment_profiles_pipeline_tests.test_dg import dg

HOST_DEFINITIONS = """
from pathlib import Path

import dagster as dg


@dg.definitions
def defs() -> dg.Definitions:
    return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
"""


@pytest.fixture
def host(tmp_path: Path) -> Path:
    """A user's `dg` project, as `dg scaffold project` lays it out (src layout, defs/ folder)."""
    root = tmp_path / "host"
    package = root / "src" / "host"
    (package / "defs").mkdir(parents=True)
    (root / "pyproject.toml").write_text(
        '[project]\nname = "host"\nversion = "0.0.1"\n\n[tool.dg]\ndirectory_type = "project"\n\n'
        '[tool.dg.project]\nroot_module = "host"\n\n[tool.dg.cli]\n'
        'suppress_warnings = ["project_and_activated_venv_mismatch"]\n'
    )
    (package / "__init__.py").write_text("")
    (package / "definitions.py").write_text(textwrap.dedent(HOST_DEFINITIONS).lstrip())
    return root


def host_dg(host: Path, *args: str, timeout: float = 180) -> str:
    result = dg(list(args), host.parent, timeout=timeout, cwd=host, PYTHONPATH=str(host / "src"))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def test_scaffolded_into_a_users_dg_project_it_validates_lists_and_runs(host: Path) -> None:
    host_dg(host, "scaffold", "defs", "segment_profiles_pipeline.SegmentProfiles", "segment")
    component = host / "src" / "host" / "defs" / "segment"
    config = yaml.safe_load((component / "defs.yaml").read_text())
    assert config == {
        "type": "segment_profiles_pipeline.SegmentProfiles",
        "attributes": {"models": "models", "warehouse": "duckdb", "sample_data": True},
    }
    assert {p.name for p in (component / "models").iterdir()} == {"users.sql", "users.yml"}
    config["attributes"]["sample_users"] = 30
    (component / "defs.yaml").write_text(yaml.safe_dump(config))

    assert "All component YAML validated successfully" in host_dg(host, "check", "yaml")
    listed = json.loads(host_dg(host, "list", "defs", "--json"))
    assets = {a["asset_key"]: a for a in listed["assets"]}
    assert assets["profile_sync/users_identify"]["dependency_keys"] == ["users"]
    assert assets["users"]["dependency_keys"] == ["app/users"]
    assert "users_identify_schedule" in {s["name"] for s in listed["schedules"]}
    assert {"source_change_sensor", "sync_alert_sensor"} <= {s["name"] for s in listed["sensors"]}

    host_dg(host, "launch", "--assets", "*", timeout=400)
    con = duckdb.connect(str(host / "data" / "warehouse.duckdb"), read_only=True)  # under the project root
    try:
        synced = con.sql("SELECT mapping, dry_run, planned FROM _segment_profiles.sync_history").fetchall()
    finally:
        con.close()
    assert synced == [("users_identify", True, 30)]


def test_dg_check_yaml_names_a_misspelt_attribute(host: Path) -> None:
    component = host / "src" / "host" / "defs" / "segment"
    component.mkdir()
    (component / "defs.yaml").write_text(
        "type: segment_profiles_pipeline.SegmentProfiles\nattributes:\n  modles: models\n"
    )
    result = dg(["check", "yaml"], host.parent, cwd=host, PYTHONPATH=str(host / "src"))
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "defs/segment/defs.yaml" in output and "modles" in output


@pytest.fixture
def sandbox() -> Iterator:
    with create_defs_folder_sandbox() as box:
        yield box


def _component(sandbox, attributes: dict) -> Path:
    return sandbox.scaffold_component(
        component_cls=SegmentProfiles,
        defs_yaml_contents={"type": "segment_profiles_pipeline.SegmentProfiles", "attributes": attributes},
    )


def _load_error(sandbox, path: Path) -> str:
    """The ConfigError under Dagster's component-tree error (what `dg check defs` prints last)."""
    with pytest.raises(Exception) as raised, sandbox.load_component_and_build_defs(defs_path=path):
        pass
    error: BaseException | None = raised.value
    while error is not None and not isinstance(error, ConfigError):
        error = error.__cause__ or error.__context__
    assert error is not None, raised.value
    return str(error)


def test_it_builds_what_the_standalone_project_builds(sandbox, tmp_path: Path) -> None:
    database = tmp_path / "w.duckdb"
    path = _component(
        sandbox, {"models": str(PROJECT_ROOT / "models"), "duckdb": {"database": str(database)}}
    )
    with sandbox.load_component_and_build_defs(defs_path=path) as (component, defs):
        assert isinstance(component, SegmentProfiles)
        standalone = build_definitions(
            Settings(
                warehouse="duckdb",
                duckdb_database=database,
                sample_data=True,
                sample_users=5000,
                models_dir=PROJECT_ROOT / "models",
            )
        )
        ours, theirs = defs.resolve_asset_graph(), standalone.resolve_asset_graph()
        assert ours.get_all_asset_keys() == theirs.get_all_asset_keys()
        assert AssetKey(["profile_sync", "users_identify"]) in ours.get_all_asset_keys()
        assert {s.name for s in defs.schedules} == {s.name for s in standalone.schedules}
        assert {s.name for s in defs.sensors} == {s.name for s in standalone.sensors}
        assert {j.name for j in defs.jobs} == {j.name for j in standalone.jobs}
        assert defs.resources["warehouse"].database == str(database)


def test_yaml_settings_reach_the_resources_and_secrets_stay_env_vars(
    sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ACME_SEGMENT_KEY", "wk-not-for-logs")
    models = sandbox.defs_folder_path / "segment" / "models"
    shutil.copytree(PROJECT_ROOT / "models", models)
    path = _component(
        sandbox,
        {
            "models": "models",  # relative to the component's folder
            "duckdb": {"database": "warehouse/acme.duckdb", "connection_config": {"threads": 1}},
            "destination": {"region": "europe", "write_key_env": "ACME_SEGMENT_KEY"},
            "sample_data": False,
        },
    )
    with sandbox.load_component_and_build_defs(defs_path=path) as (_, defs):
        warehouse, segment = defs.resources["warehouse"], defs.resources["segment"]
        assert warehouse.database == str(sandbox.project_root / "warehouse" / "acme.duckdb")
        assert warehouse.connection_config == {"threads": 1}
        assert segment.write_key == EnvVar("ACME_SEGMENT_KEY")
        assert segment.endpoint_url == "https://events.eu1.segmentapis.com"
        assert AssetKey("sample_data") not in defs.resolve_asset_graph().get_all_asset_keys()
        shown = repr(
            [r.configured_values for r in RepositorySnap.from_def(defs.get_repository_def()).resources]
        )
        assert "ACME_SEGMENT_KEY" in shown and "wk-not-for-logs" not in shown


def test_production_without_the_named_write_key_fails_the_load_naming_the_yaml(
    sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ACME_SEGMENT_KEY", raising=False)
    path = _component(
        sandbox,
        {
            "models": str(PROJECT_ROOT / "models"),
            "production": True,
            "destination": {"write_key_env": "ACME_SEGMENT_KEY"},
        },
    )
    message = _load_error(sandbox, path)
    assert message.startswith(
        f"{path / 'defs.yaml'} (field 'destination.write_key_env'): production: true, but "
    )
    assert "the environment variable ACME_SEGMENT_KEY is not set" in message
    assert "Fix: export ACME_SEGMENT_KEY" in message


def test_snowflake_names_the_missing_variables_and_the_yaml(sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("SNOWFLAKE_", "ACME_SF_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("ACME_SF_ACCOUNT", "acme")
    path = _component(
        sandbox,
        {
            "models": str(PROJECT_ROOT / "models"),
            "warehouse": "snowflake",
            "snowflake_env": {"account": "ACME_SF_ACCOUNT", "password": "ACME_SF_PASSWORD"},
        },
    )
    assert _load_error(sandbox, path).startswith(
        f"environment: {path / 'defs.yaml'} sets warehouse: snowflake but these environment variables are not set: "
        "SNOWFLAKE_USER, SNOWFLAKE_DATABASE, SNOWFLAKE_WAREHOUSE, ACME_SF_PASSWORD or SNOWFLAKE_PRIVATE_KEY."
    )


def test_snowflake_env_is_the_warehouse_modules_model_and_refuses_a_misspelt_name() -> None:
    """One definition of the seven variable names: the component's YAML schema is ``SnowflakeEnv``."""
    from pydantic import ValidationError

    from segment_profiles_pipeline.warehouse.snowflake import SnowflakeEnv

    assert SegmentProfiles.model_fields["snowflake_env"].annotation is SnowflakeEnv
    assert SegmentProfiles.model_validate({}).snowflake_env == SnowflakeEnv()
    assert SnowflakeEnv().account == "SNOWFLAKE_ACCOUNT"
    with pytest.raises(ValidationError, match=r"snowflake_env\.acount\n  Extra inputs are not permitted"):
        SegmentProfiles.model_validate({"snowflake_env": {"acount": "ACME_SF_ACCOUNT"}})


def test_a_translator_named_in_yaml_shapes_the_assets(sandbox) -> None:
    path = _component(
        sandbox,
        {
            "models": str(PROJECT_ROOT / "models"),
            "translator": "segment_profiles_pipeline_tests.test_translator.CrmTranslator",
        },
    )
    with sandbox.load_component_and_build_defs(defs_path=path) as (_, defs):
        sync = defs.resolve_asset_graph().get(AssetKey(["profile_sync", "users_identify"]))
        assert sync.owners == ["team:crm"] and sync.freshness_policy is None


def test_a_translator_named_in_yaml_sets_the_keys(sandbox) -> None:
    path = _component(
        sandbox,
        {
            "models": str(PROJECT_ROOT / "models"),
            "translator": "segment_profiles_pipeline_tests.test_translator.PrefixTranslator",
            "translation": [{"group": "profile_sync", "owners": ["team:crm"]}],  # rules keep the class's keys
        },
    )
    with sandbox.load_component_and_build_defs(defs_path=path) as (_, defs):
        graph = defs.resolve_asset_graph()
        sync = graph.get(AssetKey(["segment", "profile_sync", "users_identify"]))
        assert sync.parent_keys == {AssetKey(["segment", "users"])} and sync.owners == ["team:crm"]
        assert all(key.path[0] == "segment" for key in graph.get_all_asset_keys())


@pytest.mark.parametrize(
    ("translator", "error"),
    [
        ("segment_profiles_pipeline_tests.test_translator.NoSuchTranslator", "cannot import"),
        ("no_such_package.Translator", "cannot import 'no_such_package.Translator': No module named"),
        (
            "segment_profiles_pipeline_tests.test_translator.SYNC",
            "is not a subclass of SegmentProfilesTranslator",
        ),
    ],
)
def test_a_translator_that_does_not_load_names_the_field(sandbox, translator: str, error: str) -> None:
    path = _component(sandbox, {"models": str(PROJECT_ROOT / "models"), "translator": translator})
    message = _load_error(sandbox, path)
    assert message.startswith(f"{path / 'defs.yaml'} (field 'translator'): ")
    assert error in message


def test_the_readme_example_is_a_valid_component_with_every_attribute() -> None:
    readme = (PROJECT_ROOT / "README.md").read_text()
    example = readme.split("```yaml\n# defs/segment_profiles/defs.yaml\n", 1)[1].split("```", 1)[0]
    config = yaml.safe_load(example)
    assert config["type"] == "segment_profiles_pipeline.SegmentProfiles"
    SegmentProfiles.model_validate(config["attributes"])
    assert set(config["attributes"]) == set(SegmentProfiles.model_fields)


def test_importing_the_component_loads_nothing_of_the_shipped_project() -> None:
    """A user's project imports the component (and so definitions.py) with its own environment."""
    script = (
        "import segment_profiles_pipeline.definitions as d, segment_profiles_pipeline as p; "
        "print(p.SegmentProfiles.__name__); d.defs()"
    )
    env = {**os.environ, "WAREHOUSE": "oracle"}  # the shipped project cannot load with this
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.stdout.strip() == "SegmentProfiles"  # the import worked; only calling defs() loads
    assert "unknown warehouse 'oracle'" in result.stderr


def test_translation_rules_in_yaml_set_owners_tags_and_groups(sandbox) -> None:
    path = _component(
        sandbox,
        {
            "models": str(PROJECT_ROOT / "models"),
            "translation": [
                {"group": "profile_sync", "owners": ["team:crm"], "tags": {"tier": "gold"}},
                {"group": "models", "group_name": "crm_models"},
                {"group": "*", "tags": {"source": "segment_profiles"}},
            ],
        },
    )
    with sandbox.load_component_and_build_defs(defs_path=path) as (_, defs):
        graph = defs.resolve_asset_graph()
        sync, users = graph.get(AssetKey(["profile_sync", "users_identify"])), graph.get(AssetKey("users"))
        assert sync.owners == ["team:crm"] and sync.tags["tier"] == "gold"
        assert sync.freshness_policy is not None  # the default translator still ran first
        assert users.group_name == "crm_models" and users.owners == [] and "tier" not in users.tags
        assert sync.tags["source"] == users.tags["source"] == "segment_profiles"
        assert sync.group_name == "profile_sync"
