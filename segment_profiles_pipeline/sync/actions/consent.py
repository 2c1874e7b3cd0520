"""``context.consent`` on every action, validated as the destination's ``validateConsentObject``.

No consent (a null column) is valid and sent as ``{}``; an object is sent as it is when it has
``categoryPreferences`` whose values are all booleans, and as ``{}`` otherwise (the destination
replaces an invalid consent by ``{}`` rather than failing the event). A value that is not an object
at all (a number, a string that is not a JSON object) fails the destination's field validation, so
the record is rejected.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from segment_profiles_pipeline.sync.actions.errors import CONSENT_NOT_AN_OBJECT


def is_valid(consent: Mapping[str, Any]) -> bool:
    """The destination's rule: ``categoryPreferences`` present, an object, every value a boolean."""
    preferences = consent.get("categoryPreferences")
    return isinstance(preferences, Mapping) and all(isinstance(v, bool) for v in preferences.values())


def context_consent(value: Any, column: str | None) -> dict[str, Any]:
    """What goes to ``context.consent`` for a parsed column value (None when no column is mapped)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise CONSENT_NOT_AN_OBJECT(f"Column {column} holds {type(value).__name__} {str(value)[:80]!r}.")
    return dict(value) if is_valid(value) else {}
