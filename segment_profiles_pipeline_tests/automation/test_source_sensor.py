"""The source-change sensor against a real DuckDB file (and the Snowflake fingerprint via fakesnow)."""

import json
import select
import subprocess
import sys
from pathlib import Path

import duckdb
import fakesnow
import snowflake.connector
from dagster import AssetKey, AssetsDefinition, DagsterInstance, Definitions, asset, build_sensor_context
from dagster._core.definitions.sensor_definition import SensorExecutionData

from segment_profiles_pipeline.automation.source_sensor import (
    build_source_sensor,
    changed_tables,
    fingerprints,
    load_cursor,
    timestamp_column,
)
from segment_profiles_pipeline.models.sample_data import seed_missing
from segment_profiles_pipeline.project import load_project
from segment_profiles_pipeline.warehouse.duckdb import DuckDBWarehouse
from segment_profiles_pipeline.warehouse.snowflake import SnowflakeSession
from segment_profiles_pipeline_tests.conftest import write

USERS = AssetKey("users")
MEMBERSHIPS = AssetKey("account_memberships")
SYNC_USERS = AssetKey(["profile_sync", "users_identify"])
SYNC_MEMBERSHIPS = AssetKey(["profile_sync", "account_memberships_group"])
IDENTITY = {AssetKey(["identity", t]) for t in ("id_graph", "external_id_mapping", "profile_merges")}
TRAITS = {
    AssetKey("computed_traits"),
    AssetKey("audiences"),
    AssetKey(["profile_sync", "computed_traits_identify"]),
    AssetKey(["profile_sync", "audiences_identify"]),
}
PROFILES_SYNC = {
    AssetKey(["profiles_sync", t])
    for t in (
        "id_graph_updates",
        "external_id_mapping_updates",
        "profile_traits_updates",
        "user_traits",
        "user_identifiers",
        "profile_merges",
        "id_graph",
        "external_id_mapping",
        "profile_traits",
    )
}
FROM_APP_USERS = {
    USERS,
    MEMBERSHIPS,
    SYNC_USERS,
    SYNC_MEMBERSHIPS,
    AssetKey("subscriptions"),
    AssetKey(["profile_sync", "subscriptions_identify"]),
    *IDENTITY,  # the identity graph reads the identify mappings' records
    *TRAITS,  # computed traits and audiences are keyed on the graph's profiles
    *PROFILES_SYNC,  # Segment's Profiles Sync tables follow the graph and the syncs
    # predictions are keyed on the graph's profiles too
    *(
        AssetKey(["predictions", p])
        for p in ("likelihood_to_churn", "likelihood_to_purchase", "predicted_ltv")
    ),
    AssetKey("prediction_traits"),
    AssetKey(["profile_sync", "predictions_identify"]),
}
"""Everything a change of app.users feeds in the shipped project."""


def definitions(models: Path, settings_for, build, *more: AssetsDefinition) -> Definitions:
    """The project's assets (and ``more``) and resources, with only the sensor under test."""
    settings = settings_for(models, sample_data=False)
    project = load_project(models)
    tables = [t for m in project.models.values() for t in m.upstream if t[0] != "models"]
    base = build(settings)
    sensor = build_source_sensor(tables, project.mappings)
    return Definitions(
        assets=[*(base.assets or []), *more],
        resources=base.resources,
        executor=base.executor,
        sensors=[sensor],
    )


def tick(defs: Definitions, warehouse: DuckDBWarehouse, cursor: str | None) -> SensorExecutionData:
    """One evaluation, through the same path the daemon uses (run requests validated against the target)."""
    sensor = defs.resolve_sensor_def("source_change_sensor")
    context = build_sensor_context(
        instance=DagsterInstance.ephemeral(),
        cursor=cursor,
        resources={"warehouse": warehouse},
        definitions=defs,
    )
    return sensor.evaluate_tick(context)


def seeded(warehouse: DuckDBWarehouse) -> DuckDBWarehouse:
    with warehouse.session() as session:
        seed_missing(session, users=100)
    return warehouse


def execute(db: Path, sql: str) -> None:
    """A short read-write connection, as another tool loading the warehouse would use."""
    con = duckdb.connect(str(db))
    try:
        con.execute(sql)
    finally:
        con.close()


