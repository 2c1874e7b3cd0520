"""Isolated candidates (no identifier shared with another candidate or a stored profile) are written
by SQL instead of the resolver: the tables must be exactly the ones the resolver alone writes.

The reference is the same run with every candidate sent through the resolver (``linked_sql``
replaced by "every candidate"), on data made to break the shortcut if it were wrong: shared
devices and emails, two user ids on one device (a demotion), blocked values, missing
identifiers, arrival ties, identify records, and an incremental second run whose new messages
reach stored profiles; or NULL arrival times (then the second run rebuilds). Both dialects.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import pytest

from segment_profiles_pipeline.identity import compute
from segment_profiles_pipeline.identity.compute import IdentityRunStats, compute_identity
from segment_profiles_pipeline.identity.resolver import Graph
from segment_profiles_pipeline.warehouse.base import WarehouseSession
from segment_profiles_pipeline.warehouse.duckdb import DuckDBWarehouse
from segment_profiles_pipeline_tests.identity.test_graph_tables import (
    EVENTS,
    IDENTITY,
    NOW,
    USERS_MAPPING,
    at,
    load_users,
)
from segment_profiles_pipeline_tests.traits.helpers import T0, ev, load_events
from segment_profiles_pipeline_tests.traits.test_recipes import snowflake_session

TABLES = (
    "identity.id_graph",
    "identity.external_id_mapping",
    "identity.profile_merges",
    "_segment_profiles.identity_sets",
    "_segment_profiles.identity_watermarks",
)


def events(rng: random.Random, first: int, count: int, nulls: bool) -> list[dict[str, Any]]:
    """``count`` messages from ``first`` on: about half with identifiers of their own only; with
    ``nulls``, some without an arrival time."""
    rows = []
    for n in range(first, first + count):
        if rng.random() < 0.5:  # a user nobody else shares anything with
            user, anon, email = f"solo-u{n}", rng.choice([f"solo-a{n}", None]), rng.choice([f"s{n}@x", None])
        else:  # a small pool: devices and emails shared, two user ids meeting on a device
            user = rng.choice(["u1", "u2", "u3", None])
            anon = rng.choice(["a1", "a2", "a3", "a4", "anonymous", None])
            email = rng.choice(["fam@example.com", "e2@x", None])
        minute = rng.choice([1, 2, 2, 3, 5, 8])  # ties in arrival time
        received = None if nulls and rng.random() < 0.1 else T0 + dt.timedelta(minutes=minute)
        rows.append(ev(f"m{n:03}", user=user, anon=anon, minute=minute, received_at=received, email=email))
    return rows


USERS = [("u1", "fam@example.com", 4), ("u9", "fam@example.com", 6), ("solo-user", "solo@x", 200)]


def snapshot(session: WarehouseSession) -> dict[str, list[tuple[Any, ...]]]:
    return {
        t: sorted(session.query(f"SELECT * FROM {t}").rows, key=repr)
        for t in TABLES
        if t != "_segment_profiles.identity_watermarks"
    } | {"last_seq": session.query("SELECT last_seq FROM _segment_profiles.identity_watermarks").rows}


def two_runs(session: WarehouseSession, nulls: bool) -> list[IdentityRunStats]:
    """A full run over the first messages, then an incremental one over later ones (undated first
    messages, with ``nulls``, count as arrived before the mark: ``test_graph_tables``)."""
    rng = random.Random(13)
    merged = [
        ev("y1", anon="y-a", minute=1),
        ev("y2", email="y@x", minute=2),
        ev("y3", anon="y-a", email="y@x", minute=3),
    ]
    load_events(session, EVENTS, events(rng, 0, 80, nulls) + merged)
    load_users(session, USERS[:2])
    stats = [compute_identity(session, IDENTITY, [("flex", "test_event")], [USERS_MAPPING], NOW)]
    later = events(rng, 80, 60, nulls)
    for row in later:  # later arrivals, so the second run is incremental
        row["received_at"] = at(60 + int(row["id"][1:]))
    later.append(ev("y4", anon="y-b", email="y@x", minute=0, received_at=at(300)))  # reaches a stored profile
    later += [
        ev("z1", anon="z-a", minute=0, received_at=at(301)),
        ev("z2", email="z@x", minute=0, received_at=at(302)),
    ]
    later.append(ev("z3", anon="z-a", email="z@x", minute=0, received_at=at(303)))  # a merge
    load_events(session, EVENTS, later, create=False)
    load_users(session, USERS)
    stats.append(compute_identity(session, IDENTITY, [("flex", "test_event")], [USERS_MAPPING], NOW))
    return stats


@contextmanager
def duckdb_session(tmp_path: Path) -> Iterator[WarehouseSession]:
    with DuckDBWarehouse(database=str(tmp_path / "w.duckdb")).session() as session:
        yield session


def outcome(
    opener: Callable[[], AbstractContextManager[WarehouseSession]],
    monkeypatch: pytest.MonkeyPatch,
    nulls: bool,
) -> tuple[dict[str, Any], list[Any], int]:
    """Tables and stats after both runs, and how many messages the resolver saw."""
    resolved = 0
    resolve = Graph.resolve

    def counting(self: Graph, message: Any) -> Any:
        nonlocal resolved
        resolved += 1
        return resolve(self, message)

    monkeypatch.setattr(Graph, "resolve", counting)
    with opener() as session:
        stats = two_runs(session, nulls)
        tables = snapshot(session)
    monkeypatch.setattr(Graph, "resolve", resolve)
    return (
        tables,
        [
            (s.mode, s.reason, s.candidates, s.profiles_created, s.merges, s.demotions, s.profiles)
            for s in stats
        ],
        resolved,
    )


@pytest.mark.parametrize("nulls", [False, True])
@pytest.mark.parametrize("dialect", ["duckdb", "snowflake"])
def test_isolated_candidates_give_the_resolvers_tables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dialect: str, nulls: bool
) -> None:
    def opener(name: str) -> Callable[[], AbstractContextManager[WarehouseSession]]:
        if dialect == "snowflake":
            return snowflake_session
        folder = tmp_path / name
        folder.mkdir()
        return lambda: duckdb_session(folder)

    fast, fast_stats, fast_resolved = outcome(opener("fast"), monkeypatch, nulls)
    with monkeypatch.context() as patched:
        patched.setattr(
            compute, "linked_sql", lambda rules, candidates, stored: f"SELECT seq FROM {candidates}"
        )
        reference, reference_stats, reference_resolved = outcome(opener("reference"), patched, nulls)
    assert [s[0] for s in fast_stats] == ["full", "incremental"]
    assert fast == reference
    assert fast_stats == reference_stats
    # both paths ran: some candidates skipped the resolver, some needed it (merges, demotions)
    assert 0 < fast_resolved < reference_resolved == sum(s[2] for s in reference_stats)
    assert reference_stats[0][5] > 0 and sum(s[4] for s in reference_stats) > 0
