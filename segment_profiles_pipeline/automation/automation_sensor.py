"""The sensor that evaluates the mappings' automation conditions (``conditions.py``).

Dagster evaluates automation conditions only inside an automation condition sensor. It would
create ``default_automation_condition_sensor`` on its own, but *stopped*; this one targets the
sync assets that follow their upstream and starts running, like the project's other sensors, so
``on_upstream_change: true`` works without a click in the UI. Other assets' conditions (if any
are added) stay with Dagster's default sensor.
"""

from __future__ import annotations

from collections.abc import Sequence

from dagster import AssetSelection, AutomationConditionSensorDefinition, DefaultSensorStatus

from segment_profiles_pipeline.automation.conditions import sync_condition
from segment_profiles_pipeline.project import MappingSpec
from segment_profiles_pipeline.vocabulary import DEFAULT_KEYS, AssetKeys

AUTOMATION_SENSOR = "sync_automation_sensor"


def build_automation_sensors(
    mappings: Sequence[MappingSpec], keys: AssetKeys = DEFAULT_KEYS, *, minimum_interval_seconds: int = 30
) -> list[AutomationConditionSensorDefinition]:
    """One running sensor over the syncs that follow their upstream; none when no mapping does."""
    targets = [keys.sync(s) for s in mappings if sync_condition(s.mapping) is not None]
    if not targets:
        return []
    return [
        AutomationConditionSensorDefinition(
            AUTOMATION_SENSOR,
            target=AssetSelection.assets(*targets),
            default_status=DefaultSensorStatus.RUNNING,
            minimum_interval_seconds=minimum_interval_seconds,
            description="Evaluates the automation conditions of the mappings with `schedule: "
            "{on_upstream_change: true}` and requests their syncs after their upstream asset updates.",
        )
    ]
