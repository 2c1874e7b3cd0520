"""The Profiles Sync schema's vocabulary: Segment's table and column names, trait column naming.

Names follow Segment's Profiles Sync tables (docs: *Profiles Sync Tables and Materialized Views*)
and what ``segmentio/profiles-sync-dbt`` reads from them, so every tool written for Profiles Sync
works on the schema unchanged. The schema itself is ``profiles_sync.schema`` in
``models/identity.yml`` (default ``profiles_sync``).
"""

from __future__ import annotations

import re

from segment_profiles_pipeline.errors import ConfigError
from segment_profiles_pipeline.identity.config import IdentityProject

RAW_TABLES = ("id_graph_updates", "external_id_mapping_updates", "profile_traits_updates")
MATERIALIZED_TABLES = ("user_traits", "user_identifiers", "profile_merges")
CURRENT_TABLES = ("id_graph", "external_id_mapping", "profile_traits")

ID_GRAPH_UPDATES_COLUMNS = (
    ("segment_id", "VARCHAR"),
    ("canonical_segment_id", "VARCHAR"),
    ("timestamp", "TIMESTAMP"),
    ("triggering_event_id", "VARCHAR"),
    ("triggering_event_type", "VARCHAR"),
    ("seq", "BIGINT"),
    ("uuid_ts", "TIMESTAMP"),
)
EXTERNAL_ID_MAPPING_UPDATES_COLUMNS = (
    ("id", "VARCHAR"),
    ("segment_id", "VARCHAR"),
    ("external_id_hash", "VARCHAR"),
    ("external_id_type", "VARCHAR"),
    ("external_id_value", "VARCHAR"),
    ("timestamp", "TIMESTAMP"),
    ("received_at", "TIMESTAMP"),
    ("triggering_event_id", "VARCHAR"),
    ("triggering_event_name", "VARCHAR"),
    ("triggering_event_type", "VARCHAR"),
    ("triggering_event_source_id", "VARCHAR"),
    ("triggering_event_source_name", "VARCHAR"),
    ("triggering_event_source_slug", "VARCHAR"),
    ("seq", "BIGINT"),
    ("uuid_ts", "TIMESTAMP"),
)
PROFILE_TRAITS_UPDATES_SYSTEM = (
    ("segment_id", "VARCHAR"),
    ("seq", "BIGINT"),
    ("uuid_ts", "TIMESTAMP"),
    ("user_id", "VARCHAR"),
    ("anonymous_id", "VARCHAR"),
    ("id", "VARCHAR"),
    ("canonical_segment_id", "VARCHAR"),
    ("merged_to", "VARCHAR"),
    ("sent_at", "TIMESTAMP"),
    ("received_at", "TIMESTAMP"),
    ("timestamp", "TIMESTAMP"),
    ("context_dry_run", "BOOLEAN"),
)
"""Then one VARCHAR column per trait, appended as traits appear. ``context_dry_run`` (true when a
value in the row's state was only planned by a dry run) is a ``context_*`` column, which
profiles-sync-dbt, like every Profiles Sync consumer, does not take for a trait."""

RESERVED = frozenset({name for name, _ in PROFILE_TRAITS_UPDATES_SYSTEM} | {"etl_ts"})
"""Column names a trait cannot take: profiles-sync-dbt treats them as system columns."""


def trait_column(trait: str) -> str:
    """The column of a trait in the Profiles Sync tables: lower-case snake_case, as Segment's
    warehouses name trait columns (``Lifetime Value`` → ``lifetime_value``). A name that would
    start with a digit or ``_`` gets a ``t`` in front (profiles-sync-dbt skips ``_`` columns)."""
    name = re.sub(r"[^a-z0-9]+", "_", trait.lower()).strip("_")
    return name if name and name[0].isalpha() else f"t_{name}"


def trait_columns(traits: dict[str, list[str]]) -> dict[str, str]:
    """Trait key → column for every trait Segment holds (``traits``: key → the mappings sending it).

    Two keys landing on one column, or a key on a system column, is an error naming the mappings,
    because one value would silently hide the other."""
    columns: dict[str, str] = {}
    owners: dict[str, str] = {}
    for trait in sorted(traits):
        column = trait_column(trait)
        where = ", ".join(sorted(traits[trait]))
        if column in RESERVED:
            raise ConfigError(
                f"trait '{trait}' (mapping {where}) would be the Profiles Sync column '{column}', "
                "a system column of profile_traits_updates.",
                fix="rename the trait in the mapping (e.g. `account_" + column + "`)",
            )
        if column in owners:
            raise ConfigError(
                f"traits '{owners[column]}' and '{trait}' (mapping {where}) both become the Profiles Sync column '{column}'.",
                fix="rename one of the traits in its mapping",
            )
        owners[column] = trait
        columns[trait] = column
    return columns


def schema_of(identity: IdentityProject) -> str:
    """The Profiles Sync schema, lower-case (as unquoted names are everywhere)."""
    return identity.config.profiles_sync.schema_name.lower()
