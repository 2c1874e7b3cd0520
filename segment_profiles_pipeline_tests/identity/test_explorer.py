"""The profile explorer on a real graph built from hand-made events, on DuckDB and through fakesnow.

Expected values are written out by hand from the scenario below (see docs/identity.md, rules).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pytest

from segment_profiles_pipeline.config import MappingConfig
from segment_profiles_pipeline.identity.compute import compute_identity
from segment_profiles_pipeline.identity.config import IdentityFile, IdentityProject, rules_from
from segment_profiles_pipeline.identity.explorer import ExplorerError, explore
from segment_profiles_pipeline.identity.resolver import profile_id, set_key
from segment_profiles_pipeline.project import MappingSpec, SyncSource
from segment_profiles_pipeline.warehouse.base import WarehouseSession
from segment_profiles_pipeline.warehouse.duckdb import DuckDBWarehouse
from segment_profiles_pipeline_tests.traits.helpers import T0, ev, load_events
from segment_profiles_pipeline_tests.traits.test_recipes import snowflake_session

EVENTS = [("flex", "test_event")]
IDENTITY = IdentityProject(Path("identity.yml"), IdentityFile(), rules_from(IdentityFile()))
USERS_MAPPING = MappingSpec(
    SyncSource("users", ("users",), "models.users", "user_id", "users.yml"),
    MappingConfig.model_validate(
        {
            "name": "users_identify",
            "action": "identify",
            "user_id": "user_id",
            "traits": {"email": "email", "plan": "plan"},
            "timestamp": "updated_at",
        }
    ),
)
INITIATED = "Flex - Engagement Initiated"


def at(minute: int) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minute, seconds=1)


P1 = profile_id("m1", set_key([("anonymous_id", "a1")]))  # the device, later u1 / ana
P2 = profile_id("m2", set_key([("anonymous_id", "a2")]))  # u1's second device, merged into P1 by m4
P_U2 = profile_id("m5", set_key([("user_id", "u2"), ("anonymous_id", "a1")]))  # shared device: u2's own


def build_scenario(session: WarehouseSession, *, profiles_sync: bool = True) -> None:
    """Anonymous sessions later identified, a merge, a shared device, a blocked value, an identify call."""
    load_events(
        session,
        "flex.test_event",
        [
            ev("m1", anon="a1", minute=1, event_text=INITIATED),  # anonymous session on device a1
            ev("m2", anon="a2", minute=2, event_text=INITIATED),  # anonymous session on device a2
            ev("m3", user="u1", anon="a1", minute=3, event_text="Flex - Engagement Completed"),  # a1 is u1
            ev("m4", user="u1", anon="a2", minute=4, event_text=INITIATED),  # a2 too: P2 merges into P1
            ev("m5", user="u2", anon="a1", minute=5, event_text=INITIATED),  # u2 on u1's device: a1 demoted
            ev("m6", user="u3", anon="anonymous", minute=6, event_text=INITIATED),  # blocked anonymous id
            ev("m4", user="u1", anon="a2", minute=7, event_text="a late copy"),  # a copy of m4: listed once
        ],
    )
    session.execute("CREATE SCHEMA IF NOT EXISTS models")
    session.load(
        "models.users",
        pa.table(
            {
                "user_id": ["u1"],
                "email": ["ana@example.com"],
                "plan": ["pro"],
                "updated_at": pa.array([at(10)], pa.timestamp("us")),
            }
        ),
        create=True,
    )
    compute_identity(session, IDENTITY, EVENTS, [USERS_MAPPING], T0 + dt.timedelta(days=1))
    if profiles_sync:
        # The Profiles Sync tables' shape (profiles_sync package): one row per canonical profile and
        # one column per trait, plus the sidecar with each trait's source and time.
        session.execute("CREATE SCHEMA IF NOT EXISTS profiles_sync")
        session.execute(
            "CREATE TABLE profiles_sync.profile_traits (segment_id VARCHAR, canonical_segment_id VARCHAR, "
            "merged_to VARCHAR, user_id VARCHAR, email VARCHAR, plan VARCHAR, total_inbounds BIGINT)"
        )
        session.execute(
            f"INSERT INTO profiles_sync.profile_traits VALUES ('{P1}', '{P1}', NULL, 'u1', 'ana@example.com', 'pro', 3)"
        )
        session.execute(
            "CREATE TABLE _segment_profiles.profile_trait_sources (segment_id VARCHAR, trait VARCHAR, "
            "value_json VARCHAR, source VARCHAR, updated_at TIMESTAMP, dry_run BOOLEAN)"
        )
        session.execute(
            "INSERT INTO _segment_profiles.profile_trait_sources VALUES "
            f"('{P1}', 'plan', '\"free\"', 'users_identify', '2026-01-01 00:05:00', FALSE), "
            f"('{P1}', 'plan', '\"pro\"', 'users_identify', '2026-01-01 00:10:01', FALSE), "
            f"('{P1}', 'email', '\"ana@example.com\"', 'users_identify', '2026-01-01 00:10:01', FALSE), "
            f"('{P1}', 'total_inbounds', '3', 'computed_traits_identify', '2026-01-02 00:00:00', TRUE), "
            f"('{P_U2}', 'plan', '\"free\"', 'users_identify', '2026-01-01 00:06:00', FALSE)"
        )


@contextmanager
def duckdb(tmp_path: Path) -> Iterator[WarehouseSession]:
    with DuckDBWarehouse(database=str(tmp_path / "w.duckdb")).session() as session:
        yield session


def identify_message(session: WarehouseSession) -> str:
    """The identify record's message id (``users_identify:u1:<md5>``, built by the graph)."""
    return session.query(
        "SELECT triggering_event_id FROM identity.external_id_mapping WHERE external_id_type = 'email'"
    ).scalar()


