"""The six shipped Flex recipes on the sample data, checked against an independent Python
computation; the same run on Snowflake (fakesnow); and the Snowflake SQL sqlglot produces."""

from __future__ import annotations

import datetime as dt
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import fakesnow
import pyarrow as pa
import pytest
from dagster_snowflake import SnowflakeResource

from segment_profiles_pipeline.identity.config import load_identity
from segment_profiles_pipeline.models.sample_data import generate, seed_missing
from segment_profiles_pipeline.settings import PROJECT_ROOT
from segment_profiles_pipeline.traits.compiler import compile_traits
from segment_profiles_pipeline.traits.compute import compute_audiences
from segment_profiles_pipeline.traits.config import TraitsProject, load_traits
from segment_profiles_pipeline.warehouse.base import WarehouseSession
from segment_profiles_pipeline.warehouse.dialect import to_dialect
from segment_profiles_pipeline.warehouse.duckdb import DuckDBWarehouse
from segment_profiles_pipeline.warehouse.snowflake import SnowflakeWarehouse
from segment_profiles_pipeline_tests.traits.helpers import compute, table_rows, traits_file

USERS = 200
NOW = dt.datetime(2026, 11, 2)
SIX = (
    "total_inbounds",
    "frequent_inbound_channel",
    "total_outbounds",
    "last_known_service_agent",
    "last_interaction_duration",
    "sentiment_in_last_interaction",
)


@pytest.fixture(scope="module")
def shipped() -> TraitsProject:
    project = load_traits(PROJECT_ROOT / "models")
    assert project is not None
    return project


Graph = dict[tuple[str, str], str]
"""(identifier type, value) → canonical profile, as the identity layer resolved them."""


def graph_of(session: WarehouseSession) -> Graph:
    rows = session.query(
        "SELECT external_id_type, external_id_value, canonical_segment_id FROM identity.external_id_mapping"
    ).rows
    return {(t, v): p for t, v, p in rows}


def _profile(row: dict[str, Any], graph: Graph) -> str | None:
    """The profile of the event's most trusted identifier the graph holds (user_id, then anonymous_id)."""
    for kind in ("user_id", "anonymous_id"):
        if (kind, row[kind]) in graph:
            return graph[(kind, row[kind])]
    return None


def _by_profile(rows: list[dict[str, Any]], graph: Graph) -> dict[str, list[dict[str, Any]]]:
    """Deduplicate by message id (first received copy), then group by resolved profile."""
    kept: dict[str, dict[str, Any]] = {}
    for row in sorted(rows, key=lambda r: r["received_at"]):
        kept.setdefault(row["id"], row)
    out: dict[str, list[dict[str, Any]]] = {}
    for row in kept.values():
        if (key := _profile(row, graph)) is not None:
            out.setdefault(key, []).append(row)
    return out


def _last(rows: list[dict[str, Any]], column: str) -> Any:
    candidates = [r for r in rows if r[column] is not None]
    if not candidates:
        return None
    return max(candidates, key=lambda r: (r["timestamp"], r["received_at"], r["id"]))[column]


def _most_frequent(values: list[Any], minimum: int) -> Any:
    counts = Counter(v for v in values if v is not None)
    if not counts or max(counts.values()) < minimum:
        return None
    best = max(counts.values())
    return min(v for v, n in counts.items() if n == best)


def expected_six(graph: Graph) -> dict[str, dict[str, Any]]:
    """The six recipes computed in plain Python from the generator's rows, per resolved profile."""
    data = generate(users=USERS)
    initiated = _by_profile(data["flex.flex_engagement_initiated"].to_pylist(), graph)
    completed = _by_profile(data["flex.flex_engagement_completed"].to_pylist(), graph)
    out: dict[str, dict[str, Any]] = {}
    for key in initiated.keys() | completed.keys():
        ini, com = initiated.get(key), completed.get(key)
        inbound = [r for r in ini or [] if r["direction"] == "Inbound"]
        out[key] = {
            "total_inbounds": len(inbound) if ini else None,
            "frequent_inbound_channel": _most_frequent([r["channel_type"] for r in inbound], 2),
            "total_outbounds": sum(r["direction"] == "Outbound" for r in ini) if ini else None,
            "last_known_service_agent": _last(ini, "last_known_agent_worker_sid") if ini else None,
            "last_interaction_duration": _last(ini, "duration") if ini else None,
            "sentiment_in_last_interaction": _last(com, "sentiment") if com else None,
        }
    return out


def _six(session: WarehouseSession, table: str = "traits.computed_traits") -> dict[str, dict[str, Any]]:
    """The six columns by profile_key, numbers as int (Snowflake returns NUMBER columns as Decimal)."""
    return {
        row["profile_key"]: {k: int(v) if isinstance(v, Decimal) else v for k, v in row.items() if k in SIX}
        for row in session.query(f"SELECT * FROM {table}").dicts()
    }


