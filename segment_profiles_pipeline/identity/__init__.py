"""Identity resolution: Segment's identity rules over the warehouse's messages → an identity graph.

``load_identity`` (``models/identity.yml``), ``compute_identity`` (the work, incremental when exact),
``build_identity_defs`` (Dagster assets and checks in group ``identity``). The rules themselves are
pure logic in ``resolver``.
"""

from typing import Any

from segment_profiles_pipeline.identity.config import IdentityProject, load_identity


def __getattr__(name: str) -> Any:
    """``compute_identity`` and ``IdentityRunStats`` load on first use: ``identity.compute`` imports
    the traits layer's warehouse helpers while the traits layer imports ``identity.profile_keys``,
    so an eager import here would make ``import segment_profiles_pipeline.traits`` circular."""
    if name in ("IdentityRunStats", "compute_identity"):
        from segment_profiles_pipeline.identity import compute

        return getattr(compute, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["IdentityProject", "IdentityRunStats", "compute_identity", "load_identity"]
