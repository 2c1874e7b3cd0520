"""Lineage from the SQL: which tables a model reads (sqlglot scope analysis)."""

import pytest
from dagster import AssetKey

from segment_profiles_pipeline.warehouse.dialect import referenced_tables
from segment_profiles_pipeline_tests.conftest import write


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        # a CTE named like the table it reads: the table is still a dependency
        ("WITH users AS (SELECT * FROM users) SELECT * FROM users", [(None, "users")]),
        (
            "WITH users AS (SELECT * FROM app.users WHERE plan = 'pro') SELECT * FROM users",
            [("app", "users")],
        ),
        # a plain CTE is not a table
        ("WITH recent AS (SELECT * FROM app.users) SELECT * FROM recent", [("app", "users")]),
        # a CTE shadows the table only in its scope: the subquery's own CTE list
        (
            "SELECT * FROM (WITH accounts AS (SELECT 1 AS id) SELECT * FROM accounts) AS a JOIN accounts b ON true",
            [(None, "accounts")],
        ),
        # subqueries, joins, set operations, models, first-seen order, no duplicates
        (
            "SELECT u.* FROM app.users u JOIN models.accounts a ON u.id = a.id "
            "WHERE u.id IN (SELECT user_id FROM app.events) UNION ALL SELECT * FROM app.users",
            [("app", "users"), ("models", "accounts"), ("app", "events")],
        ),
        # DuckDB's PIVOT statement: its table is outside every sqlglot scope, yet read
        ("SELECT * FROM (PIVOT app.users ON plan USING count(*) GROUP BY user_id)", [("app", "users")]),
        # ... unless a CTE of that name is what is pivoted
        (
            "WITH u AS (SELECT * FROM app.users) SELECT * FROM (PIVOT u ON plan USING count(*) GROUP BY user_id)",
            [("app", "users")],
        ),
    ],
)
def test_referenced_tables(sql: str, expected: list) -> None:
    assert sorted(referenced_tables(sql)) == sorted(expected)
    assert len(referenced_tables(sql)) == len(expected)


def test_a_model_whose_cte_shadows_its_source_keeps_the_lineage(models_dir, settings_for, build) -> None:
    write(
        models_dir,
        {
            "pro_users.sql": "WITH users AS (SELECT * FROM app.users WHERE plan = 'pro') SELECT * FROM users",
            "pro_users.yml": "primary_key: user_id\n",
            "shadow.sql": "WITH users AS (SELECT * FROM users) SELECT * FROM users",
            "shadow.yml": "primary_key: user_id\n",
        },
    )
    defs = build(settings_for(models_dir))
    graph = defs.resolve_asset_graph()
    assert graph.get(AssetKey("pro_users")).parent_keys == {AssetKey(["app", "users"])}
    assert graph.get(AssetKey("shadow")).parent_keys == {AssetKey(["main", "users"])}