def test_six_recipes_match_an_independent_computation(tmp_path: Path, shipped: TraitsProject) -> None:
    with DuckDBWarehouse(database=str(tmp_path / "w.duckdb")).session() as session:
        seed_missing(session, USERS)
        compute(session, shipped, NOW)
        graph = graph_of(session)
        assert _six(session) == expected_six(graph)
        rows = table_rows(session)
    # the data exercises every branch: anonymous profiles, no frequent channel, a missing sentiment
    assert any(k.startswith("anon:") for k in rows)
    assert any(r["frequent_inbound_channel"] is None for r in rows.values())
    assert any(r["frequent_inbound_channel"] == "email" for r in rows.values())
    assert all((r["user_id"] is None) != (r["anonymous_id"] is None) for r in rows.values())
    # and identity resolution: anonymous-only events counted on an identified user's profile
    events = generate(users=USERS)["flex.flex_engagement_initiated"].to_pylist()
    identified = {p for p, r in rows.items() if r["user_id"] is not None}
    assert any(
        e["user_id"] is None and _profile(e, graph) in {rows[p]["profile_key"] for p in identified}
        for e in events
    )


@contextmanager
def snowflake_session() -> Iterator[WarehouseSession]:
    warnings.filterwarnings("ignore", message="Arrow output on a DB-API result")
    with fakesnow.patch():
        resource = SnowflakeResource(
            account="acme-test", user="u", password="p", database="DB", warehouse="W"
        )
        with SnowflakeWarehouse(snowflake=resource).session() as session:
            yield session


def test_six_recipes_and_audience_on_snowflake(shipped: TraitsProject) -> None:
    with snowflake_session() as session:
        seed_missing(session, USERS)
        assert compute(session, shipped, NOW).mode == "full"
        graph = graph_of(session)
        expected = expected_six(graph)
        assert _six(session) == expected
        u1 = graph[("user_id", "u_0000001")]
        # an incremental run on Snowflake: one new inbound email engagement for u_0000001
        template = generate(users=USERS)["flex.flex_engagement_initiated"].slice(0, 1).to_pylist()[0]
        new = {
            **template,
            "id": "ei-new-1",
            "user_id": "u_0000001",
            "direction": "Inbound",
            "channel_type": "email",
            "received_at": dt.datetime(2026, 11, 1, 18),
            "timestamp": dt.datetime(2026, 11, 1, 17),
        }
        session.load("flex.flex_engagement_initiated", pa.Table.from_pylist([new]), create=False)
        stats = compute(session, shipped, NOW + dt.timedelta(hours=1))
        assert (stats.mode, stats.profiles_recomputed) == ("incremental", 1)
        traits = _six(session)
        assert traits[u1]["total_inbounds"] == expected[u1]["total_inbounds"] + 1
        assert {k: v for k, v in traits.items() if k != u1} == {k: v for k, v in expected.items() if k != u1}
        audiences = compute_audiences(session, shipped)
        members = {
            r["profile_key"]
            for r in session.query("SELECT * FROM traits.audiences").dicts()
            if r["email_inbound_customers"]
        }
    assert members == {k for k, v in traits.items() if v["frequent_inbound_channel"] == "email"}
    assert audiences.members == {"email_inbound_customers": len(members)}


ALL_TYPES = """
traits:
  - {name: Inbounds, type: event_counter, event: Flex - Engagement Initiated,
     conditions: {property: direction, operator: equals, value: Inbound}}
  - {name: Avg duration, type: aggregation, function: avg, event: Flex - Engagement Initiated, property: duration,
     window: {days: 30}}
  - {name: Channel, type: most_frequent, event: Flex - Engagement Initiated, property: channelType}
  - {name: First agent, type: first, event: Flex - Engagement Initiated, property: lastKnownAgentWorkerSid}
  - {name: Last agent, type: last, event: Flex - Engagement Initiated, property: lastKnownAgentWorkerSid}
  - {name: Channels, type: unique_list, event: Flex - Engagement Initiated, property: channelType,
     conditions: {property: channelType, operator: starts_with, value: e, case_sensitive: false}}
  - {name: Channel count, type: unique_list_count, event: Flex - Engagement Initiated, property: channelType}
"""


def test_snowflake_sql_uses_snowflake_functions(tmp_path: Path) -> None:
    """The compiler is pure (columns in, SQL out); sqlglot must map every construct to Snowflake's."""
    project = traits_file(tmp_path / "models", ALL_TYPES)
    columns = {
        "id": "VARCHAR",
        "user_id": "VARCHAR",
        "anonymous_id": "VARCHAR",
        "timestamp": "TIMESTAMP",
        "received_at": "TIMESTAMP",
        "direction": "VARCHAR",
        "channel_type": "VARCHAR",
        "last_known_agent_worker_sid": "VARCHAR",
        "duration": "BIGINT",
    }
    rules = load_identity(tmp_path / "models").rules
    sql = compile_traits(project, {("flex", "flex_engagement_initiated"): columns}, rules).select(NOW)
    snowflake = to_dialect(sql, "snowflake")
    assert (
        "FILTER (WHERE" in sql and "FILTER" not in snowflake
    )  # conditional aggregates become IFF / COUNT_IF
    assert "COUNT_IF(direction = 'Inbound')" in snowflake
    assert (
        "MAX_BY(last_known_agent_worker_sid, CASE WHEN NOT last_known_agent_worker_sid IS NULL THEN _order END)"
        in snowflake
    )
    assert "MIN_BY(last_known_agent_worker_sid," in snowflake
    assert "ARRAY_SORT(ARRAY_AGG(DISTINCT IFF(" in snowflake
    assert "AVG(IFF(_ts >= CAST('2026-10-03 00:00:00' AS TIMESTAMPNTZ), duration, NULL))" in snowflake
    assert "QUALIFY ROW_NUMBER() OVER (PARTITION BY id ORDER BY received_at" in snowflake
    assert "STARTSWITH(LOWER(channel_type), 'e')" in snowflake