def test_first_tick_records_then_runs_only_what_a_change_feeds(
    sample_models, settings_for, build, warehouse, db_path
):
    defs = definitions(sample_models, settings_for, build)
    seeded(warehouse)

    first = tick(defs, warehouse, None)
    assert first.run_requests == []
    assert "first tick" in (first.skip_message or "")
    recorded = load_cursor(first.cursor)
    assert recorded is not None and sorted(recorded) == ["app.accounts", "app.users"]
    assert recorded["app.users"].startswith("rows=100;max=")

    same = tick(defs, warehouse, first.cursor)
    assert same.run_requests == [] and same.skip_message == "no source table changed"
    assert same.cursor == first.cursor

    # a new account feeds only the memberships model and its sync (the users model does not read accounts)
    execute(
        db_path, "INSERT INTO app.accounts (account_id, name, updated_at) VALUES ('acc_new', 'New', now())"
    )
    accounts = tick(defs, warehouse, same.cursor)
    [request] = accounts.run_requests or []
    assert set(request.asset_selection or []) == {MEMBERSHIPS, SYNC_MEMBERSHIPS}
    assert request.tags["segment_profiles/changed_sources"] == "app.accounts"
    assert json.loads(accounts.cursor or "")["tables"]["app.accounts"].startswith("rows=11;")

    # an update that keeps the row count still moves max(updated_at)
    execute(
        db_path,
        "UPDATE app.users SET updated_at = TIMESTAMP '2030-01-01 00:00:00' WHERE user_id = 'u_0000001'",
    )
    users = tick(defs, warehouse, accounts.cursor)
    [request] = users.run_requests or []
    assert set(request.asset_selection or []) == FROM_APP_USERS
    assert load_cursor(users.cursor)["app.users"] == "rows=100;max=2030-01-01 00:00:00"  # type: ignore[index]
    assert request.run_key != (accounts.run_requests or [])[0].run_key


def test_missing_file_and_missing_table(sample_models, settings_for, build, warehouse, db_path):
    defs = definitions(sample_models, settings_for, build)
    nothing = tick(defs, warehouse, None)
    assert nothing.run_requests == [] and "does not exist yet" in (nothing.skip_message or "")
    assert nothing.cursor is None  # nothing recorded: the next tick is still a first tick
    assert not db_path.exists()  # the sensor never creates the file

    execute(db_path, "CREATE SCHEMA app; CREATE TABLE app.users AS SELECT 'u_1' AS user_id")
    first = tick(defs, warehouse, None)
    assert load_cursor(first.cursor) == {"app.accounts": "missing", "app.users": "rows=1;max=None"}
    execute(
        db_path, "CREATE TABLE app.accounts AS SELECT 'acc_1' AS account_id"
    )  # a table appearing is a change
    [request] = tick(defs, warehouse, first.cursor).run_requests or []
    assert set(request.asset_selection or []) == {MEMBERSHIPS, SYNC_MEMBERSHIPS}


HOLD_WRITE_LOCK = """
import sys, duckdb
con = duckdb.connect(sys.argv[1])
con.execute("INSERT INTO app.users (user_id, updated_at) VALUES ('u_busy', now())")
print("ready", flush=True)
sys.stdin.read()  # hold the file until the test closes our stdin
con.close()
"""