def check_ana(session: WarehouseSession) -> None:
    view = explore(session, IDENTITY, EVENTS, "email:ana@example.com")
    identify = identify_message(session)
    assert identify.startswith("users_identify:u1:")
    assert view.segment_id == P1
    assert view.segment_ids == [P1, P2]
    assert [(i["type"], i["value"], i["triggering_event_id"], i["added_to"]) for i in view.identifiers] == [
        ("anonymous_id", "a1", "m1", P1),
        ("anonymous_id", "a2", "m2", P2),
        ("user_id", "u1", "m3", P1),
        ("email", "ana@example.com", identify, P1),
    ]
    assert [(m["segment_id"], m["merged_into"], m["triggering_event_id"]) for m in view.merges] == [
        (P2, P1, "m4")
    ]
    assert view.traits == [
        {
            "trait": "email",
            "value": "ana@example.com",
            "source": "users_identify",
            "updated_at": dt.datetime(2026, 1, 1, 0, 10, 1),
            "dry_run": False,
        },
        {
            "trait": "plan",  # the latest of its two rows
            "value": "pro",
            "source": "users_identify",
            "updated_at": dt.datetime(2026, 1, 1, 0, 10, 1),
            "dry_run": False,
        },
        {
            "trait": "total_inbounds",
            "value": 3,
            "source": "computed_traits_identify",
            "updated_at": dt.datetime(2026, 1, 2),
            "dry_run": True,
        },
    ]
    # Newest first; m5 (u2 on u1's device) belongs to u2's profile, m6 to u3's: neither is here.
    assert [(e["message_id"], e["source"], e["event"], e["via"]) for e in view.events] == [
        (identify, "identify (users_identify)", "identify", "user_id:u1"),
        ("m4", "flex.test_event", INITIATED, "user_id:u1"),
        ("m3", "flex.test_event", "Flex - Engagement Completed", "user_id:u1"),
        ("m2", "flex.test_event", INITIATED, "anonymous_id:a2"),
        ("m1", "flex.test_event", INITIATED, "anonymous_id:a1"),
    ]
    assert view.events[1]["received_at"] == at(4)
    assert view.notes == [
        "traits marked dry run come from what a dry run would send: Segment has not received them."
    ]


def test_explore_a_profile_by_email(tmp_path: Path) -> None:
    with duckdb(tmp_path) as session:
        build_scenario(session)
        check_ana(session)


def test_explore_on_snowflake_through_fakesnow() -> None:
    with snowflake_session() as session:
        build_scenario(session)
        check_ana(session)
        with pytest.raises(ExplorerError, match=r"Close matches: email:ana@example\.com\."):
            explore(session, IDENTITY, EVENTS, "email:ana@exmple.com")


@pytest.mark.parametrize(
    "lookup",
    ["user_id:u1", "anonymous_id:a2", f"segment_id:{P2}", "EMAIL: ana@example.com "],
    ids=["user_id", "merged-away device", "merged-away segment id", "type in any case, spaces"],
)
def test_every_identifier_of_the_profile_finds_it(tmp_path: Path, lookup: str) -> None:
    with duckdb(tmp_path) as session:
        build_scenario(session)
        assert explore(session, IDENTITY, EVENTS, lookup).segment_id == P1


def test_shared_device_and_event_limit(tmp_path: Path) -> None:
    with duckdb(tmp_path) as session:
        build_scenario(session)
        u2 = explore(session, IDENTITY, EVENTS, "user_id:u2")
        latest = explore(session, IDENTITY, EVENTS, "user_id:u1", events=2)
    assert u2.segment_id == P_U2
    assert [(i["type"], i["value"]) for i in u2.identifiers] == [("user_id", "u2")]
    assert [(e["message_id"], e["via"]) for e in u2.events] == [("m5", "user_id:u2")]
    assert [t["trait"] for t in u2.traits or []] == ["plan"]
    assert u2.notes == [] and u2.merges == []
    assert [e["message_id"] for e in latest.events] == [identify_message_from(latest), "m4"]


