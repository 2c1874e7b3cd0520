"""Operations: schedules per mapping (``schedules``), the source-change sensor (``source_sensor``)
and the sync alert sensor (``alert_sensor``, over the pure state machine in ``alerts``);
``build_defs`` (in ``defs``) is what the layer adds to the project's definitions.

See docs/operations.md for what each mechanism owns. The package imports nothing eagerly: the
sync assets read health through ``alert_sensor`` (importing this package first), and an eager
import of every builder here would run them all on that path.
"""

from typing import Any


def __getattr__(name: str) -> Any:
    """``build_defs`` loads on first use (see the module docstring)."""
    if name == "build_defs":
        from segment_profiles_pipeline.automation.defs import build_defs

        return build_defs
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["build_defs"]
