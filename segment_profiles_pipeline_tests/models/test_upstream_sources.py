"""``upstream.yml``: mappings of tables other assets produce, their lineage, load errors and run-time column checks."""

from pathlib import Path

import fakesnow
import pytest
from dagster import AssetKey, DagsterInstance, Definitions, ResourceParam, asset

from segment_profiles_pipeline.errors import ConfigError
from segment_profiles_pipeline.project import load_project
from segment_profiles_pipeline.settings import Settings
from segment_profiles_pipeline.warehouse.base import Warehouse
from segment_profiles_pipeline_tests.conftest import materialize_all, write
from segment_profiles_pipeline_tests.models.test_snowflake import CREDENTIALS

SYNC = AssetKey(["profile_sync", "crm_identify"])
UPSTREAM = AssetKey(["crm", "contacts"])

UPSTREAM_YML = """
    tables:
      - table: crm.contacts
        asset_key: crm/contacts
        primary_key: contact_id
        mappings:
          - name: crm_identify
            action: identify
            user_id: contact_id
            traits: {email: email}
"""


def contacts_asset(select: str):
    """Another pipeline's asset that builds ``crm.contacts`` (what a dbt model or an ingestion job is)."""

    @asset(key=UPSTREAM)
    def contacts(warehouse: ResourceParam[Warehouse]) -> None:
        with warehouse.session() as session:
            session.execute("CREATE SCHEMA IF NOT EXISTS crm")
            session.execute(f"CREATE OR REPLACE TABLE crm.contacts AS {select}")

    return contacts


def with_upstream(defs: Definitions, select: str) -> Definitions:
    return Definitions.merge(defs, Definitions(assets=[contacts_asset(select)]))


def test_the_sync_depends_on_the_declared_asset_key(models_dir, settings_for, build) -> None:
    write(models_dir, {"upstream.yml": UPSTREAM_YML})
    (spec,) = load_project(models_dir).mappings
    assert (spec.source.asset_key, spec.source.table, spec.source.primary_key) == (
        ("crm", "contacts"),
        "crm.contacts",
        "contact_id",
    )
    graph = build(settings_for(models_dir, sample_data=False)).resolve_asset_graph()
    assert graph.get(SYNC).parent_keys == {UPSTREAM}


def test_dbt_model_is_the_key_dagster_dbt_gives_a_model(models_dir) -> None:
    write(
        models_dir, {"upstream.yml": UPSTREAM_YML.replace("asset_key: crm/contacts", "dbt_model: contacts")}
    )
    (spec,) = load_project(models_dir).mappings
    assert spec.source.asset_key == ("contacts",)
    write(models_dir, {"upstream.yml": UPSTREAM_YML.replace("crm/contacts", "[dbt, contacts]")})
    assert load_project(models_dir).mappings[0].source.asset_key == ("dbt", "contacts")


def test_upstream_table_syncs_after_the_asset_that_builds_it(models_dir, settings_for, build) -> None:
    write(models_dir, {"upstream.yml": UPSTREAM_YML})
    select = "SELECT * FROM (VALUES ('c1', 'a@x.io'), ('c2', 'b@x.io')) AS t(contact_id, email)"
    defs = with_upstream(build(settings_for(models_dir, sample_data=False)), select)
    result = materialize_all(defs)
    assert result.success
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key == SYNC]
    metadata = event.materialization.metadata
    assert metadata["segment_profiles/planned"].value == 2
    assert sorted(
        (p["userId"], p["traits"]["email"]) for p in metadata["segment_profiles/sample_payloads"].value
    ) == [
        ("c1", "a@x.io"),
        ("c2", "b@x.io"),
    ]


@pytest.mark.parametrize(
    ("select", "message"),
    [
        (
            "SELECT 'c1' AS contact_id, 'a@x.io' AS mail",
            "upstream.yml (mapping 'crm_identify', field 'traits.email'): column 'email' is not in "
            "crm.contacts, which has: contact_id, mail.",
        ),
        (
            "SELECT 'c1' AS id, 'a@x.io' AS email",
            "upstream.yml (field 'primary_key'): column 'contact_id' is not in crm.contacts.",
        ),
    ],
)
def test_columns_are_checked_when_the_sync_runs(models_dir, settings_for, build, select, message) -> None:
    write(models_dir, {"upstream.yml": UPSTREAM_YML})
    result = materialize_all(with_upstream(build(settings_for(models_dir, sample_data=False)), select))
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    assert failure.step_key == "profile_sync__crm_identify"
    assert message in failure.step_failure_data.error.to_string()


def test_a_missing_table_names_the_asset_to_materialize(models_dir, settings_for, build) -> None:
    write(models_dir, {"upstream.yml": UPSTREAM_YML})
    defs = build(settings_for(models_dir, sample_data=False))
    result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
        instance=DagsterInstance.ephemeral(), asset_selection=[SYNC], raise_on_error=False
    )
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    assert "crm.contacts does not exist; materialize the 'crm/contacts' asset first." in (
        failure.step_failure_data.error.to_string()
    )


