"""``identity/profile_keys.py``: raw events → resolved profile, and each profile's send target, on
hand-built events resolved by the real identity layer (DuckDB and fakesnow)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest

from segment_profiles_pipeline.identity.compute import compute_identity
from segment_profiles_pipeline.identity.config import load_identity
from segment_profiles_pipeline.identity.profile_keys import (
    identifier_columns,
    identifier_map_sql,
    resolved_events_sql,
    targets_sql,
)
from segment_profiles_pipeline.warehouse.base import WarehouseSession
from segment_profiles_pipeline_tests.traits.helpers import ev, load_events
from segment_profiles_pipeline_tests.warehouse.fake_snowflake import dialect_session

EVENTS = [
    ev("e1", anon="a1", minute=0),  # anonymous session ...
    ev("e2", user="u1", anon="a1", minute=1),  # ... later identified: the same profile
    ev("e3", user="u2", anon="a1", minute=2),  # shared device: a1 stays with u1, e3 is u2's
    ev("e4", user="anonymous", anon="a3", minute=3),  # blocked user_id: the anonymous id decides
    ev("e5", user="0", minute=4),  # every identifier blocked: no profile
    ev("e6", anon="a4", minute=5),  # a second device of u1, linked by e7
    ev("e7", user="u1", anon="a4", minute=6),
]


@pytest.fixture(params=["duckdb", "snowflake"])
def session(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[WarehouseSession]:
    with dialect_session(request.param, tmp_path) as opened:
        yield opened


def test_events_resolve_to_the_profile_of_their_most_trusted_identifier(
    session: WarehouseSession, tmp_path: Path
) -> None:
    load_events(session, "flex.t", EVENTS)
    identity = load_identity(tmp_path)
    compute_identity(session, identity, [("flex", "t")], [], dt.datetime(2026, 2, 1))
    load_events(session, "flex.t", [ev("e8", user="u9", minute=9)], create=False)  # after the graph ran
    identifiers = identifier_columns(identity.rules, [c for c, _ in session.columns("flex", "t")])
    assert [(i.type, i.column) for i in identifiers] == [
        ("user_id", "user_id"),
        ("anonymous_id", "anonymous_id"),
    ]
    id_map = f"({identifier_map_sql([i.type for i in identifiers])})"
    resolved = session.query(
        f"SELECT r.id, g.user_id, g.anonymous_id FROM ({resolved_events_sql('flex.t', identifiers, id_map)}) AS r "
        f"LEFT JOIN ({targets_sql()}) AS g ON g.profile_key = r.profile_key ORDER BY r.id"
    ).rows
    unresolved = session.query(
        f"SELECT id FROM ({resolved_events_sql('flex.t', identifiers, id_map)}) AS r WHERE profile_key IS NULL ORDER BY id"
    ).rows
    assert [tuple(r) for r in resolved] == [
        ("e1", "u1", None),
        ("e2", "u1", None),
        ("e3", "u2", None),
        ("e4", None, "a3"),
        ("e5", None, None),
        ("e6", "u1", None),
        ("e7", "u1", None),
        ("e8", None, None),
    ]
    assert [r[0] for r in unresolved] == ["e5", "e8"]
    profiles = session.query(
        f"SELECT count(DISTINCT profile_key) FROM ({resolved_events_sql('flex.t', identifiers, id_map)}) AS r"
    ).scalar()
    assert profiles == 3  # u1 (a1, a4), u2, a3


def test_an_anonymous_profile_is_sent_to_its_first_anonymous_id(
    session: WarehouseSession, tmp_path: Path
) -> None:
    # a7 first; a5 joins its profile through a shared email (e4, e5); a6 stays alone; no user_id
    load_events(
        session,
        "flex.t",
        [ev("e1", anon="a7", minute=0), ev("e2", anon="a5", minute=1), ev("e3", anon="a6", minute=2)],
    )
    load_events(session, "flex.u", [ev("e4", anon="a5", minute=3, email="x@example.com")])
    load_events(session, "flex.u", [ev("e5", anon="a7", minute=4, email="x@example.com")], create=False)
    compute_identity(
        session, load_identity(tmp_path), [("flex", "t"), ("flex", "u")], [], dt.datetime(2026, 2, 1)
    )
    # a7's profile (created first) absorbed a5's: its first anonymous id is a7 (lowest seq)
    assert sorted(tuple(r[1:]) for r in session.query(targets_sql()).rows) == [(None, "a6"), (None, "a7")]
