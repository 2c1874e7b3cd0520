"""What the operations layer adds to the project's definitions: every schedule and sensor."""

from collections.abc import Sequence

from dagster import Definitions

from segment_profiles_pipeline.automation.alert_sensor import build_alert_sensor
from segment_profiles_pipeline.automation.automation_sensor import build_automation_sensors
from segment_profiles_pipeline.automation.schedules import build_schedules
from segment_profiles_pipeline.automation.source_sensor import build_source_sensor
from segment_profiles_pipeline.project import MappingSpec
from segment_profiles_pipeline.vocabulary import DEFAULT_KEYS, AssetKeys


def build_defs(
    source_tables: Sequence[tuple[str | None, str]],
    mappings: Sequence[MappingSpec],
    keys: AssetKeys = DEFAULT_KEYS,
) -> Definitions:
    """A schedule per scheduled mapping, the source-change sensor over ``source_tables``, the sync
    alert sensor, and the automation sensor of the mappings that follow their upstream."""
    sources = [keys.source(schema, table) for schema, table in source_tables]
    return Definitions(
        schedules=build_schedules(mappings, sources, keys),
        sensors=[
            build_source_sensor(source_tables, mappings, keys),
            build_alert_sensor(mappings),
            *build_automation_sensors(mappings, keys),
        ],
    )
