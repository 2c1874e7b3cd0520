"""Identity resolution: Segment's identity rules over the warehouse's messages → an identity graph.

``load_identity`` (``models/identity.yml``), ``compute_identity`` (the work, incremental when exact),
``build_defs`` (what the layer adds to the project's definitions: the graph's assets and checks in
group ``identity``, the ``profile_explorer`` job). The rules themselves are pure logic in ``resolver``.
"""

from typing import Any

from segment_profiles_pipeline.identity.config import IdentityProject, load_identity


def __getattr__(name: str) -> Any:
    """``compute_identity``, ``IdentityRunStats`` and ``build_defs`` load on first use:
    ``identity.compute`` imports the traits layer's warehouse helpers while the traits layer imports
    ``identity.profile_keys``, and ``vocabulary`` (which ``identity.assets`` imports) imports
    ``identity.config``, so an eager import here would make those imports circular."""
    if name in ("IdentityRunStats", "compute_identity"):
        from segment_profiles_pipeline.identity import compute

        return getattr(compute, name)
    if name == "build_defs":
        from segment_profiles_pipeline.identity.assets import build_defs

        return build_defs
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["IdentityProject", "IdentityRunStats", "build_defs", "compute_identity", "load_identity"]
