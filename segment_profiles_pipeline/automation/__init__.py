"""Operations: schedules per mapping, the source-change sensor and the sync alert sensor.

``definitions.py`` wires the builders; see docs/operations.md for what each mechanism owns.
"""

from segment_profiles_pipeline.automation.alert_sensor import build_alert_sensor
from segment_profiles_pipeline.automation.schedules import build_schedules
from segment_profiles_pipeline.automation.source_sensor import build_source_sensor

__all__ = ["build_alert_sensor", "build_schedules", "build_source_sensor"]
