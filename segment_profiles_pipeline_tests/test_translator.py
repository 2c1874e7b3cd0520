"""The translator hook (groups, owners, tags, freshness of the generated assets) and the freshness
policies it derives from each mapping's schedule."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from dagster import AssetKey, AssetSpec, FreshnessPolicy

from segment_profiles_pipeline.config import MappingConfig
from segment_profiles_pipeline.errors import ConfigError
from segment_profiles_pipeline.project import MappingSpec
from segment_profiles_pipeline.translator import SegmentProfilesTranslator, longest_gap, schedule_freshness

SYNC = AssetKey(["profile_sync", "users_identify"])


def _mapping(**schedule: object) -> MappingConfig:
    return MappingConfig.model_validate(
        {"name": "m", "action": "identify", "user_id": "user_id", "traits": {"email": "email"}, **schedule}
    )


@pytest.mark.parametrize(
    ("cron", "timezone", "gap"),
    [
        ("0 * * * *", "UTC", dt.timedelta(hours=1)),
        ("*/15 * * * *", "UTC", dt.timedelta(minutes=15)),
        ("0 6 * * 1,5", "UTC", dt.timedelta(days=4)),  # Mon → Fri is the longer of the two gaps
        ("0 1,22 * * *", "UTC", dt.timedelta(hours=21)),  # 01:00 → 22:00; overnight 22:00 → 01:00 is 3 h
        ("0 6,18 * * 1,5", "Europe/Berlin", dt.timedelta(days=3, hours=12)),  # Mon 18:00 → Fri 06:00
        ("0 0 31 * *", "UTC", dt.timedelta(days=61)),  # Aug 31 → Oct 31
        ("0 12 * * 5#1", "UTC", dt.timedelta(days=35)),  # first Fridays: Jan 2 → Feb 6 2026
        ("0 0 29 2 *", "UTC", dt.timedelta(days=4 * 365 + 1)),  # 2028-02-29 → 2032-02-29, past the horizon
        # Berlin 2026: clocks go 02:00 CET → 03:00 CEST on Sun Mar 29, 03:00 CEST → 02:00 CET on Sun Oct 25
        ("0 6 * * *", "Europe/Berlin", dt.timedelta(hours=25)),  # Sat Oct 24 04:00Z → Sun Oct 25 05:00Z
        ("0 6 * * 1", "Europe/Berlin", dt.timedelta(days=7, hours=1)),  # Mon Oct 19 04:00Z → Oct 26 05:00Z
        # hour field `*`: Dagster runs the repeated 02:30 twice (00:30Z, 01:30Z) and skips Mar 29's 02:30
        ("30 * * * *", "Europe/Berlin", dt.timedelta(hours=1)),
        # otherwise a repeated time runs once, at its later occurrence: Oct 25 02:30 CET (01:30Z) →
        # Mon Oct 25 2027 02:30 CEST (00:30Z; 2027's change is Oct 31)
        ("30 2 25 10 *", "Europe/Berlin", dt.timedelta(days=364, hours=23)),
        # and a skipped time runs when the clocks jump: Mar 29 03:00 CEST (01:00Z) → 2027-03-29 02:30
        # CEST (00:30Z; 2027's change is Mar 28)
        ("30 2 29 3 *", "Europe/Berlin", dt.timedelta(days=364, hours=23, minutes=30)),
        # New York's change is Sun Nov 1, 02:00: Nov 1 00:00 EDT (04:00Z) → Nov 8 00:00 EST (05:00Z)
        ("0 0 * * 0", "America/New_York", dt.timedelta(days=7, hours=1)),
    ],
)
def test_longest_gap_between_ticks(cron: str, timezone: str, gap: dt.timedelta) -> None:
    assert longest_gap(cron, timezone) == gap


def test_a_cron_with_a_seconds_field_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"'0 0 \* \* \* 0' has 6 fields; a Dagster schedule takes five"):
        longest_gap("0 0 * * * 0", "UTC")


def test_a_scheduled_mapping_warns_after_one_gap_and_fails_after_two() -> None:
    hourly = schedule_freshness(_mapping(schedule={"interval": "1h", "timezone": "Europe/Berlin"}))
    assert hourly == FreshnessPolicy.time_window(
        fail_window=dt.timedelta(hours=2), warn_window=dt.timedelta(hours=1)
    )
    twice_a_week = schedule_freshness(_mapping(schedule={"days": ["mon", "fri"], "hours": [6]}))
    assert twice_a_week == FreshnessPolicy.time_window(
        fail_window=dt.timedelta(days=8), warn_window=dt.timedelta(days=4)
    )


def test_manual_and_disabled_mappings_promise_no_freshness() -> None:
    assert schedule_freshness(_mapping(schedule={"manual": True})) is None
    assert schedule_freshness(_mapping(schedule={"interval": "1h"}, enabled=False)) is None


def test_the_default_translator_keeps_the_project_and_adds_freshness_to_scheduled_syncs(
    sample_models: Path, settings_for, build
) -> None:
    graph = build(settings_for(sample_models)).resolve_asset_graph()
    assert graph.get(SYNC).freshness_policy == FreshnessPolicy.time_window(
        fail_window=dt.timedelta(hours=2), warn_window=dt.timedelta(hours=1)
    )  # models/users.yml: users_identify, interval 1h
    assert graph.get(AssetKey("users")).freshness_policy is None
    assert (
        graph.get(SYNC).group_name == "profile_sync" and graph.get(AssetKey("users")).group_name == "models"
    )
    assert graph.get(SYNC).owners == []


class CrmTranslator(SegmentProfilesTranslator):
    """What a user writes: owners and a tag on every sync, models in their own group, no freshness."""

    def get_asset_spec(self, default: AssetSpec, mapping: MappingSpec | None) -> AssetSpec:
        spec = super().get_asset_spec(default, mapping)
        if mapping is not None:
            return spec.replace_attributes(
                owners=["team:crm"], tags={**spec.tags, "segment_action": mapping.mapping.action}
            )
        if spec.group_name == "models":
            return spec.replace_attributes(group_name="crm_models")
        return spec

    def get_freshness_policy(self, mapping: MappingSpec) -> FreshnessPolicy | None:
        return None


def test_a_subclass_sets_owners_tags_groups_and_freshness(sample_models: Path, settings_for) -> None:
    from segment_profiles_pipeline.definitions import build_definitions

    defs = build_definitions(settings_for(sample_models), translator=CrmTranslator())
    graph = defs.resolve_asset_graph()
    sync = graph.get(SYNC)
    assert sync.owners == ["team:crm"] and sync.tags["segment_action"] == "identify"
    assert sync.freshness_policy is None
    assert graph.get(AssetKey("users")).group_name == "crm_models"
    assert (
        graph.get(AssetKey(["profile_sync", "account_memberships_group"])).tags["segment_action"] == "group"
    )
    # schedules, sensors and jobs still resolve against the translated assets
    repository = defs.get_repository_def()
    assert {s.name for s in repository.schedule_defs} >= {"users_identify_schedule"}


class RenamingTranslator(SegmentProfilesTranslator):
    def get_asset_spec(self, default: AssetSpec, mapping: MappingSpec | None) -> AssetSpec:
        return default.replace_attributes(key=default.key.with_prefix("crm")) if mapping else default


def test_a_key_changed_in_get_asset_spec_fails_the_load_pointing_to_get_asset_key(
    sample_models: Path, settings_for
) -> None:
    from segment_profiles_pipeline.definitions import build_definitions

    with pytest.raises(
        ConfigError, match=r"translator: RenamingTranslator.get_asset_spec changed the key of "
    ) as info:
        build_definitions(settings_for(sample_models), translator=RenamingTranslator())
    assert "RenamingTranslator.get_asset_key" in str(info.value)


class PrefixTranslator(SegmentProfilesTranslator):
    """Every generated asset under ``segment/…`` (what a user sharing a deployment with dbt does)."""

    def get_asset_key(self, default: AssetKey, mapping: MappingSpec | None) -> AssetKey:
        return AssetKey(["segment", *default.path])


PREFIXED_SYNC = AssetKey(["segment", *SYNC.path])


def _prefixed(key: AssetKey) -> AssetKey:
    return AssetKey(["segment", *key.path])


def test_prefixed_keys_reach_every_asset_dep_check_job_and_schedule(
    sample_models: Path, settings_for
) -> None:
    from segment_profiles_pipeline.definitions import build_definitions

    default = build_definitions(settings_for(sample_models)).resolve_asset_graph()
    defs = build_definitions(settings_for(sample_models), translator=PrefixTranslator())
    graph = defs.resolve_asset_graph()
    # the same assets, each under its prefixed key, with the same deps and checks
    assert set(graph.get_all_asset_keys()) == {_prefixed(k) for k in default.get_all_asset_keys()}
    for key in default.get_all_asset_keys():
        node = graph.get(_prefixed(key))
        assert node.parent_keys == {_prefixed(k) for k in default.get(key).parent_keys}, key
        assert {(c.asset_key, c.name) for c in map(graph.get_check_spec, node.check_keys)} == {
            (_prefixed(key), c.name) for c in map(default.get_check_spec, default.get(key).check_keys)
        }, key
    assert graph.get(PREFIXED_SYNC).parent_keys == {AssetKey(["segment", "users"])}
    assert "profile_readback" in {c.name for c in graph.get(PREFIXED_SYNC).check_keys}
    # the default translator's freshness policy still finds the (translated) sync's mapping
    assert graph.get(PREFIXED_SYNC).freshness_policy is not None
    schedule = defs.resolve_schedule_def("users_identify_schedule")
    job = defs.resolve_job_def(schedule.job_name)
    assert set(job.asset_layer.selected_asset_keys) == {AssetKey(["segment", "users"]), PREFIXED_SYNC}
    defs.resolve_job_def("users_identify_test_mapping")  # builds: its observation names the new key


def test_prefixed_definitions_materialize_and_sensors_request_the_new_keys(
    sample_models: Path, settings_for, warehouse
) -> None:
    from dagster import DagsterInstance

    from segment_profiles_pipeline.definitions import build_definitions
    from segment_profiles_pipeline_tests.automation.test_source_sensor import execute, tick
    from segment_profiles_pipeline_tests.conftest import materialize_all

    settings = settings_for(sample_models)
    defs = build_definitions(settings, translator=PrefixTranslator())
    instance = DagsterInstance.ephemeral()
    result = materialize_all(defs, instance)  # no write key: every sync is a dry run
    assert result.success
    materialized = {e.asset_key for e in result.get_asset_materialization_events()}
    assert PREFIXED_SYNC in materialized and all(k.path[0] == "segment" for k in materialized)
    # the warehouse state is keyed by mapping name, whatever the asset key
    with warehouse.session() as session:
        mappings = {r[0] for r in session.query("SELECT mapping FROM _segment_profiles.sync_history").rows}
    assert "users_identify" in mappings
    # a schedule's run targets the new keys
    schedule = defs.resolve_schedule_def("users_identify_schedule")
    run = defs.resolve_job_def(schedule.job_name).execute_in_process(instance=instance, raise_on_error=False)
    assert run.success
    assert {e.asset_key for e in run.get_asset_materialization_events()} == {
        AssetKey(["segment", "users"]),
        PREFIXED_SYNC,
    }
    # the source sensor's run request too
    first = tick(defs, warehouse, None)
    execute(
        settings.duckdb_database,
        "INSERT INTO app.accounts (account_id, name, updated_at) VALUES ('acc_new', 'New', now())",
    )
    [request] = tick(defs, warehouse, first.cursor).run_requests or []
    assert set(request.asset_selection or []) == {
        AssetKey(["segment", "account_memberships"]),
        AssetKey(["segment", "profile_sync", "account_memberships_group"]),
    }


class SourceNamedSyncs(SegmentProfilesTranslator):
    """A mistake: every sync takes the key of the model it reads."""

    def get_asset_key(self, default: AssetKey, mapping: MappingSpec | None) -> AssetKey:
        return AssetKey(list(mapping.source.asset_key)) if mapping else default


def test_two_assets_translated_to_one_key_fail_the_load_naming_both(
    sample_models: Path, settings_for
) -> None:
    from segment_profiles_pipeline.definitions import build_definitions

    with pytest.raises(ConfigError) as info:
        build_definitions(settings_for(sample_models), translator=SourceNamedSyncs())
    message = str(info.value)
    assert message.startswith(
        "translator: SourceNamedSyncs.get_asset_key gives two generated assets the key account_memberships: "
        "account_memberships and profile_sync/account_memberships_group."
    ), message


class NotAKey(SegmentProfilesTranslator):
    def get_asset_key(self, default: AssetKey, mapping: MappingSpec | None) -> AssetKey:
        return "/".join(default.path)  # type: ignore[return-value]


def test_a_key_that_is_not_an_asset_key_fails_the_load(sample_models: Path, settings_for) -> None:
    from segment_profiles_pipeline.definitions import build_definitions

    with pytest.raises(
        ConfigError,
        match=r"NotAKey.get_asset_key returned 'computed_traits' for computed_traits, not an AssetKey",
    ):
        build_definitions(settings_for(sample_models), translator=NotAKey())


def test_a_broken_model_stub_and_an_upstream_key_under_a_translator(models_dir: Path, settings_for) -> None:
    from segment_profiles_pipeline.definitions import build_definitions
    from segment_profiles_pipeline_tests.conftest import write
    from segment_profiles_pipeline_tests.models.test_lenient_load import BROKEN
    from segment_profiles_pipeline_tests.models.test_upstream_sources import UPSTREAM, UPSTREAM_YML

    write(models_dir, {**BROKEN, "upstream.yml": UPSTREAM_YML})
    graph = build_definitions(
        settings_for(models_dir, sample_data=False), strict=False, translator=PrefixTranslator()
    ).resolve_asset_graph()
    # the stubs take the translated keys; another project's asset keeps the key it was declared with
    assert {AssetKey(["segment", "broken"]), AssetKey(["segment", "profile_sync", "broken_identify"])} <= set(
        graph.get_all_asset_keys()
    )
    assert graph.get(AssetKey(["segment", "profile_sync", "crm_identify"])).parent_keys == {UPSTREAM}


def test_the_automation_sensor_requests_the_translated_sync(models_dir: Path, settings_for) -> None:
    from dagster import DagsterInstance, evaluate_automation_conditions

    from segment_profiles_pipeline.automation.automation_sensor import AUTOMATION_SENSOR
    from segment_profiles_pipeline.definitions import build_definitions
    from segment_profiles_pipeline_tests.automation.test_conditions import FOLLOWS, PEOPLE, people
    from segment_profiles_pipeline_tests.conftest import materialize_all, write

    write(models_dir, people())
    defs = build_definitions(settings_for(models_dir), translator=PrefixTranslator())
    sensor = defs.resolve_sensor_def(AUTOMATION_SENSOR)
    assert sensor.asset_selection.resolve(defs.resolve_asset_graph()) == {_prefixed(FOLLOWS)}  # type: ignore[union-attr]
    instance = DagsterInstance.ephemeral()
    assert materialize_all(defs, instance).success
    first = evaluate_automation_conditions(defs, instance)
    job = defs.resolve_implicit_global_asset_job_def()
    assert job.execute_in_process(instance=instance, asset_selection=[_prefixed(PEOPLE)]).success
    after_model = evaluate_automation_conditions(defs, instance, cursor=first.cursor)
    assert after_model.total_requested == 1
    assert after_model.get_requested_partitions(_prefixed(FOLLOWS)) == {None}


class RawSources(SegmentProfilesTranslator):
    def get_asset_spec(self, default: AssetSpec, mapping: MappingSpec | None) -> AssetSpec:
        spec = super().get_asset_spec(default, mapping)
        return spec.replace_attributes(group_name="raw") if spec.group_name == "sources" else spec


def test_a_renamed_sources_group_leaves_the_schedules_selection_alone(
    sample_models: Path, settings_for
) -> None:
    from segment_profiles_pipeline.definitions import build_definitions

    defs = build_definitions(settings_for(sample_models), translator=RawSources())
    assert defs.resolve_asset_graph().get(AssetKey(["app", "users"])).group_name == "raw"
    job = defs.resolve_job_def(defs.resolve_schedule_def("users_identify_schedule").job_name)
    assert set(job.asset_layer.selected_asset_keys) == {AssetKey("users"), SYNC}  # no source table
