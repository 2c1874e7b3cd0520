"""Computed traits and audiences: YAML definitions → warehouse SQL → tables the sync delivers.

Public entry points: ``load_traits`` (parse + validate ``models/computed_traits.yml``),
``check_trait_key_clashes`` (against the model mappings), ``build_defs`` (what the layer adds to
the project's definitions: assets, sync mappings, event tables), ``build_traits_assets`` (its
Dagster assets) and ``compute_traits`` / ``compute_audiences`` (the work itself, for benchmarks).
"""

from segment_profiles_pipeline.traits.assets import build_defs, build_traits_assets
from segment_profiles_pipeline.traits.compute import TraitsRunStats, compute_audiences, compute_traits
from segment_profiles_pipeline.traits.config import TraitsProject, check_trait_key_clashes, load_traits

__all__ = [
    "TraitsProject",
    "TraitsRunStats",
    "build_defs",
    "build_traits_assets",
    "check_trait_key_clashes",
    "compute_audiences",
    "compute_traits",
    "load_traits",
]
