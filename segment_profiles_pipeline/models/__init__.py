"""The model layer: sample sources, one asset per SQL model, primary-key checks.

``build_defs`` is what the layer adds to the project's definitions."""

from segment_profiles_pipeline.models.assets import build_defs

__all__ = ["build_defs"]
