"""``schedule: {on_upstream_change: true}``: declarative automation instead of a schedule, and it runs."""

import pytest
from dagster import (
    AssetKey,
    AutomationCondition,
    AutomationConditionSensorDefinition,
    DagsterInstance,
    DefaultSensorStatus,
    evaluate_automation_conditions,
)

from segment_profiles_pipeline.automation.automation_sensor import AUTOMATION_SENSOR, build_automation_sensors
from segment_profiles_pipeline.automation.conditions import sync_condition
from segment_profiles_pipeline.automation.schedules import build_schedules
from segment_profiles_pipeline.automation.source_sensor import held_back_syncs
from segment_profiles_pipeline.config import MappingConfig
from segment_profiles_pipeline.errors import ConfigError
from segment_profiles_pipeline.project import load_project
from segment_profiles_pipeline_tests.conftest import materialize_all, write

PEOPLE = AssetKey("people")
FOLLOWS = AssetKey(["profile_sync", "people_follow"])
HOURLY = AssetKey(["profile_sync", "people_hourly"])


def people(follow_schedule: str = "{on_upstream_change: true}") -> dict[str, str]:
    return {
        "people.sql": "SELECT user_id, email FROM app.users",
        "people.yml": f"""
            primary_key: user_id
            mappings:
              - name: people_follow
                action: identify
                user_id: user_id
                traits: {{email: email}}
                schedule: {follow_schedule}
              - name: people_hourly
                action: identify
                user_id: user_id
                schedule: {{interval: 1h}}
        """,
    }


def mapping(schedule: object, **fields: object) -> MappingConfig:
    return MappingConfig.model_validate(
        {"name": "m", "action": "identify", "user_id": "id", "schedule": schedule, **fields}
    )


def test_alone_it_is_eager_and_with_a_cadence_on_cron() -> None:
    assert sync_condition(mapping({"on_upstream_change": True})) == AutomationCondition.eager()
    assert sync_condition(
        mapping({"on_upstream_change": True, "interval": "1h", "timezone": "Europe/Berlin"})
    ) == AutomationCondition.on_cron("0 * * * *", "Europe/Berlin")
    assert sync_condition(mapping({"on_upstream_change": True, "days": ["mon"], "hours": [6]})) == (
        AutomationCondition.on_cron("0 6 * * 1", "UTC")
    )
    assert sync_condition(mapping({"interval": "1h"})) is None
    assert sync_condition(mapping("manual")) is None
    assert sync_condition(mapping({"on_upstream_change": True}, enabled=False)) is None


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        (
            {"on_upstream_change": True, "manual": True},
            "`on_upstream_change: true` and `manual: true` contradict",
        ),
        (
            {"on_upstream_change": True, "interval": "1h", "cron": "0 6 * * *"},
            "with `on_upstream_change: true` set at most one of `interval`, `cron` or `days`+`hours`",
        ),
        (
            {},
            "set exactly one of `interval`, `cron`, `days`+`hours`, `manual: true` or `on_upstream_change: true`",
        ),
    ],
)
def test_schedule_errors_name_the_file_and_field(models_dir, schedule, message) -> None:
    files = people()
    files["people.yml"] = files["people.yml"].replace("{on_upstream_change: true}", str(schedule))
    write(models_dir, files)
    with pytest.raises(ConfigError) as info:
        load_project(models_dir)
    assert "people.yml" in str(info.value)
    assert "field 'mappings[0].schedule':" in str(info.value)
    assert message in str(info.value)


def test_predictions_do_not_accept_it(models_dir) -> None:
    """Predictions share the cadence block but have no automation: the key is refused, not ignored."""
    from segment_profiles_pipeline.predictions.config import PredictionConfig

    with pytest.raises(ValueError, match="on_upstream_change"):
        PredictionConfig.model_validate(
            {"type": "likelihood_to_churn", "schedule": {"on_upstream_change": True}}
        )


@pytest.mark.parametrize("follow", ["{on_upstream_change: true}", "{on_upstream_change: true, interval: 1h}"])
def test_no_schedule_the_source_sensor_holds_it_back_and_a_running_sensor_targets_it(
    models_dir, follow
) -> None:
    write(models_dir, people(follow))
    mappings = load_project(models_dir).mappings
    assert [s.name for s in build_schedules(mappings)] == ["people_hourly_schedule"]
    assert held_back_syncs(mappings) == [FOLLOWS]
    (sensor,) = build_automation_sensors(mappings)
    assert isinstance(sensor, AutomationConditionSensorDefinition)
    assert (sensor.name, sensor.default_status) == (AUTOMATION_SENSOR, DefaultSensorStatus.RUNNING)
    assert sensor.asset_selection is not None
    write(models_dir, people("{interval: 1h}"))
    assert build_automation_sensors(load_project(models_dir).mappings) == []


def test_the_sync_follows_its_model(models_dir, settings_for, build) -> None:
    write(models_dir, people())
    defs = build(settings_for(models_dir))
    assert AUTOMATION_SENSOR in {s.name for s in defs.sensors}
    graph = defs.resolve_asset_graph()
    assert graph.get(FOLLOWS).automation_condition == AutomationCondition.eager()
    assert graph.get(HOURLY).automation_condition is None
    (sensor,) = [s for s in defs.sensors if s.name == AUTOMATION_SENSOR]
    assert sensor.asset_selection.resolve(graph) == {FOLLOWS}  # type: ignore[union-attr]

    instance = DagsterInstance.ephemeral()
    assert materialize_all(defs, instance).success
    # everything is fresh: the model was updated in a run that synced too
    first = evaluate_automation_conditions(defs, instance)
    assert first.total_requested == 0

    job = defs.resolve_implicit_global_asset_job_def()
    assert job.execute_in_process(instance=instance, asset_selection=[PEOPLE]).success
    after_model = evaluate_automation_conditions(defs, instance, cursor=first.cursor)
    assert after_model.total_requested == 1
    assert after_model.get_requested_partitions(FOLLOWS) == {None}
    assert after_model.get_requested_partitions(HOURLY) == set()

    # requested once per update, not on every tick
    again = evaluate_automation_conditions(defs, instance, cursor=after_model.cursor)
    assert again.total_requested == 0


def test_a_sharded_sync_gets_every_shard_requested(models_dir, settings_for, build) -> None:
    files = people()
    files["people.yml"] = files["people.yml"].replace(
        "schedule: {on_upstream_change: true}",
        "shards: 2\n                schedule: {on_upstream_change: true}",
    )
    write(models_dir, files)
    defs = build(settings_for(models_dir))
    instance = DagsterInstance.ephemeral()
    initial = evaluate_automation_conditions(defs, instance)  # the first evaluation only starts tracking
    assert initial.total_requested == 0
    job = defs.resolve_implicit_global_asset_job_def()
    users = AssetKey(["app", "users"])
    assert job.execute_in_process(instance=instance, asset_selection=[users, PEOPLE]).success
    after_model = evaluate_automation_conditions(defs, instance, cursor=initial.cursor)
    assert after_model.get_requested_partitions(FOLLOWS) == {"shard_0", "shard_1"}
