"""Operations: schedules per mapping (``schedules``), the source-change sensor (``source_sensor``)
and the sync alert sensor (``alert_sensor``, over the pure state machine in ``alerts``).

``definitions.py`` wires the builders; see docs/operations.md for what each mechanism owns. The
package imports nothing itself: the sync assets read health through ``alert_sensor`` while the
schedules read the sync assets' keys, and eager imports here would make that a cycle.
"""
