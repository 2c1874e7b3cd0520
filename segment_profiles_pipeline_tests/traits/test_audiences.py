"""Audiences: membership rows that enter (true), exit (false) and are absent when never a member."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pytest

from segment_profiles_pipeline.errors import ConfigError
from segment_profiles_pipeline.traits.compute import compute_audiences
from segment_profiles_pipeline.warehouse.duckdb import DuckDBWarehouse
from segment_profiles_pipeline_tests.traits.helpers import (
    T0,
    compute,
    ev,
    load_events,
    table_rows,
    traits_file,
)

TRAITS = """
traits:
  - {name: Events, type: event_counter, event: Test Event}
  - {name: Last sentiment, type: last, event: Test Event, property: sentiment}
audiences:
  - {name: Unhappy, type: x, conditions: {trait: last_sentiment, operator: equals, value: negative}}
"""
AUDIENCES = """
traits:
  - {name: Events, type: event_counter, event: Test Event}
  - {name: Last sentiment, type: last, event: Test Event, property: sentiment}
audiences:
  - {name: Unhappy, conditions: {trait: last_sentiment, operator: equals, value: negative}}
  - {name: Loyal, conditions: {trait: events, operator: greater_than_or_equal, value: 3}}
"""
LATER = T0 + dt.timedelta(days=1)


def memberships(session, *keys: str) -> dict[str, tuple]:
    return {k: tuple(r[c] for c in keys) for k, r in table_rows(session, "traits.audiences").items()}


def test_enter_exit_and_never_member(tmp_path: Path) -> None:
    project = traits_file(tmp_path / "models", AUDIENCES)
    with DuckDBWarehouse(database=str(tmp_path / "w.duckdb")).session() as session:
        load_events(
            session,
            "flex.test_event",
            [
                ev("a1", user="u1", minute=1, sentiment="negative"),
                ev("b1", user="u2", minute=1, sentiment="positive"),
                ev("c1", user="u3", minute=1, sentiment="positive"),
                ev("c2", user="u3", minute=2, sentiment="positive"),
                ev("c3", user="u3", minute=3, sentiment="negative"),
            ],
        )
        compute(session, project, LATER)
        first = compute_audiences(session, project)
        # u2 was never a member of anything: no row. Never a member of one audience: null, not false.
        assert memberships(session, "unhappy", "loyal") == {"user:u1": (True, None), "user:u3": (True, True)}
        assert (first.rows, first.members, first.exited) == (
            2,
            {"unhappy": 2, "loyal": 1},
            {"unhappy": 0, "loyal": 0},
        )

        load_events(
            session,
            "flex.test_event",
            [
                ev("a2", user="u1", minute=5, sentiment="positive", received_at=LATER),
                ev("b2", user="u2", minute=5, sentiment="negative", received_at=LATER),
            ],
            create=False,
        )
        compute(session, project, LATER + dt.timedelta(hours=1))
        compute_audiences(session, project)
        # u1 left Unhappy (false, so the sync sends unhappy: false once), u2 entered it.
        assert memberships(session, "unhappy", "loyal") == {
            "user:u1": (False, None),
            "user:u2": (True, None),
            "user:u3": (True, True),
        }
        compute_audiences(session, project)  # nothing changed: same rows, so the sync sends nothing
        assert memberships(session, "unhappy", "loyal") == {
            "user:u1": (False, None),
            "user:u2": (True, None),
            "user:u3": (True, True),
        }

        # A new audience: the existing table has no column for it yet.
        project = traits_file(
            tmp_path / "models",
            AUDIENCES
            + "  - {name: Talkative, conditions: {trait: events, operator: greater_than, value: 1}}\n",
        )
        compute_audiences(session, project)
        assert memberships(session, "unhappy", "loyal", "talkative") == {
            "user:u1": (False, None, True),
            "user:u2": (True, None, True),
            "user:u3": (True, True, True),
        }


def test_conditions_over_a_joined_model(tmp_path: Path) -> None:
    project = traits_file(
        tmp_path / "models",
        """
        traits:
          - {name: Events, type: event_counter, event: Test Event}
        audiences:
          - name: Active pro users
            conditions:
              - {trait: events, operator: greater_than_or_equal, value: 1}
              - {model: users, column: plan, operator: equals_one_of, value: [pro, business]}
        joins:
          users: {column: user_id}
        """,
    )
    with DuckDBWarehouse(database=str(tmp_path / "w.duckdb")).session() as session:
        load_events(
            session,
            "flex.test_event",
            [ev("a", user="u1"), ev("b", user="u2"), ev("c", anon="x1"), ev("d", user="u4")],
        )
        session.execute("CREATE SCHEMA models")
        # u1 appears twice (a duplicated key): a member when any of its rows matches; u4 has no model row
        session.load(
            "models.users",
            pa.table({"user_id": ["u1", "u1", "u2", "u3"], "plan": ["free", "pro", "free", "pro"]}),
            create=True,
        )
        compute(session, project, LATER)
        compute_audiences(session, project)
        assert memberships(session, "active_pro_users") == {"user:u1": (True,)}


def test_missing_model_column_names_audience_and_columns(tmp_path: Path) -> None:
    project = traits_file(
        tmp_path / "models",
        """
        traits:
          - {name: Events, type: event_counter, event: Test Event}
        audiences:
          - {name: Pros, conditions: {model: users, column: tier, operator: equals, value: pro}}
        joins:
          users: {column: user_id}
        """,
    )
    with DuckDBWarehouse(database=str(tmp_path / "w.duckdb")).session() as session:
        load_events(session, "flex.test_event", [ev("a", user="u1")])
        compute(session, project, LATER)
        with pytest.raises(ConfigError, match=r"audience 'Pros': model table models.users does not exist"):
            compute_audiences(session, project)
        session.execute("CREATE SCHEMA models")
        session.load("models.users", pa.table({"user_id": ["u1"], "plan": ["pro"]}), create=True)
        with pytest.raises(ConfigError) as err:
            compute_audiences(session, project)
    assert "column 'tier' does not exist in models.users; available columns: user_id, plan" in str(err.value)
    assert "computed_traits.yml" in str(err.value)


def test_unknown_key_in_an_audience_is_a_load_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"audience 'Unhappy': type: unknown key"):
        traits_file(tmp_path / "models", TRAITS)
