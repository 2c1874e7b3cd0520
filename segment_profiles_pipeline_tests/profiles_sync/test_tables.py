"""The profiles_sync schema on hand-built tables: Segment's columns, complete states, merges,
acknowledged-only traits, dry runs, append-only increments; DuckDB and Snowflake (fakesnow)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from segment_profiles_pipeline.config import MappingConfig
from segment_profiles_pipeline.identity.compute import compute_identity
from segment_profiles_pipeline.identity.config import IdentityFile, IdentityProject, load_identity, rules_from
from segment_profiles_pipeline.profiles_sync.compute import compute_profiles_sync
from segment_profiles_pipeline.project import MappingSpec, SyncSource
from segment_profiles_pipeline.segment.client import SegmentClient
from segment_profiles_pipeline.sync.delivery import OUTBOX
from segment_profiles_pipeline.sync.engine import run_sync
from segment_profiles_pipeline.testing.segment_server import FakeSegmentServer
from segment_profiles_pipeline.warehouse.base import WarehouseSession
from segment_profiles_pipeline.warehouse.duckdb import DuckDBWarehouse
from segment_profiles_pipeline_tests.identity.test_segment_graph import SEGMENT_YML, landed
from segment_profiles_pipeline_tests.sync.helpers import people_spec, people_table
from segment_profiles_pipeline_tests.traits.helpers import T0, ev, load_events
from segment_profiles_pipeline_tests.traits.test_recipes import snowflake_session

WRITE_KEY = "wk-profiles-sync-test"
EVENTS = [("flex", "test_event")]
IDENTITY = IdentityProject(Path("identity.yml"), IdentityFile(), rules_from(IdentityFile()))
SCORES = MappingSpec(
    SyncSource("scores", ("scores",), "models.scores", "id", "models/scores.yml"),
    MappingConfig.model_validate(
        {
            "name": "scores_identify",
            "action": "identify",
            "user_id": "id",
            "traits": {"Lifetime Value": "ltv"},
        }
    ),
)

# Segment's names, written out by hand (Profiles Sync docs and profiles-sync-dbt's models).
ID_GRAPH_UPDATES = [
    "segment_id",
    "canonical_segment_id",
    "timestamp",
    "triggering_event_id",
    "triggering_event_type",
    "seq",
    "uuid_ts",
]
EXTERNAL_ID_MAPPING_UPDATES = [
    "id",
    "segment_id",
    "external_id_hash",
    "external_id_type",
    "external_id_value",
    "timestamp",
    "received_at",
    "triggering_event_id",
    "triggering_event_name",
    "triggering_event_type",
    "triggering_event_source_id",
    "triggering_event_source_name",
    "triggering_event_source_slug",
    "seq",
    "uuid_ts",
]
PROFILE_TRAITS_UPDATES_SYSTEM = [
    "segment_id",
    "seq",
    "uuid_ts",
    "user_id",
    "anonymous_id",
    "id",
    "canonical_segment_id",
    "merged_to",
    "sent_at",
    "received_at",
    "timestamp",
    "context_dry_run",
]
MATERIALIZED = {
    "user_traits": ["canonical_segment_id", "name", "value", "seq", "received_at", "uuid_ts", "timestamp"],
    "user_identifiers": [
        "canonical_segment_id",
        "type",
        "value",
        "seq",
        "received_at",
        "uuid_ts",
        "timestamp",
    ],
    "profile_merges": ["canonical_segment_id", "segment_id", "seq", "received_at", "uuid_ts", "timestamp"],
    "id_graph": ["segment_id", "canonical_segment_id", "timestamp", "seq", "uuid_ts"],
    "external_id_mapping": [
        "canonical_segment_id",
        "external_id_type",
        "external_id_value",
        "external_id_hash",
        "timestamp",
        "uuid_ts",
    ],
}


def at(minutes: int) -> dt.datetime:
    return T0 + dt.timedelta(days=1, minutes=minutes)


@contextmanager
def session_for(dialect: str, tmp_path: Path) -> Iterator[WarehouseSession]:
    if dialect == "snowflake":
        with snowflake_session() as session:
            yield session
    else:
        with DuckDBWarehouse(database=str(tmp_path / "w.duckdb")).session() as session:
            yield session


def columns(session: WarehouseSession, table: str) -> list[str]:
    return [c for c, _ in session.columns("profiles_sync", table)]


def profile_of(session: WarehouseSession, kind: str, value: str) -> str:
    return session.query(
        "SELECT canonical_segment_id FROM identity.external_id_mapping "
        f"WHERE external_id_type = '{kind}' AND external_id_value = '{value}'"
    ).scalar()


def segment_of(session: WarehouseSession, kind: str, value: str) -> str:
    return session.query(
        "SELECT segment_id FROM identity.external_id_mapping "
        f"WHERE external_id_type = '{kind}' AND external_id_value = '{value}'"
    ).scalar()


def refresh(session: WarehouseSession, minute: int, specs: list[MappingSpec]):
    compute_identity(session, IDENTITY, EVENTS, [people_spec()], at(minute))
    return compute_profiles_sync(session, IDENTITY, specs, at(minute))


def traits_of(session: WarehouseSession, trait_columns: str) -> dict[str, tuple]:
    rows = session.query(
        f"SELECT canonical_segment_id, {trait_columns}, merged_to FROM profiles_sync.profile_traits"
    ).rows
    return {r[0]: tuple(r[1:]) for r in rows}


def latest_rows_equal_profile_traits(session: WarehouseSession, trait_columns: str) -> None:
    latest = session.query(
        f"SELECT segment_id, {trait_columns}, merged_to FROM profiles_sync.profile_traits_updates "
        "QUALIFY row_number() OVER (PARTITION BY segment_id ORDER BY seq DESC) = 1"
    ).rows
    current = traits_of(session, trait_columns)
    assert latest and {r[0]: tuple(r[1:]) for r in latest} == {k: current[k] for k in {r[0] for r in latest}}
    landed = {r[0] for r in latest}
    assert all(k in landed for k, v in current.items() if any(x is not None for x in v))


@pytest.fixture
def server():
    with FakeSegmentServer(write_key=WRITE_KEY) as srv:
        yield srv


async def no_wait(_seconds: float) -> None:
    """Backoff without waiting: the tests check outcomes, not the clock."""


@pytest.mark.parametrize("dialect", ["duckdb", "snowflake"])
def test_profiles_sync_tables_follow_acknowledged_traits_merges_and_dry_runs(
    tmp_path: Path, server: FakeSegmentServer, dialect: str
) -> None:
    specs = [people_spec(), SCORES]
    with (
        session_for(dialect, tmp_path) as session,
        SegmentClient(server.url, WRITE_KEY, sleep=no_wait) as sender,
    ):
        load_events(
            session,
            "flex.test_event",
            [
                ev("m1", anon="a1", minute=1),
                ev("m2", user="u1", anon="a1", minute=2),
                ev("m3", anon="a2", minute=3),
                ev("m4", user="u2", minute=4),
            ],
        )
        people_table(session, [("u1", "ana@example.com", "pro"), ("u2", "bo@example.com", "free")])
        compute_identity(session, IDENTITY, EVENTS, [people_spec()], at(9))
        assert run_sync(session, people_spec(), sender, now=at(10)).status == "success"

        first = compute_profiles_sync(session, IDENTITY, specs, at(11))
        p1, p2, p3 = (
            profile_of(session, "user_id", "u1"),
            profile_of(session, "anonymous_id", "a2"),
            profile_of(session, "user_id", "u2"),
        )
        assert first.trait_columns == {"email": "email", "plan": "plan"}
        assert first.unread_mappings == ["scores_identify"]  # models.scores does not exist yet
        assert columns(session, "id_graph_updates") == ID_GRAPH_UPDATES
        assert columns(session, "external_id_mapping_updates") == EXTERNAL_ID_MAPPING_UPDATES
        assert columns(session, "profile_traits_updates") == [*PROFILE_TRAITS_UPDATES_SYSTEM, "email", "plan"]
        for table, wanted in MATERIALIZED.items():
            assert columns(session, table) == wanted, table
        assert columns(session, "profile_traits") == [
            "canonical_segment_id",
            "email",
            "plan",
            "seq",
            "uuid_ts",
            "merged_to",
        ]
        assert traits_of(session, "email, plan") == {
            p1: ("ana@example.com", "pro", None),
            p2: (None, None, None),  # no identify call: a profile without traits
            p3: ("bo@example.com", "free", None),
        }
        assert set(
            session.query("SELECT segment_id, user_id FROM profiles_sync.profile_traits_updates").rows
        ) == {
            (p1, "u1"),
            (p3, "u2"),
        }
        assert set(
            session.query(
                "SELECT segment_id, trait, value_json, source, dry_run FROM _segment_profiles.profile_trait_sources"
            ).rows
        ) == {
            (p1, "email", '"ana@example.com"', "people_identify", False),
            (p1, "plan", '"pro"', "people_identify", False),
            (p3, "email", '"bo@example.com"', "people_identify", False),
            (p3, "plan", '"free"', "people_identify", False),
        }
        assert set(
            session.query(
                "SELECT segment_id, canonical_segment_id, triggering_event_id, triggering_event_type FROM profiles_sync.id_graph_updates"
            ).rows
        ) == {(p1, p1, "m1", "track"), (p2, p2, "m3", "track"), (p3, p3, "m4", "track")}

        # nothing new: nothing appended
        again = compute_profiles_sync(session, IDENTITY, specs, at(12))
        assert again.appended == {
            "id_graph_updates": 0,
            "external_id_mapping_updates": 0,
            "profile_traits_updates": 0,
        }

        # u1 links a2 (p2 merges into p1); u1 upgrades (synced), u2 upgrades (not synced yet);
        # a new mapping's trait is planned by a dry run only
        load_events(session, "flex.test_event", [ev("m5", user="u1", anon="a2", minute=30)], create=False)
        people_table(session, [("u1", "ana@example.com", "enterprise"), ("u2", "bo@example.com", "pro")])
        assert run_sync(session, people_spec(), sender, now=at(40)).status == "success"
        third = refresh(session, 40, specs)
        assert third.appended == {
            "id_graph_updates": 1,
            "external_id_mapping_updates": 0,
            "profile_traits_updates": 3,
        }
        people_table(session, [("u1", "ana@example.com", "enterprise"), ("u2", "bo@example.com", "team")])
        session.execute(
            "CREATE OR REPLACE TABLE models.scores AS SELECT 'u1' AS id, CAST(120.5 AS DOUBLE) AS ltv"
        )
        run_sync(session, SCORES, OUTBOX, now=at(41))
        fourth = refresh(session, 42, specs)
        assert fourth.trait_columns == {"Lifetime Value": "lifetime_value", "email": "email", "plan": "plan"}
        assert fourth.appended == {
            "id_graph_updates": 0,
            "external_id_mapping_updates": 0,
            "profile_traits_updates": 1,
        }
        assert (fourth.planned_values, fourth.unrecoverable_records) == (1, 0)
        assert columns(session, "profile_traits_updates") == [
            *PROFILE_TRAITS_UPDATES_SYSTEM,
            "email",
            "plan",
            "lifetime_value",
        ]
        assert traits_of(session, "email, lifetime_value, plan") == {
            p1: ("ana@example.com", "120.5", "enterprise", None),  # complete state: email kept
            p2: (None, None, None, p1),
            p3: ("bo@example.com", None, "pro", None),  # "team" is not acknowledged yet
        }
        latest_rows_equal_profile_traits(session, "email, lifetime_value, plan")
        newest = session.query(
            "SELECT segment_id, email, plan, lifetime_value, merged_to, context_dry_run FROM profiles_sync.profile_traits_updates "
            "QUALIFY row_number() OVER (PARTITION BY segment_id ORDER BY seq DESC) = 1"
        ).rows
        assert set(newest) == {
            (p1, "ana@example.com", "enterprise", "120.5", None, True),
            (p2, None, None, None, p1, False),
            (p3, "bo@example.com", "pro", None, None, False),
        }
        assert set(
            session.query(
                "SELECT trait, value_json, source, dry_run FROM _segment_profiles.profile_trait_sources "
                f"WHERE segment_id = '{p1}'"
            ).rows
        ) == {
            ("email", '"ana@example.com"', "people_identify", False),
            ("plan", '"enterprise"', "people_identify", False),
            ("Lifetime Value", "120.5", "scores_identify", True),
        }
        merge = session.query(
            "SELECT canonical_segment_id, triggering_event_id, triggering_event_type FROM profiles_sync.id_graph_updates "
            f"WHERE segment_id = '{p2}' ORDER BY seq DESC LIMIT 1"
        ).rows
        assert merge == [(p1, "m5", "track")]
        assert session.query(
            "SELECT canonical_segment_id, segment_id FROM profiles_sync.profile_merges"
        ).rows == [(p1, p2)]
        assert set(
            session.query("SELECT canonical_segment_id, type, value FROM profiles_sync.user_identifiers").rows
        ) == {
            (p1, "anonymous_id", "a1"),
            (p1, "user_id", "u1"),
            (p1, "anonymous_id", "a2"),
            (p1, "email", "ana@example.com"),
            (p3, "user_id", "u2"),
            (p3, "email", "bo@example.com"),
        }
        assert set(
            session.query("SELECT canonical_segment_id, name, value FROM profiles_sync.user_traits").rows
        ) == {
            (p1, "email", "ana@example.com"),
            (p1, "plan", "enterprise"),
            (p1, "lifetime_value", "120.5"),
            (p3, "email", "bo@example.com"),
            (p3, "plan", "pro"),
        }
        # the dry-run trait, synced live: acknowledged now, no longer flagged
        assert run_sync(session, SCORES, sender, now=at(43)).status == "success"
        refresh(session, 43, specs)
        assert session.query(
            "SELECT value_json, dry_run FROM _segment_profiles.profile_trait_sources WHERE trait = 'Lifetime Value'"
        ).rows == [("120.5", False)]
        # a clock behind the last run's: uuid_ts still grows
        session.execute("UPDATE models.scores SET ltv = 99")
        assert run_sync(session, SCORES, sender, now=at(44)).status == "success"
        assert refresh(session, 1, specs).appended["profile_traits_updates"] == 1
        # seq and uuid_ts only grow, in every _updates table
        for table in ("id_graph_updates", "external_id_mapping_updates", "profile_traits_updates"):
            stamps = session.query(f"SELECT seq, uuid_ts FROM profiles_sync.{table} ORDER BY seq").rows
            assert [s for s, _ in stamps] == list(range(1, len(stamps) + 1)), table
            assert [u for _, u in stamps] == sorted(u for _, u in stamps), table
        # profiles-sync-dbt's own models, run on these tables, find the same traits per canonical profile
        dbt = profiles_sync_dbt_traits(session)
        ours = traits_of(session, "email, lifetime_value, plan")
        assert {p: (r["email"], r["lifetime_value"], r["plan"]) for p, r in dbt.items()} == {
            p: v[:3] for p, v in ours.items() if v[3] is None
        }
        runs = session.query(
            "SELECT DISTINCT uuid_ts FROM profiles_sync.profile_traits_updates ORDER BY 1"
        ).rows
        # runs at minutes 11, 40, 42, 43 (the flag changed) and the late clock, stamped just after 43
        assert [r[0] for r in runs] == [at(11), at(40), at(42), at(43), at(43) + dt.timedelta(microseconds=1)]
        assert refresh(session, 50, specs).appended == {
            "id_graph_updates": 0,
            "external_id_mapping_updates": 0,
            "profile_traits_updates": 0,
        }


def test_a_value_changed_before_it_was_read_is_counted_not_invented(
    tmp_path: Path, server: FakeSegmentServer
) -> None:
    """The ledger keeps checksums, not values: an acknowledged state the model left before any
    profiles_sync run read it is reported, and the profile keeps the last value read."""
    with (
        session_for("duckdb", tmp_path) as session,
        SegmentClient(server.url, WRITE_KEY, sleep=no_wait) as sender,
    ):
        load_events(session, "flex.test_event", [ev("m1", user="u1", minute=1)])
        people_table(session, [("u1", "ana@example.com", "pro")])
        run_sync(session, people_spec(), sender, now=at(10))
        assert refresh(session, 11, [people_spec()]).unrecoverable_records == 0
        people_table(session, [("u1", "ana@example.com", "team")])
        run_sync(session, people_spec(), sender, now=at(20))
        people_table(session, [("u1", "ana@example.com", "max")])  # before profiles_sync read "team"
        stats = refresh(session, 21, [people_spec()])
        assert stats.unrecoverable_records == 1
        assert session.query("SELECT plan FROM profiles_sync.profile_traits").rows == [("pro",)]


PLANS = MappingSpec(
    SyncSource("plans", ("plans",), "models.plans", "id", "models/plans.yml"),
    MappingConfig.model_validate(
        {
            "name": "plans_identify",
            "action": "identify",
            "user_id": "id",
            "traits": {"plan": {"column": "plan", "nulls": "skip"}, "tier": "tier"},
        }
    ),
)


def test_traits_merge_by_recency_across_mappings_and_a_skipped_null_keeps_the_value(
    tmp_path: Path, server: FakeSegmentServer
) -> None:
    specs = [people_spec(), PLANS]

    def plans(plan: str | None, tier: str | None) -> None:
        session.execute(
            "CREATE OR REPLACE TABLE models.plans AS SELECT 'u1' AS id, "
            f"CAST({repr(plan) if plan else 'NULL'} AS VARCHAR) AS plan, CAST({repr(tier) if tier else 'NULL'} AS VARCHAR) AS tier"
        )

    def state() -> tuple:
        [row] = session.query("SELECT * FROM profiles_sync.profile_traits").dicts()
        return row["plan"], row.get("tier")  # tier is a column once a mapping sent it

    with (
        session_for("duckdb", tmp_path) as session,
        SegmentClient(server.url, WRITE_KEY, sleep=no_wait) as sender,
    ):
        load_events(session, "flex.test_event", [ev("m1", user="u1", minute=1)])
        people_table(session, [("u1", "ana@example.com", "free")])
        plans("pro", "gold")
        run_sync(session, people_spec(), sender, now=at(10))
        refresh(session, 11, specs)
        assert state() == ("free", None)
        run_sync(session, PLANS, sender, now=at(20))
        refresh(session, 21, specs)
        assert state() == ("pro", "gold")  # the later call wins
        plans(None, None)
        run_sync(session, PLANS, sender, now=at(30))
        refresh(session, 31, specs)
        assert state() == ("pro", None)  # plan's null was skipped (not sent); tier's was sent
        people_table(session, [("u1", "ana@example.com", "team")])
        run_sync(session, people_spec(), sender, now=at(40))
        refresh(session, 41, specs)
        assert state() == ("team", None)


def profiles_sync_dbt_traits(session: WarehouseSession) -> dict[str, dict]:
    """segmentio/profiles-sync-dbt's full-refresh ``id_graph`` and ``profile_traits`` models
    (models/profile_materializations/*.sql at bc29522), rendered by hand for schema
    ``profiles_sync``: its trait columns are the columns of ``profile_traits_updates`` minus the
    ones it excludes (``user_id``, ``anonymous_id``, ``id``, ``canonical_segment_id``,
    ``merged_to``, ``sent_at``, ``received_at``, ``context_%``, ``_%``)."""
    excluded = {
        "user_id",
        "anonymous_id",
        "id",
        "canonical_segment_id",
        "merged_to",
        "sent_at",
        "received_at",
    }
    names = sorted(
        c
        for c in columns(session, "profile_traits_updates")
        if c not in excluded and not c.startswith(("context_", "_"))
    )
    id_graph = """SELECT all_updates.segment_id, all_updates.canonical_segment_id FROM (
        SELECT updates.segment_id, updates.canonical_segment_id,
            row_number() OVER (PARTITION BY updates.segment_id
                ORDER BY updates2.canonical_segment_id IS NOT NULL, updates.seq DESC NULLS FIRST) AS rn
        FROM profiles_sync.id_graph_updates AS updates
        LEFT JOIN profiles_sync.id_graph_updates AS updates2
            ON updates2.segment_id = updates.canonical_segment_id
            AND updates.uuid_ts < updates2.uuid_ts + INTERVAL 2 HOUR
            AND updates2.canonical_segment_id <> updates2.segment_id
            AND updates2.canonical_segment_id <> updates.canonical_segment_id) AS all_updates
        WHERE rn = 1"""
    values = ", ".join(
        f"LAST_VALUE(updates.{c} IGNORE NULLS) OVER (PARTITION BY COALESCE(id_graph.canonical_segment_id, "
        f"updates.segment_id) ORDER BY updates.seq ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) AS {c}"
        for c in names
    )
    rows = session.query(
        f"""WITH id_graph AS ({id_graph}),
        last_profile_traits_updates AS (
            SELECT *, row_number() OVER (PARTITION BY segment_id ORDER BY seq DESC) AS last_record
            FROM profiles_sync.profile_traits_updates)
        SELECT DISTINCT COALESCE(id_graph.canonical_segment_id, updates.segment_id) AS canonical_segment_id, {values}
        FROM last_profile_traits_updates AS updates
        FULL OUTER JOIN id_graph ON id_graph.segment_id = updates.segment_id
        WHERE updates.last_record = 1"""
    ).dicts()
    return {r.pop("canonical_segment_id"): r for r in rows}


def test_with_segments_graph_traits_land_on_segments_profiles(
    tmp_path: Path, server: FakeSegmentServer
) -> None:
    """`graph.source: segment`: the acknowledged traits follow Segment's own segment ids."""
    (tmp_path / "identity.yml").write_text(SEGMENT_YML)
    identity = load_identity(tmp_path)
    with (
        session_for("duckdb", tmp_path) as session,
        SegmentClient(server.url, WRITE_KEY, sleep=no_wait) as sender,
    ):
        landed(session)  # u1 was added to p2, which merged into p1; u5 is on p5
        people_table(session, [("u1", "ana@example.com", "pro"), ("u5", "cy@example.com", "free")])
        run_sync(session, people_spec(), sender, now=at(10))
        compute_identity(session, identity, [], [], at(11))
        compute_profiles_sync(session, identity, [people_spec()], at(11))
        assert set(
            session.query(
                "SELECT canonical_segment_id, email, plan, merged_to FROM profiles_sync.profile_traits"
            ).rows
        ) == {
            ("p1", "ana@example.com", "pro", None),
            ("p2", None, None, "p1"),
            ("p3", None, None, "p1"),
            ("p4", None, None, "p1"),
            ("p5", "cy@example.com", "free", None),
        }