def test_busy_file_skips_without_touching_the_cursor(sample_models, settings_for, build, warehouse, db_path):
    defs = definitions(sample_models, settings_for, build)
    first = tick(defs, seeded(warehouse), None)
    # another process (a run, a loader) holds the file read-write; only duckdb is imported there, so it starts fast
    writer = subprocess.Popen(
        [sys.executable, "-c", HOLD_WRITE_LOCK, str(db_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert select.select([writer.stdout], [], [], 60)[0], (
            "the writer process did not open the file within 60s"
        )
        assert writer.stdout is not None and writer.stdout.readline() == "ready\n"
        busy = tick(defs, warehouse, first.cursor)
    finally:
        writer.communicate(timeout=60)  # closes stdin: the writer releases the file and exits
    assert writer.returncode == 0
    assert busy.run_requests == []
    assert "cannot read the warehouse now" in (busy.skip_message or "") and "locked by a writer" in (
        busy.skip_message or ""
    )
    assert busy.cursor == first.cursor  # a skip keeps the stored fingerprints...
    # ...so the change the writer made while the file was busy is seen once it is gone
    [request] = tick(defs, warehouse, busy.cursor).run_requests or []
    assert set(request.asset_selection or []) == FROM_APP_USERS


PEOPLE = {
    "people.sql": "SELECT user_id, email FROM app.users",
    "people.yml": """
        primary_key: user_id
        mappings:
          - {name: people_hourly, action: identify, user_id: user_id, schedule: {interval: 1h}}
          - {name: people_disabled, action: identify, user_id: user_id, enabled: false, schedule: {interval: 1h}}
          - {name: people_manual, action: identify, user_id: user_id, schedule: manual}
          - {name: people_sharded, action: identify, user_id: user_id, shards: 2, schedule: {interval: 1h}}
    """,
}


def test_disabled_manual_and_sharded_syncs_are_held_back(
    sample_models, settings_for, build, warehouse, db_path
):
    write(sample_models, PEOPLE)
    defs = definitions(sample_models, settings_for, build)
    first = tick(defs, seeded(warehouse), None)
    execute(db_path, "DELETE FROM app.users WHERE user_id = 'u_0000002'")
    [request] = tick(defs, warehouse, first.cursor).run_requests or []
    assert set(request.asset_selection or []) == FROM_APP_USERS | {
        AssetKey("people"),
        AssetKey(["profile_sync", "people_hourly"]),
    }


DBT_TABLE = {
    "upstream.yml": """
        tables:
          - table: main.dim_users
            dbt_model: dim_users
            primary_key: user_id
            mappings:
              - {name: dim_users_hourly, action: identify, user_id: user_id, schedule: {interval: 1h}}
              - {name: dim_users_follow, action: identify, user_id: user_id, schedule: {on_upstream_change: true}}
    """,
    "dim_people.sql": "SELECT user_id FROM main.dim_users",  # a model reading the same table
    "dim_people.yml": "primary_key: user_id\n",
}


@asset(key="dim_users")
def dim_users() -> None:
    """Stands in for the dbt model building main.dim_users (dagster-dbt's key: [dim_users])."""


@asset(deps=["dim_users"])
def dbt_child() -> None:
    """Another dbt model built on dim_users: dbt's to rebuild, never the sensor's."""


def test_a_changed_dbt_model_table_runs_its_syncs_like_a_source(
    sample_models, settings_for, build, warehouse, db_path
):
    write(sample_models, DBT_TABLE)
    defs = definitions(sample_models, settings_for, build, dim_users, dbt_child)
    seeded(warehouse)
    execute(db_path, "CREATE TABLE main.dim_users AS SELECT 'u_1' AS user_id")
    first = tick(defs, warehouse, None)
    recorded = load_cursor(first.cursor)
    assert recorded is not None and sorted(recorded) == ["app.accounts", "app.users", "main.dim_users"]
    assert recorded["main.dim_users"] == "rows=1;max=None"
    execute(db_path, "INSERT INTO main.dim_users VALUES ('u_2')")  # a dbt build outside Dagster, say
    [request] = tick(defs, warehouse, first.cursor).run_requests or []
    # the scheduled sync and what follows it, and the model reading the table as a source; not the
    # dbt model nor dbt's child of it, nor the sync that follows its upstream's materializations
    assert set(request.asset_selection or []) == {
        AssetKey("dim_people"),
        AssetKey(["profile_sync", "dim_users_hourly"]),
        *PROFILES_SYNC,
    }
    assert request.tags["segment_profiles/changed_sources"] == "main.dim_users"


def test_pure_helpers() -> None:
    assert timestamp_column(["id", "timestamp", "received_at"]) == "received_at"
    assert timestamp_column(["ID", "Updated_At", "timestamp"]) == "updated_at"
    assert timestamp_column(["id", "email"]) is None
    assert changed_tables(None, {"a": "1"}) == []
    assert changed_tables({"a": "1", "b": "1"}, {"a": "1", "b": "2", "c": "9"}) == ["b"]
    assert load_cursor("garbage") is None and load_cursor('{"version": 2, "tables": {}}') is None


def test_snowflake_fingerprint_uses_information_schema() -> None:
    with fakesnow.patch():
        con = snowflake.connector.connect(database="ANALYTICS", schema="PUBLIC")
        cur = con.cursor()
        cur.execute("CREATE SCHEMA app")
        cur.execute("CREATE TABLE app.users (user_id VARCHAR)")
        cur.execute("INSERT INTO app.users VALUES ('u_1')")
        session = SnowflakeSession(con)
        before = fingerprints(session, ["app.accounts", "app.users"])
        cur.execute("INSERT INTO app.users VALUES ('u_2')")
        after = fingerprints(session, ["app.accounts", "app.users"])
    assert before["app.accounts"] == "missing"
    assert before["app.users"].startswith("rows=1;altered=")
    assert after["app.users"].startswith("rows=2;altered=")
    assert changed_tables(before, after) == ["app.users"]
