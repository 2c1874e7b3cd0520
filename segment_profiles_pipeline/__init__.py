"""Warehouse models to live Segment customer profiles, as a Dagster project.

``segment_profiles_pipeline.SegmentProfiles`` is the Component that ``dg`` finds through the
``dagster_dg_cli.registry_modules`` entry point (pyproject.toml). It is imported on first use
(PEP 562), so importing a light module such as ``settings`` or the test server loads no Dagster.
"""

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {"SegmentProfiles": "segment_profiles_pipeline.component"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'segment_profiles_pipeline' has no attribute '{name}'")


def __dir__() -> list[str]:
    return [*globals(), *_LAZY]
