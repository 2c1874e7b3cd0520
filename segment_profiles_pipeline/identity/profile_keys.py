"""Which identity-resolved profile a raw event row belongs to, and where that profile's traits go.

Pure SQL builders (DuckDB dialect, transpiled like the rest of the project); no I/O. Every domain
that aggregates events per profile (computed traits, audiences, predictions) keys its rows
through this module, so "the profile of an event" has one definition.

API (columns are lower-case, every function returns a SQL string):

- ``identifier_columns(rules, columns)`` → ``(IdentifierColumn(type, column), ...)``: the
  identifier columns an event table has, **most trusted first** (the identity rules' priority).
- ``identifier_map_sql(types)`` → relation with columns ``external_id_type``,
  ``external_id_value``, ``profile_key``: one row per identifier in ``identity.external_id_mapping``,
  ``profile_key`` being its **canonical** ``segment_id`` (merges already applied).
- ``resolved_events_sql(events, identifiers, id_map)`` → ``SELECT <every column of events>,
  profile_key``: each row of ``events`` with the canonical profile of its **most trusted
  identifier that the graph holds**; ``profile_key`` is NULL when the graph holds none of them.
- ``targets_sql(id_map_table)`` → ``profile_key``, ``user_id``, ``anonymous_id``: one row per
  canonical profile holding a user_id or an anonymous_id, the ids its identify call is sent to.

**Why the most trusted identifier.** The resolver (``identity/resolver.py``) demotes the
*least* trusted identifier of a message until the message fits the limits, so the most trusted
non-blocked identifier of a message is never demoted and always ends in the profile the message
resolved to; merges only move that profile's canonical id. Looking that one identifier up is
therefore exact, costs one hash join per identifier type, and needs neither the resolver's state
nor its message ids (so it works the same on Segment's own landed graph). A less trusted
identifier can belong to another profile (a shared device's ``anonymous_id`` stays with its first
user), which is exactly why it must not decide.

**Events the graph does not hold** (``profile_key`` NULL): every identifier is empty or blocked
(Segment attaches such a message to no profile, so neither do we), or the graph has not seen the
event yet (it arrived after the identity run, or its table is not an identity source). Callers
leave them out and report how many there are; they are picked up once the graph holds one of
their identifiers (the traits layer notices through its stored identifier map, see
``traits/compute.py``). Blocked values need no rule here: they never enter the graph, so the
lookup cannot match them.

**Send target** (``targets_sql``): a profile's ``user_id`` when it has one (the first added:
lowest ``seq``, then the smallest value, in case ``user_id``'s limit is raised above 1), and then
``anonymous_id`` is NULL; otherwise its **first added** ``anonymous_id`` (lowest ``seq``, then
value). First added, because identifiers never leave a profile: the target only changes when the
profile gains a user_id or merges, never because another device appears, so the sync does not
re-send a profile for every new anonymous id. A profile holding neither (only emails or custom
identifiers) has no target row; its identify call cannot be addressed and the sync rejects it
visibly.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from segment_profiles_pipeline.identity.config import EXTERNAL_ID_TABLE, IdentityRules
from segment_profiles_pipeline.warehouse.base import ident, literal

MAP_COLUMNS = ("external_id_type", "external_id_value", "profile_key")
"""Columns of an identifier map relation (``identifier_map_sql``)."""
TARGET_COLUMNS = ("profile_key", "user_id", "anonymous_id")
"""Columns of ``targets_sql``."""


@dataclass(frozen=True)
class IdentifierColumn:
    """An event column holding values of one identifier type."""

    type: str  # Segment's identifier type: user_id, anonymous_id, email, a custom type
    column: str  # the event-table column (lower-case)


def identifier_columns(rules: IdentityRules, columns: Iterable[str]) -> tuple[IdentifierColumn, ...]:
    """The identifier columns present in ``columns`` (an event table's), most trusted first."""
    present = {c.lower() for c in columns}
    return tuple(
        IdentifierColumn(t.type, t.column) for t in rules.types if t.column and t.column.lower() in present
    )


def identifier_map_sql(types: Iterable[str], mapping_table: str = EXTERNAL_ID_TABLE) -> str:
    """identifier (type, value) → canonical profile, for the given types, from the identity graph."""
    wanted = ", ".join(literal(t) for t in sorted(set(types)))
    return (
        "SELECT external_id_type, external_id_value, canonical_segment_id AS profile_key "
        f"FROM {mapping_table} WHERE external_id_type IN ({wanted})"
    )


def resolved_events_sql(events: str, identifiers: Sequence[IdentifierColumn], id_map: str) -> str:
    """Every row of ``events`` (a table name or a parenthesized query) with its ``profile_key``.

    ``identifiers``: the identifier columns of ``events``, most trusted first
    (``identifier_columns``); ``id_map``: a table name or parenthesized query with ``MAP_COLUMNS``
    (``identifier_map_sql``, or a stored copy of it). One LEFT JOIN per identifier type, each
    matching at most one row (an identifier belongs to one profile), so no row is duplicated or
    lost: unresolved rows keep ``profile_key`` NULL.
    """
    joins = []
    keys = []
    for n, identifier in enumerate(identifiers):
        alias = f"_k{n}"
        joins.append(
            f"LEFT JOIN {id_map} AS {alias} ON {alias}.external_id_type = {literal(identifier.type)} "
            f"AND {alias}.external_id_value = CAST(_e.{ident(identifier.column)} AS VARCHAR)"
        )
        keys.append(f"{alias}.profile_key")
    if not keys:
        key = "CAST(NULL AS VARCHAR)"
    else:
        key = keys[0] if len(keys) == 1 else f"coalesce({', '.join(keys)})"
    return f"SELECT _e.*, {key} AS profile_key FROM {events} AS _e" + "".join(f"\n{j}" for j in joins)


def targets_sql(mapping_table: str = EXTERNAL_ID_TABLE) -> str:
    """One row per canonical profile with a user_id or anonymous_id: where its identify call goes."""
    first = (
        "SELECT canonical_segment_id, external_id_type, external_id_value "
        f"FROM {mapping_table} WHERE external_id_type IN ('user_id', 'anonymous_id')\n"
        "QUALIFY row_number() OVER (PARTITION BY canonical_segment_id, external_id_type "
        "ORDER BY seq, external_id_value) = 1"
    )
    return (
        "SELECT canonical_segment_id AS profile_key, _user AS user_id, "
        "CASE WHEN _user IS NULL THEN _anon END AS anonymous_id FROM (\n"
        "SELECT canonical_segment_id, "
        "max(CASE WHEN external_id_type = 'user_id' THEN external_id_value END) AS _user, "
        "max(CASE WHEN external_id_type = 'anonymous_id' THEN external_id_value END) AS _anon "
        f"FROM (\n{first}\n) AS f GROUP BY canonical_segment_id\n) AS t"
    )
