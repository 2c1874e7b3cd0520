"""Identity resolution: Segment's identity rules over the warehouse's messages → an identity graph.

``load_identity`` (``models/identity.yml``), ``compute_identity`` (the work, incremental when exact),
``build_identity_defs`` (Dagster assets and checks in group ``identity``). The rules themselves are
pure logic in ``resolver``.
"""

from segment_profiles_pipeline.identity.compute import IdentityRunStats, compute_identity
from segment_profiles_pipeline.identity.config import IdentityProject, load_identity

__all__ = ["IdentityProject", "IdentityRunStats", "compute_identity", "load_identity"]
