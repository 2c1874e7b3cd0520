"""The profiles_sync asset in the shipped project: live syncs over real HTTP, and dry runs."""

from __future__ import annotations

import duckdb
import pytest
from dagster import AssetKey, DagsterInstance

from segment_profiles_pipeline.testing.segment_server import FakeSegmentServer
from segment_profiles_pipeline_tests.conftest import materialize_all

WRITE_KEY = "wk-profiles-sync-assets"


def _checks(result) -> dict[str, bool]:
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}


def _appended(result) -> dict[str, int]:
    out = {}
    for event in result.get_asset_materialization_events():
        materialization = event.materialization
        if (
            materialization.asset_key.path[0] == "profiles_sync"
            and "rows_appended" in materialization.metadata
        ):
            out[materialization.asset_key.path[1]] = materialization.metadata["rows_appended"].value
    return out


def test_live_syncs_land_acknowledged_traits_and_a_rerun_appends_nothing(
    monkeypatch: pytest.MonkeyPatch, sample_models, settings_for, build, db_path
) -> None:
    with FakeSegmentServer(write_key=WRITE_KEY) as server:
        monkeypatch.setenv("SEGMENT_WRITE_KEY", WRITE_KEY)
        monkeypatch.setenv("SEGMENT_ENDPOINT", server.url)
        defs = build(settings_for(sample_models, sample_users=60))
        instance = DagsterInstance.ephemeral()
        first = materialize_all(defs, instance)
        assert first.success
        assert _checks(first) == {
            **_checks(first),
            "latest_update_is_current_state": True,
            "acknowledged_traits_on_profiles": True,
        }
        assert _appended(first)["profile_traits_updates"] > 0
        second = materialize_all(defs, instance)
        assert second.success
        assert _appended(second) == {
            "id_graph_updates": 0,
            "external_id_mapping_updates": 0,
            "profile_traits_updates": 0,
        }
        sent = {
            (m["userId"], k, v)
            for m in server.messages
            if m["type"] == "identify" and "userId" in m
            for k, v in m["traits"].items()
            if k == "plan"
        }
    with duckdb.connect(str(db_path), read_only=True) as con:
        assert con.execute(
            "SELECT count(*) FROM _segment_profiles.profile_trait_sources WHERE dry_run"
        ).fetchone() == (0,)
        landed = set(
            con.execute(
                "SELECT m.external_id_value, 'plan', t.plan FROM profiles_sync.profile_traits AS t "
                "JOIN identity.external_id_mapping AS m ON m.canonical_segment_id = t.canonical_segment_id "
                "AND m.external_id_type = 'user_id' WHERE t.plan IS NOT NULL"
            ).fetchall()
        )
    assert landed and landed <= sent  # every landed plan is a value Segment acknowledged


def test_a_dry_run_fills_traits_from_the_outbox_flagged(sample_models, settings_for, build, db_path) -> None:
    defs = build(settings_for(sample_models, sample_users=60))
    assert materialize_all(defs).success
    with duckdb.connect(str(db_path), read_only=True) as con:
        flags = con.execute("SELECT DISTINCT dry_run FROM _segment_profiles.profile_trait_sources").fetchall()
        rows = con.execute(
            "SELECT count(*) FROM profiles_sync.profile_traits_updates WHERE context_dry_run"
        ).fetchone()
    assert flags == [(True,)]
    assert rows[0] > 0


def test_profiles_sync_can_be_turned_off(sample_models, settings_for, build) -> None:
    (sample_models / "identity.yml").write_text("profiles_sync: {enabled: false}\n")
    keys = build(settings_for(sample_models)).resolve_asset_graph().get_all_asset_keys()
    assert not any(k.path[0] == "profiles_sync" for k in keys)
    assert AssetKey(["identity", "id_graph"]) in keys
