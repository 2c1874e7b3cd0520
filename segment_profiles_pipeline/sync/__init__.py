"""profile_sync: plan in the warehouse, build Segment payloads, deliver, record acknowledgements.

``build_defs`` (in ``assets``) is what the layer adds to the project's definitions: one sync asset
per mapping with its checks, the readback checks and the Test Mapping jobs."""

from typing import Any


def __getattr__(name: str) -> Any:
    """``build_defs`` loads on first use: every module of the engine imports this package first,
    and the sync assets import the engine, the alert sensor and the state package."""
    if name == "build_defs":
        from segment_profiles_pipeline.sync.assets import build_defs

        return build_defs
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["build_defs"]
