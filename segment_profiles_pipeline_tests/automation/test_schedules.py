"""Schedules per mapping: names, cron, time zone, default status, and what a scheduled run materializes."""

import datetime as dt
from pathlib import Path

import pytest
from dagster import (
    AssetKey,
    DagsterInstance,
    DefaultScheduleStatus,
    Definitions,
    ScheduleDefinition,
    build_schedule_context,
)

from segment_profiles_pipeline.automation.schedules import build_schedules
from segment_profiles_pipeline.errors import ConfigError
from segment_profiles_pipeline.project import load_project
from segment_profiles_pipeline_tests.conftest import materialize_all, write

SYNC_USERS = AssetKey(["profile_sync", "users_identify"])


def with_schedules(base: Definitions, models: Path) -> Definitions:
    """The project's assets and resources with only the schedules under test (whatever definitions.py wires)."""
    graph = base.resolve_asset_graph()
    sources = [k for k in graph.get_all_asset_keys() if graph.get(k).group_name == "sources"]
    schedules = build_schedules(load_project(models).mappings, sources)
    return Definitions(
        assets=base.assets, resources=base.resources, executor=base.executor, schedules=schedules
    )


def scheduled_assets(defs: Definitions, schedule: ScheduleDefinition) -> set[AssetKey]:
    return set(defs.resolve_job_def(schedule.job_name).asset_layer.selected_asset_keys)


def test_sample_project_schedules(sample_models, settings_for, build) -> None:
    defs = with_schedules(build(settings_for(sample_models)), sample_models)
    schedules = {s.name: s for s in defs.schedules}
    assert sorted(schedules) == [
        "account_memberships_group_schedule",
        "subscriptions_identify_schedule",
        "users_identify_schedule",
    ]
    users = schedules["users_identify_schedule"]
    assert (users.cron_schedule, users.execution_timezone, users.default_status) == (
        "0 * * * *",
        "UTC",
        DefaultScheduleStatus.RUNNING,
    )
    # the sync and the model it reads; never the source tables or the sample-data generator
    assert scheduled_assets(defs, users) == {AssetKey("users"), SYNC_USERS}
    assert scheduled_assets(defs, schedules["account_memberships_group_schedule"]) == {
        AssetKey("account_memberships"),
        AssetKey(["profile_sync", "account_memberships_group"]),
    }
    with build_schedule_context(
        scheduled_execution_time=dt.datetime(2026, 11, 2, 9, tzinfo=dt.UTC)
    ) as context:
        [request] = users.evaluate_tick(context).run_requests or []
    assert request.tags["dagster/schedule_name"] == "users_identify_schedule"


def test_a_scheduled_run_refreshes_the_model_then_syncs(sample_models, settings_for, build) -> None:
    defs = with_schedules(build(settings_for(sample_models)), sample_models)
    instance = DagsterInstance.ephemeral()
    assert materialize_all(defs, instance).success  # sources exist from here on
    schedule = next(s for s in defs.schedules if s.name == "users_identify_schedule")
    result = defs.resolve_job_def(schedule.job_name).execute_in_process(
        instance=instance, raise_on_error=False
    )
    assert result.success
    assert {e.asset_key for e in result.get_asset_materialization_events()} == {AssetKey("users"), SYNC_USERS}


PEOPLE = {
    "people.sql": "SELECT user_id, email FROM models.users",
    "people.yml": """
        primary_key: user_id
        mappings:
          - name: people_twice_weekly
            action: identify
            user_id: user_id
            enabled: false
            schedule:
              days: [fri, mon]
              hours: [18, 6]
              timezone: Europe/Berlin
          - name: people_cron
            action: identify
            user_id: user_id
            schedule:
              cron: "30 2 * * *"
              timezone: America/New_York
          - name: people_manual
            action: identify
            user_id: user_id
            schedule: manual
          - name: people_sharded
            action: identify
            user_id: user_id
            shards: 3
            schedule:
              interval: 15m
    """,
}


def test_kinds_of_schedule_status_and_upstream_models(sample_models, settings_for, build) -> None:
    write(sample_models, PEOPLE)
    defs = with_schedules(build(settings_for(sample_models)), sample_models)
    schedules = {s.name: s for s in defs.schedules}
    assert "people_manual_schedule" not in schedules  # manual: only a person starts it
    weekly = schedules["people_twice_weekly_schedule"]
    assert (weekly.cron_schedule, weekly.execution_timezone, weekly.default_status) == (
        "0 6,18 * * 1,5",
        "Europe/Berlin",
        DefaultScheduleStatus.STOPPED,  # the mapping is disabled
    )
    # a model that reads another model: both are refreshed before the sync
    assert scheduled_assets(defs, weekly) == {
        AssetKey("users"),
        AssetKey("people"),
        AssetKey(["profile_sync", "people_twice_weekly"]),
    }
    cron = schedules["people_cron_schedule"]
    assert (cron.cron_schedule, cron.execution_timezone, cron.default_status) == (
        "30 2 * * *",
        "America/New_York",
        DefaultScheduleStatus.RUNNING,
    )


def test_sharded_mapping_runs_one_request_per_shard(sample_models, settings_for, build) -> None:
    write(sample_models, PEOPLE)
    defs = with_schedules(build(settings_for(sample_models)), sample_models)
    sharded = next(s for s in defs.schedules if s.name == "people_sharded_schedule")
    assert sharded.cron_schedule == "*/15 * * * *"
    tick = dt.datetime(2026, 11, 2, 9, 15, tzinfo=dt.UTC)
    with build_schedule_context(
        scheduled_execution_time=tick, repository_def=defs.get_repository_def()
    ) as context:
        requests = sharded.evaluate_tick(context).run_requests or []
    key = AssetKey(["profile_sync", "people_sharded"])
    assert [(r.partition_key, r.asset_selection) for r in requests] == [
        ("shard_0", [key]),
        ("shard_1", [key]),
        ("shard_2", [key]),
    ]
    assert len({r.run_key for r in requests}) == 3


@pytest.mark.parametrize(
    ("schedule", "field", "message"),
    [
        ("cron: '61 * * * *'", "mappings[0].schedule.cron", "'61 * * * *' is not a valid cron expression"),
        (
            "cron: '0 6 * * *'\n      timezone: Mars/Olympus",
            "mappings[0].schedule.timezone",
            "unknown time zone 'Mars/Olympus' (use an IANA name such as 'Europe/Berlin')",
        ),
        ("interval: 5m", "mappings[0].schedule.interval", "Input should be '15m'"),
        ("days: [mon]", "mappings[0].schedule", "`days` needs `hours`"),
    ],
)
def test_bad_schedules_are_load_errors_naming_file_and_field(sample_models, schedule, field, message) -> None:
    yml = sample_models / "users.yml"
    yml.write_text(yml.read_text().replace("interval: 1h", schedule))
    with pytest.raises(ConfigError) as err:
        load_project(sample_models)
    text = str(err.value)
    assert text.startswith(f"{yml}: invalid configuration: field '{field}': ")
    assert message in text
