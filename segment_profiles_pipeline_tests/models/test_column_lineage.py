"""Column lineage of models (``dagster/column_lineage``), traced by sqlglot against the real tables."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance, TableColumnDep

from segment_profiles_pipeline.models.lineage import LineageError, column_origins
from segment_profiles_pipeline_tests.conftest import materialize_all, write

JOINS_ALIASES_CTE = """
WITH last_seen AS (
    SELECT user_id, max(timestamp) AS seen_at FROM flex.flex_engagement_completed GROUP BY user_id
)
SELECT
    u.user_id,
    u.first_name || ' ' || u.last_name AS full_name,
    a.name AS account_name,
    s.seen_at,
    'sample' AS origin
FROM app.users AS u
LEFT JOIN app.accounts a ON a.account_id = u.account_id
LEFT JOIN last_seen AS s ON s.user_id = u.user_id
"""


def _lineage(result, asset: str) -> dict[str, list[TableColumnDep]]:
    (materialization,) = result.asset_materializations_for_node(asset)
    return dict(materialization.metadata["dagster/column_lineage"].value.deps_by_column)


def test_a_model_with_joins_aliases_and_a_cte_gets_column_lineage(models_dir, settings_for, build) -> None:
    write(
        models_dir,
        {
            "profiles.sql": JOINS_ALIASES_CTE,
            "profiles.yml": "primary_key: user_id\n",
            "pro.sql": "SELECT p.*, upper(p.account_name) AS shout FROM models.profiles p",
            "pro.yml": "primary_key: user_id\n",
        },
    )
    result = materialize_all(build(settings_for(models_dir, sample_users=20)))
    assert result.success
    users, accounts = AssetKey(["app", "users"]), AssetKey(["app", "accounts"])
    events = AssetKey(["flex", "flex_engagement_completed"])
    assert _lineage(result, "profiles") == {
        "user_id": [TableColumnDep(users, "user_id")],
        "full_name": [TableColumnDep(users, "first_name"), TableColumnDep(users, "last_name")],
        "account_name": [TableColumnDep(accounts, "name")],
        "seen_at": [TableColumnDep(events, "timestamp")],  # through the CTE, to the event table
    }  # `origin` is a constant: no upstream column
    profiles = AssetKey("profiles")
    assert _lineage(result, "pro") == {  # `p.*` expanded from the table the warehouse built
        "user_id": [TableColumnDep(profiles, "user_id")],
        "full_name": [TableColumnDep(profiles, "full_name")],
        "account_name": [TableColumnDep(profiles, "account_name")],
        "seen_at": [TableColumnDep(profiles, "seen_at")],
        "origin": [TableColumnDep(profiles, "origin")],
        "shout": [TableColumnDep(profiles, "account_name")],
    }


def test_a_cte_that_shadows_its_table_traces_to_the_table() -> None:
    origins = column_origins(
        "WITH users AS (SELECT * FROM users WHERE plan = 'pro') SELECT user_id AS id FROM users",
        {(None, "users"): ["user_id", "plan"]},
    )
    assert origins == {"id": [("main", "users", "user_id")]}


def test_a_column_sqlglot_cannot_resolve_is_a_lineage_error() -> None:
    with pytest.raises(LineageError, match="could not trace the model's column lineage: Column 'nope'"):
        column_origins("SELECT nope FROM app.users", {("app", "users"): ["user_id"]})


def test_untraceable_lineage_warns_and_the_model_still_materializes(
    models_dir: Path, settings_for, build
) -> None:
    write(
        models_dir,
        {  # sqlglot cannot resolve a PIVOT's columns; COLUMNS('…') expands only in DuckDB
            "pivoted.sql": "SELECT * FROM (PIVOT app.users ON plan USING count(*) GROUP BY user_id)",
            "pivoted.yml": "primary_key: user_id\n",
            "names.sql": "SELECT user_id, COLUMNS('.*_name') FROM app.users",
            "names.yml": "primary_key: user_id\n",
        },
    )
    instance = DagsterInstance.ephemeral()
    result = materialize_all(build(settings_for(models_dir, sample_users=20)), instance)
    assert result.success
    (pivoted,) = result.asset_materializations_for_node("pivoted")
    assert pivoted.metadata["dagster/row_count"].value == 20
    assert "dagster/column_lineage" not in pivoted.metadata
    (names,) = result.asset_materializations_for_node("names")
    assert dict(names.metadata["dagster/column_lineage"].value.deps_by_column) == {
        "user_id": [TableColumnDep(AssetKey(["app", "users"]), "user_id")]
    }
    logs = [e.user_message for e in instance.all_logs(result.run_id) if e.level == logging.WARNING]
    assert any("pivoted.sql: no column lineage for this model: could not trace" in m for m in logs)
    assert any("names.sql: column lineage leaves out first_name, last_name" in m for m in logs)
