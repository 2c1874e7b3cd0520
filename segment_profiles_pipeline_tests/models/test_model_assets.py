"""The model layer end to end on a real DuckDB file: assets, lineage, metadata, checks, errors."""

from pathlib import Path

import duckdb
from dagster import AssetKey

from segment_profiles_pipeline.models.sample_data import SOURCE_TABLES, generate
from segment_profiles_pipeline_tests.conftest import materialize_all, write


def _check(result, asset: str, name: str):
    evaluations = [
        e.asset_check_evaluation_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
        and e.asset_check_evaluation_data.asset_key == AssetKey(asset)
        and e.asset_check_evaluation_data.check_name == name
    ]
    assert len(evaluations) == 1
    return evaluations[0]


def test_one_asset_per_model_with_deps_from_sql(sample_models, settings_for, build) -> None:
    defs = build(settings_for(sample_models))
    graph = defs.resolve_asset_graph()
    users = graph.get(AssetKey("users"))
    assert users.group_name == "models"
    assert set(users.parent_keys) == {AssetKey(["app", "users"])}
    memberships = graph.get(AssetKey("account_memberships"))
    assert set(memberships.parent_keys) == {AssetKey(["app", "users"]), AssetKey(["app", "accounts"])}
    assert graph.get(AssetKey(["profile_sync", "users_identify"])).parent_keys == {AssetKey("users")}
    assert "duckdb" in users.kinds
    assert users.code_version  # follows the SQL text


def test_model_depending_on_another_model(models_dir, settings_for, build) -> None:
    write(
        models_dir,
        {
            "users.sql": "SELECT user_id, plan FROM app.users",
            "users.yml": "primary_key: user_id\n",
            "pro_users.sql": "WITH u AS (SELECT * FROM models.users) SELECT * FROM u WHERE plan = 'pro'",
            "pro_users.yml": "primary_key: user_id\n",
        },
    )
    defs = build(settings_for(models_dir))
    pro = defs.resolve_asset_graph().get(AssetKey("pro_users"))
    assert pro.parent_keys == {AssetKey("users")}  # the CTE name `u` is not a table
    result = materialize_all(defs)
    assert result.success


def test_code_version_follows_sql(models_dir, settings_for, build) -> None:
    write(models_dir, {"users.sql": "SELECT user_id FROM app.users", "users.yml": "primary_key: user_id\n"})
    before = build(settings_for(models_dir)).resolve_asset_graph().get(AssetKey("users")).code_version
    write(models_dir, {"users.sql": "SELECT user_id, email FROM app.users"})
    after = build(settings_for(models_dir)).resolve_asset_graph().get(AssetKey("users")).code_version
    assert before != after


def test_materialize_reports_rows_schema_preview_and_checks(
    sample_models, settings_for, build, db_path
) -> None:
    result = materialize_all(build(settings_for(sample_models, sample_users=200)))
    assert result.success
    users = result.asset_materializations_for_node("users")[0].metadata
    with duckdb.connect(str(db_path), read_only=True) as con:
        (rows,) = con.execute("SELECT count(*) FROM app.users").fetchone()
        first = con.execute("SELECT user_id FROM models.users LIMIT 1").fetchone()[0]
    assert users["dagster/row_count"].value == rows == 200
    columns = [c.name for c in users["dagster/column_schema"].value.columns]
    assert columns == [
        "user_id",
        "email",
        "first_name",
        "last_name",
        "phone",
        "plan",
        "account_id",
        "created_at",
        "updated_at",
    ]
    preview = users["preview"].value
    assert preview.count("\n") == 11  # header, separator, 10 rows
    assert first in preview

    # The sample users table holds one null and one duplicated key: the checks warn, the run goes on.
    not_null = _check(result, "users", "primary_key_not_null")
    assert not not_null.passed and not_null.metadata["null_rows"].value == 1
    unique = _check(result, "users", "primary_key_unique")
    assert not unique.passed and unique.metadata["duplicated_keys"].value == 1
    assert unique.metadata["sample_duplicates"].value == {"u_0000197": 2}
    assert _check(result, "account_memberships", "primary_key_unique").passed
    assert _check(result, "account_memberships", "primary_key_not_null").passed


