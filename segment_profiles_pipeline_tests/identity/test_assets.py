"""The identity assets in the shipped project: materialize on sample data, checks pass, sample cases resolve."""

from __future__ import annotations

from dagster import AssetKey

from segment_profiles_pipeline.warehouse.duckdb import DuckDBWarehouse
from segment_profiles_pipeline_tests.conftest import materialize_all


def owner(session, kind: str, value: str) -> str | None:
    return session.query(
        "SELECT canonical_segment_id FROM identity.external_id_mapping "
        f"WHERE external_id_type = '{kind}' AND external_id_value = '{value}'"
    ).scalar()


def test_identity_assets_on_sample_data(
    sample_models, settings_for, build, warehouse: DuckDBWarehouse
) -> None:
    defs = build(settings_for(sample_models))
    result = materialize_all(defs)
    assert result.success
    checks = {(e.asset_key, e.check_name): e.passed for e in result.get_asset_check_evaluations()}
    key = AssetKey(["identity", "external_id_mapping"])
    assert checks[(key, "identifier_limits")] and checks[(key, "identifier_in_one_profile")]
    meta = result.asset_materializations_for_node("identity_graph")[0].metadata
    assert meta["mode"].value == "full" and "preview" in meta
    with warehouse.session() as session:
        # the shared device stays with the first user seen on it; the second user has a profile of its own
        device = owner(session, "anonymous_id", "anon-0000000")
        assert device is not None and device != owner(session, "user_id", "u_0000002")
        # blocked placeholders are never identifiers
        assert owner(session, "anonymous_id", "anonymous") is None
        assert owner(session, "anonymous_id", "00000000-0000-0000-0000-000000000000") is None
        # the shared email belongs to exactly one of its two users' profiles
        family = owner(session, "email", "family@example.com")
        assert [family == owner(session, "user_id", u) for u in ("u_0000010", "u_0000011")].count(True) == 1
        # anonymous sessions later identified joined their user's profile
        joined = session.query(
            "SELECT count(*), count(*) FILTER (WHERE a.canonical_segment_id <> u.canonical_segment_id) "
            "FROM (SELECT DISTINCT e.anonymous_id, e.user_id FROM flex.flex_engagement_initiated AS e "
            "  WHERE e.user_id IS NOT NULL AND e.anonymous_id IN (SELECT anonymous_id FROM flex.flex_engagement_initiated "
            "  WHERE user_id IS NULL) AND e.anonymous_id <> 'anon-0000000') AS p "
            "JOIN identity.external_id_mapping AS a ON a.external_id_type = 'anonymous_id' AND a.external_id_value = p.anonymous_id "
            "JOIN identity.external_id_mapping AS u ON u.external_id_type = 'user_id' AND u.external_id_value = p.user_id"
        ).rows[0]
        assert joined[0] > 50 and joined[1] == 0
        users_per_profile = session.query(
            "SELECT max(n) FROM (SELECT count(*) AS n FROM identity.external_id_mapping "
            "WHERE external_id_type = 'user_id' GROUP BY canonical_segment_id) AS c"
        ).scalar()
        assert users_per_profile == 1
    again = materialize_all(defs)
    assert again.asset_materializations_for_node("identity_graph")[0].metadata["mode"].value == "incremental"