def identify_message_from(view) -> str:
    return next(i["triggering_event_id"] for i in view.identifiers if i["type"] == "email")


def test_custom_identifier_type(tmp_path: Path) -> None:
    identity = IdentityProject(
        Path("identity.yml"),
        custom := IdentityFile.model_validate({"identifiers": [{"type": "phone", "limit": 2}]}),
        rules_from(custom),
    )
    with duckdb(tmp_path) as session:
        load_events(
            session,
            "flex.test_event",
            [
                ev("c1", anon="d1", minute=1, phone="+15550001"),
                ev("c2", user="u7", phone="+15550001", minute=2),
            ],
        )
        compute_identity(session, identity, EVENTS, [], T0 + dt.timedelta(days=1))
        view = explore(session, identity, EVENTS, "phone:+15550001")
    assert [(i["type"], i["value"]) for i in view.identifiers] == [
        ("anonymous_id", "d1"),
        ("phone", "+15550001"),
        ("user_id", "u7"),
    ]
    assert [(e["message_id"], e["via"]) for e in view.events] == [
        ("c2", "user_id:u7"),
        ("c1", "anonymous_id:d1"),
    ]


def test_without_profiles_sync_tables_traits_say_what_to_run(tmp_path: Path) -> None:
    with duckdb(tmp_path) as session:
        build_scenario(session, profiles_sync=False)
        view = explore(session, IDENTITY, EVENTS, "user_id:u1")
    assert view.traits is None
    assert view.notes == [
        "traits are not available: profiles_sync.profile_traits, _segment_profiles.profile_trait_sources not "
        "built yet; run the profiles_sync assets first (dg launch --assets 'profiles_sync/*')."
    ]
    assert "Traits: not available" in view.text()
    assert len(view.identifiers) == 4  # the rest still works


@pytest.mark.parametrize(
    ("lookup", "code", "message"),
    [
        (
            "ana@example.com",
            "malformed_lookup",
            "malformed lookup 'ana@example.com': write it as <type>:<value>",
        ),
        ("email:", "malformed_lookup", "malformed lookup 'email:'"),
        ("mail:ana@example.com", "unknown_identifier_type", "unknown identifier type 'mail'"),
        ("mail:ana@example.com", "unknown_identifier_type", "Did you mean 'email'?"),
        (
            "anonymous_id:Anonymous",
            "blocked_value",
            "'Anonymous' is a blocked value (identity.yml, blocked_values)",
        ),
        (
            "email:ana@exampel.com",
            "no_such_profile",
            "no profile has email:ana@exampel.com. Close matches: email:ana@example.com.",
        ),
        ("user_id:ana@example.com", "no_such_profile", "Close matches: email:ana@example.com."),
        ("user_id:zzzzzzzzzzzzzz", "no_such_profile", "Nothing close to it is in the graph either"),
        (f"segment_id:{P1}x", "no_such_profile", f"no profile has segment_id:{P1}x."),
    ],
)
def test_errors_name_the_problem_and_the_fix(tmp_path: Path, lookup: str, code: str, message: str) -> None:
    with duckdb(tmp_path) as session:
        build_scenario(session, profiles_sync=False)
        with pytest.raises(ExplorerError) as caught:
            explore(session, IDENTITY, EVENTS, lookup)
    assert caught.value.code == code
    assert message in str(caught.value)


def test_graph_not_built(tmp_path: Path) -> None:
    with duckdb(tmp_path) as session, pytest.raises(ExplorerError) as caught:
        explore(session, IDENTITY, EVENTS, "email:ana@example.com")
    assert caught.value.code == "graph_not_built"
    assert "identity.id_graph, identity.external_id_mapping, identity.profile_merges missing" in str(
        caught.value
    )
    assert "dg launch --assets 'identity/*'" in str(caught.value)


def test_traits_come_from_the_configured_profiles_sync_schema(tmp_path: Path) -> None:
    config = IdentityFile.model_validate({"profiles_sync": {"schema": "ps_custom"}})
    identity = IdentityProject(Path("identity.yml"), config, rules_from(config))
    with duckdb(tmp_path) as session:
        build_scenario(session)  # writes profiles_sync.profile_traits, not ps_custom's
        missing = explore(session, identity, EVENTS, "user_id:u1")
        session.execute("CREATE SCHEMA ps_custom")
        session.execute("CREATE TABLE ps_custom.profile_traits AS SELECT * FROM profiles_sync.profile_traits")
        found = explore(session, identity, EVENTS, "user_id:u1")
    assert missing.traits is None
    assert missing.notes[0].startswith("traits are not available: ps_custom.profile_traits not built yet")
    assert [t["trait"] for t in found.traits or []] == ["email", "plan", "total_inbounds"]