def test_failing_sql_names_the_file_and_keeps_the_old_table(models_dir, settings_for, build, db_path) -> None:
    write(models_dir, {"users.sql": "SELECT user_id FROM app.users", "users.yml": "primary_key: user_id\n"})
    assert materialize_all(build(settings_for(models_dir))).success
    write(models_dir, {"users.sql": "SELECT user_id, no_such_column FROM app.users"})
    result = materialize_all(build(settings_for(models_dir)))
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = failure.step_failure_data.error.message
    assert "users.sql: the model's query failed in the warehouse" in message
    assert "no_such_column" in message  # the warehouse's own error is repeated
    with duckdb.connect(str(db_path), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM models.users").fetchone()[0] == 200


def test_primary_key_not_returned_by_a_star_query_fails_the_run(models_dir, settings_for, build) -> None:
    """A ``*`` hides the columns from the load-time check; the run still names file and field."""
    write(
        models_dir,
        {"users.sql": "SELECT * EXCLUDE (user_id) FROM app.users", "users.yml": "primary_key: user_id\n"},
    )
    result = materialize_all(build(settings_for(models_dir)))
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = failure.step_failure_data.error.message
    assert "users.yml (field 'primary_key'): column 'user_id' is not returned by users.sql" in message
    assert "it returns email" in message


def test_sample_data_never_overwrites_an_existing_table(sample_models, settings_for, build, db_path) -> None:
    with duckdb.connect(str(db_path)) as con:
        con.execute("CREATE SCHEMA app")
        con.execute(
            "CREATE TABLE app.users AS SELECT 'mine' AS user_id, 'me@corp.test' AS email, 'A' AS first_name, "
            "'B' AS last_name, NULL AS phone, 'gold' AS plan, 'acc_00001' AS account_id, "
            "TIMESTAMP '2026-01-01' AS created_at, TIMESTAMP '2026-01-02' AS updated_at"
        )
    result = materialize_all(build(settings_for(sample_models)))
    assert result.success
    with duckdb.connect(str(db_path), read_only=True) as con:
        assert con.execute("SELECT user_id, plan FROM app.users").fetchall() == [("mine", "gold")]
        assert con.execute("SELECT count(*) FROM app.accounts").fetchone()[0] == 20  # created: it was missing
        assert con.execute("SELECT user_id FROM models.users").fetchall() == [("mine",)]
    status = {
        m.asset_key.path[-1]: m.metadata["status"].value
        for m in result.asset_materializations_for_node("sample_data")
    }
    assert status["users"] == "kept existing table untouched"
    assert status["accounts"] == "created"


def test_sample_data_is_deterministic_and_realistic() -> None:
    a, b = generate(300, seed=3), generate(300, seed=3)
    assert all(a[t].equals(b[t]) for t in SOURCE_TABLES)
    initiated = a["flex.flex_engagement_initiated"].to_pylist()
    assert {r["direction"] for r in initiated} == {"Inbound", "Outbound"}
    assert len({r["channel_type"] for r in initiated}) >= 4
    assert all(r["last_known_agent_worker_sid"].startswith("WK") for r in initiated)
    assert any(r["user_id"] is None and r["anonymous_id"] for r in initiated)  # anonymous-only events
    ids = [r["id"] for r in initiated]
    assert len(ids) > len(set(ids))  # a Segment warehouse can hold a message twice
    completed = a["flex.flex_engagement_completed"].to_pylist()
    assert {r["sentiment"] for r in completed} >= {"positive", "neutral", "negative"}
    assert a["app.accounts"].num_rows == 30


def test_plain_dagster_cli_on_an_empty_home(tmp_path: Path) -> None:
    """`dagster asset materialize --select '*'` works with any DuckDB file and an empty DAGSTER_HOME."""
    import os
    import subprocess
    import sys

    home = tmp_path / "home"
    home.mkdir()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "DUCKDB_DATABASE": str(tmp_path / "any.duckdb"),
        "SAMPLE_USERS": "300",
    }
    env.pop("SEGMENT_WRITE_KEY", None)
    dagster = Path(sys.executable).parent / "dagster"
    proc = subprocess.run(
        [
            str(dagster),
            "asset",
            "materialize",
            "-m",
            "segment_profiles_pipeline.definitions",
            "--select",
            "*",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).parents[2],
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "RUN_SUCCESS" in proc.stderr
    with duckdb.connect(str(tmp_path / "any.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM _segment_profiles.outbox").fetchone()[0] > 0
