"""``schedule: {on_upstream_change: true}``: declarative automation instead of a schedule, and it runs."""

import datetime as dt

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
    assert [s.name for s in build_schedules(mappings, [])] == ["people_hourly_schedule"]
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


def test_with_a_cadence_the_sync_is_requested_once_after_the_tick_when_its_model_updated_since(
    models_dir, settings_for, build
) -> None:
    """``{on_upstream_change: true, interval: 1h}`` evaluated tick by tick (``on_cron``): an update
    before the hour's tick requests nothing; after the tick, the first evaluation that sees the
    model updated since the tick requests the sync, once for that tick.

    Time is frozen (Dagster's own test helper) so materializations carry the times the evaluations
    reason about: wall-clock runs could not land on either side of a cron tick without waiting."""
    from dagster._core.test_utils import freeze_time  # Dagster's tests' clock; no public equivalent

    write(models_dir, people("{on_upstream_change: true, interval: 1h}"))
    defs = build(settings_for(models_dir))
    assert defs.resolve_asset_graph().get(FOLLOWS).automation_condition == AutomationCondition.on_cron(
        "0 * * * *", "UTC"
    )
    instance = DagsterInstance.ephemeral()
    job = defs.resolve_implicit_global_asset_job_def()
    at = lambda hhmm: dt.datetime.fromisoformat(f"2026-12-01T{hhmm}:00+00:00")  # noqa: E731

    def evaluate(hhmm: str, cursor):
        with freeze_time(at(hhmm)):
            return evaluate_automation_conditions(defs, instance, evaluation_time=at(hhmm), cursor=cursor)

    def materialize(hhmm: str, *keys: AssetKey) -> None:
        with freeze_time(at(hhmm)):
            result = job.execute_in_process(instance=instance, asset_selection=list(keys) or None)
        assert result.success

    materialize("10:30")  # everything, the sync too
    tick = evaluate("10:31", None)
    assert tick.total_requested == 0
    materialize("10:40", PEOPLE)  # the model updates before the 11:00 tick
    tick = evaluate("10:50", tick.cursor)
    assert tick.total_requested == 0  # no tick yet
    tick = evaluate("11:01", tick.cursor)
    assert tick.total_requested == 0  # the tick passed, but the model has not updated since it
    materialize("11:10", PEOPLE)
    tick = evaluate("11:12", tick.cursor)
    assert tick.get_requested_partitions(FOLLOWS) == {None}
    assert tick.get_requested_partitions(HOURLY) == set()  # a scheduled mapping has no condition
    materialize("11:13", FOLLOWS)  # the requested run
    materialize("11:30", PEOPLE)  # another update within the same hour
    tick = evaluate("11:40", tick.cursor)
    assert tick.total_requested == 0  # once per tick
    materialize("12:05", PEOPLE)
    tick = evaluate("12:06", tick.cursor)
    assert tick.get_requested_partitions(FOLLOWS) == {None}  # the next tick, the next update