def entry(**fields: str) -> str:
    lines = "".join(f"\n    {k}: {v}" for k, v in fields.items())
    return (
        "tables:\n  - primary_key: contact_id" + lines + "\n    mappings:\n"
        "      - {name: crm_identify, action: identify, user_id: contact_id}\n"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            entry(table="crm.contacts"),
            "field 'tables[0]': set exactly one of `dbt_model` (the dbt model's name) or `asset_key`",
        ),
        (
            entry(table="crm.contacts", dbt_model="contacts", asset_key="crm/contacts"),
            "field 'tables[0]': set exactly one of `dbt_model`",
        ),
        (
            entry(table="contacts", dbt_model="contacts"),
            "field 'tables[0].table': 'contacts' is not a table name `schema.table`",
        ),
        (
            entry(table="crm.contacts", asset_key="crm/con tacts"),
            "field 'tables[0].asset_key[1]': 'con tacts' is not an asset key part",
        ),
        (
            entry(table="crm.contacts", dbt_model="contacts", schema="crm"),
            "field 'tables[0].schema': unknown key",
        ),
        (
            entry(table="models.users", dbt_model="users"),
            "upstream.yml (field 'tables[0].table'): 'models.users' is a table of this project's models. "
            "Fix: put the mapping in models/users.yml instead.",
        ),
        (
            "tables:\n  - {table: crm.contacts, dbt_model: contacts, primary_key: contact_id, mappings: []}\n",
            "field 'tables[0].mappings': needs at least 1 item(s), got 0",
        ),
        (
            entry(table="crm.contacts", dbt_model="contacts")
            + "  - table: CRM.contacts\n    dbt_model: other\n    primary_key: contact_id\n    mappings:\n"
            "      - {name: crm_other, action: identify, user_id: contact_id}\n",
            "field 'tables': table 'CRM.contacts' is listed twice; put all its mappings under one entry",
        ),
    ],
)
def test_invalid_upstream_files_name_file_and_field(models_dir, text, message) -> None:
    (models_dir / "upstream.yml").write_text(text)
    with pytest.raises(ConfigError) as info:
        load_project(models_dir)
    assert str(models_dir / "upstream.yml") in str(info.value)
    assert message in str(info.value)


def test_a_mapping_name_taken_by_a_model_is_a_load_error(models_dir) -> None:
    write(
        models_dir,
        {
            "people.sql": "SELECT 'c1' AS contact_id",
            "people.yml": "primary_key: contact_id\nmappings:\n  - {name: crm_identify, action: identify, user_id: contact_id}\n",
            "upstream.yml": UPSTREAM_YML,
        },
    )
    with pytest.raises(
        ConfigError, match=r"mapping name 'crm_identify' is used both in .*people\.yml and in .*upstream\.yml"
    ):
        load_project(models_dir)


def test_a_broken_upstream_file_becomes_stubs_when_lenient(models_dir, settings_for, build) -> None:
    write(
        models_dir, {"upstream.yml": UPSTREAM_YML.replace("asset_key: crm/contacts", "asset_key: [crm, x y]")}
    )
    defs = build(settings_for(models_dir, sample_data=False), strict=False)
    graph = defs.resolve_asset_graph()
    stub = graph.get(AssetKey("upstream")).to_asset_spec()
    assert stub.description is not None and stub.description.startswith("**Does not load**")
    assert graph.has(SYNC)  # the mapping the broken file still names keeps its asset key, as a stub
    assert graph.get(SYNC).parent_keys == set()


def test_the_file_is_not_a_model_companion(models_dir) -> None:
    write(models_dir, {"upstream.yml": UPSTREAM_YML})
    assert load_project(models_dir).models == {}  # no "this YAML file has no SQL model next to it"


def test_upstream_file_path_constant_matches_the_readme() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    assert "models/upstream.yml" in readme


def test_upstream_mappings_sit_beside_the_shipped_models_and_traits(
    sample_models, settings_for, build
) -> None:
    write(sample_models, {"upstream.yml": UPSTREAM_YML})
    graph = build(settings_for(sample_models)).resolve_asset_graph()
    assert graph.get(SYNC).parent_keys == {UPSTREAM}
    assert graph.has(AssetKey(["profile_sync", "computed_traits_identify"]))


def test_upstream_table_syncs_on_snowflake(monkeypatch, models_dir, db_path, build) -> None:
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    write(models_dir, {"upstream.yml": UPSTREAM_YML})
    settings = Settings(
        warehouse="snowflake",
        duckdb_database=db_path,
        sample_data=False,
        sample_users=1,
        models_dir=models_dir,
    )
    select = "SELECT * FROM (VALUES ('c1', 'a@x.io'), ('c2', 'b@x.io')) AS t(contact_id, email)"
    with fakesnow.patch():
        result = materialize_all(with_upstream(build(settings), select))
    assert result.success
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key == SYNC]
    assert event.materialization.metadata["segment_profiles/planned"].value == 2
