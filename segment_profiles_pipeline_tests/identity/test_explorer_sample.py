"""The sample warehouse's identity cases, seen through the explorer (docs/identity.md, README)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from segment_profiles_pipeline.identity.compute import compute_identity
from segment_profiles_pipeline.identity.explorer import explore
from segment_profiles_pipeline.models.sample_data import seed_missing
from segment_profiles_pipeline.project import load_project
from segment_profiles_pipeline.settings import PROJECT_ROOT
from segment_profiles_pipeline.warehouse.duckdb import DuckDBWarehouse
from segment_profiles_pipeline_tests.identity.test_explorer import IDENTITY

EVENTS = [("flex", "flex_engagement_initiated"), ("flex", "flex_engagement_completed")]


def test_sample_data_identity_cases(tmp_path: Path) -> None:
    users_identify = [
        s for s in load_project(PROJECT_ROOT / "models").mappings if s.mapping.name == "users_identify"
    ]
    with DuckDBWarehouse(database=str(tmp_path / "w.duckdb")).session() as session:
        seed_missing(session, 200)
        session.execute("CREATE SCHEMA models")
        session.execute("CREATE TABLE models.users AS SELECT * FROM app.users")
        compute_identity(session, IDENTITY, EVENTS, users_identify, dt.datetime(2026, 11, 2))
        ana = explore(session, IDENTITY, EVENTS, "email:ana@example.com", events=1000)
        guest = explore(session, IDENTITY, EVENTS, "user_id:u_0000002", events=1000)
        family = explore(session, IDENTITY, EVENTS, "email:family@example.com")
        placeholder = explore(session, IDENTITY, EVENTS, "user_id:u_0000003")
        anonymous_only = session.query(
            "SELECT count(*) FROM flex.flex_engagement_initiated WHERE user_id IS NULL AND anonymous_id = 'anon-0000000'"
        ).scalar()
        first_with_family = session.query(  # the identify call that arrived first (its updated_at)
            "SELECT user_id FROM app.users WHERE email = 'family@example.com' ORDER BY updated_at LIMIT 1"
        ).scalar()
    ids = {(i["type"], i["value"]) for i in ana.identifiers}
    assert ids == {("user_id", "u_0000001"), ("email", "ana@example.com"), ("anonymous_id", "anon-0000000")}
    # anonymous sessions on ana's device, later identified, are part of her profile
    assert anonymous_only > 0
    assert sum(e["via"] == "anonymous_id:anon-0000000" for e in ana.events) == 2 * anonymous_only
    # the shared device: u_0000002 signed in on it, but the device stays with ana
    assert ("anonymous_id", "anon-0000000") not in {(i["type"], i["value"]) for i in guest.identifiers}
    assert guest.events and {e["via"] for e in guest.events} == {"user_id:u_0000002"}
    # a shared email stays with the user whose identify call arrived first
    assert [i["value"] for i in family.identifiers if i["type"] == "user_id"] == [first_with_family]
    # blocked placeholder device ids ("anonymous") never become identifiers
    assert sorted(i["type"] for i in placeholder.identifiers) == ["email", "user_id"]
