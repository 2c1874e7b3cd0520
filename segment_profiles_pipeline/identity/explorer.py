"""The profile explorer: one profile of the local identity graph, looked up by any identifier.

Segment's Unify has a *Profile explorer* (identifiers, traits, events, merges of one profile);
this is its equivalent over the warehouse, for the question "what does the pipeline think about
this customer?". A lookup is ``<type>:<value>`` with any identifier type of the identity rules
(``email:ana@example.com``, ``user_id:u1``, ``anonymous_id:…``, custom types such as ``phone:…``),
or ``segment_id:use_…`` (a merged-away id finds the profile it merged into).

What it shows, and where each part comes from:

- **identifiers**: ``identity.external_id_mapping`` rows of the canonical profile;
- **merges**: ``identity.profile_merges`` rows that ended in it;
- **traits** with their source and time: ``_segment_profiles.profile_trait_sources`` (the sidecar
  of the Profiles Sync tables; the latest row per trait). Until the ``profiles_sync`` assets have
  run, this part says so instead of failing: identifiers and events are useful without it;
- **latest events**: rows of the event tables the identity layer reads (and the identify log),
  attributed to the profile the way the graph attributes a message: by its most trusted
  identifier that the graph knows. A shared device's event with another user's ``user_id``
  belongs to that other user, not to the device's owner.

Only reads, so it runs on a read-only session (DuckDB: no write lock; a running sync is not
blocked). Every failure is an :class:`ExplorerError` with a stable ``code`` and a fix.
"""

import datetime as dt
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from dagster import (
    Config,
    Failure,
    JobDefinition,
    MetadataValue,
    OpExecutionContext,
    Output,
    ResourceParam,
    TableColumn,
    TableRecord,
    TableSchema,
    job,
    op,
)
from pydantic import Field as PydanticField

from segment_profiles_pipeline.errors import ConfigError, PipelineError
from segment_profiles_pipeline.identity.compute import IDENTIFY_LOG, Sources
from segment_profiles_pipeline.identity.config import (
    EXTERNAL_ID_TABLE,
    ID_GRAPH_TABLE,
    MERGES_TABLE,
    IdentityProject,
    load_identity,
)
from segment_profiles_pipeline.identity.profile_keys import (
    IdentifierColumn,
    identifier_map_sql,
    resolved_events_sql,
)
from segment_profiles_pipeline.profiles_sync.config import schema_of
from segment_profiles_pipeline.profiles_sync.sources import TRAIT_SOURCES
from segment_profiles_pipeline.traits.config import load_traits
from segment_profiles_pipeline.warehouse.base import Warehouse, WarehouseSession, ident, in_list, literal

SEGMENT_ID = "segment_id"
"""The pseudo identifier type that looks a profile up by its own id."""
DEFAULT_EVENTS = 10
MAX_EVENTS = 1000
SUGGESTIONS = 5
BUILD_GRAPH = "dg launch --assets 'identity/*'"
BUILD_PROFILES_SYNC = "run the profiles_sync assets first (dg launch --assets 'profiles_sync/*')"


class ExplorerError(PipelineError):
    """A lookup that cannot be answered; ``code`` is stable (tests, scripts), the text says how to fix it."""

    def __init__(self, code: str, message: str):
        self.code = code
        super().__init__(message)


@dataclass(frozen=True)
class Lookup:
    type: str
    value: str

    def __str__(self) -> str:
        return f"{self.type}:{self.value}"


def parse_lookup(text: str, identity: IdentityProject) -> Lookup:
    """``type:value`` → Lookup, checked against the identity rules (types, blocked values).

    Only the first ``:`` separates: values may hold colons (``anonymous_id:a:b``)."""
    kind, colon, value = text.strip().partition(":")
    kind, value = kind.strip().lower(), value.strip()
    if not colon or not kind or not value:
        raise ExplorerError(
            "malformed_lookup",
            f"malformed lookup '{text}': write it as <type>:<value>, e.g. email:ana@example.com, "
            "user_id:u_0000001 or anonymous_id:anon-0000001.",
        )
    known = [t.type for t in identity.rules.types]
    if kind not in (*known, SEGMENT_ID):
        close = difflib.get_close_matches(kind, [*known, SEGMENT_ID], n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ExplorerError(
            "unknown_identifier_type",
            f"unknown identifier type '{kind}' in lookup '{text}'.{hint} Known types: "
            f"{', '.join([*known, SEGMENT_ID])} (custom types are declared in {identity.file}).",
        )
    if kind != SEGMENT_ID and identity.rules.is_blocked(value):
        raise ExplorerError(
            "blocked_value",
            f"'{value}' is a blocked value ({identity.file}, blocked_values): identity resolution drops it "
            "from every message, so no profile can be found by it. Look the profile up by another identifier.",
        )
    return Lookup(kind, value)


@dataclass
class ProfileView:
    """One profile as the explorer shows it; ``traits`` is None when the Profiles Sync tables are not built."""

    lookup: Lookup
    segment_id: str
    segment_ids: list[str]
    identifiers: list[dict[str, Any]]
    merges: list[dict[str, Any]]
    events: list[dict[str, Any]]
    traits: list[dict[str, Any]] | None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "lookup": str(self.lookup),
            "segment_id": self.segment_id,
            "segment_ids": self.segment_ids,
            "identifiers": self.identifiers,
            "traits": self.traits,
            "merges": self.merges,
            "events": self.events,
            "notes": self.notes,
        }

    def json_bytes(self) -> bytes:
        return orjson.dumps(self.to_json(), option=orjson.OPT_INDENT_2 | orjson.OPT_NAIVE_UTC)

    def text(self) -> str:
        """The readable form (CLI and the job's log)."""
        lines = [f"Profile {self.segment_id} (looked up by {self.lookup})"]
        merged = [s for s in self.segment_ids if s != self.segment_id]
        if merged:
            lines.append(f"  also known as (merged into it): {', '.join(merged)}")
        lines.append(f"\nIdentifiers ({len(self.identifiers)})")
        lines += _columns(
            [
                [
                    i["type"],
                    i["value"],
                    f"since {_when(i['timestamp'])}",
                    f"message {i['triggering_event_id']}",
                ]
                for i in self.identifiers
            ]
        )
        if self.traits is None:
            lines.append("\nTraits: not available")
        else:
            lines.append(f"\nTraits ({len(self.traits)})")
            lines += _columns(
                [
                    [
                        t["trait"],
                        orjson.dumps(t["value"]).decode(),
                        f"from {t['source']}",
                        f"at {_when(t['updated_at'])}",
                        "(dry run: not sent)" if t["dry_run"] else "",
                    ]
                    for t in self.traits
                ]
            ) or ["  (none)"]
        lines.append(f"\nMerges ({len(self.merges)})")
        lines += _columns(
            [
                [
                    f"{m['segment_id']} merged into {m['merged_into']}",
                    f"at {_when(m['timestamp'])}",
                    f"message {m['triggering_event_id']}",
                ]
                for m in self.merges
            ]
        ) or ["  (none)"]
        lines.append(f"\nLatest events ({len(self.events)}, newest first)")
        lines += _columns(
            [
                [_when(e["received_at"]), e["source"], e["event"] or "", e["message_id"], f"via {e['via']}"]
                for e in self.events
            ]
        ) or ["  (none)"]
        lines += [f"\nNote: {note}" for note in self.notes]
        return "\n".join(lines)


def _when(value: Any) -> str:
    return value.isoformat(sep=" ") if isinstance(value, dt.datetime) else str(value)


def _columns(rows: list[list[str]]) -> list[str]:
    """Rows of cells, left-aligned in columns, indented (a readable table without a dependency)."""
    if not rows:
        return []
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]


def explorer_sources(models_dir: Path) -> tuple[IdentityProject, list[tuple[str, str]]]:
    """The identity rules and the event tables the graph reads (``sources.events``, else the traits')."""
    identity = load_identity(models_dir)
    if identity.config.sources.events:
        return identity, [(t.split(".")[0], t.split(".")[1]) for t in identity.config.sources.events]
    try:
        traits = load_traits(models_dir)
    except ConfigError:  # the traits file's own error is reported by the load; events are optional here
        traits = None
    return identity, traits.event_tables() if traits else []


def explore(
    session: WarehouseSession,
    identity: IdentityProject,
    event_tables: list[tuple[str, str]],
    lookup_text: str,
    *,
    events: int = DEFAULT_EVENTS,
) -> ProfileView:
    """Look a profile up and gather what the explorer shows (a handful of small queries)."""
    if not 0 <= events <= MAX_EVENTS:
        raise ExplorerError("bad_events", f"events must be between 0 and {MAX_EVENTS}, not {events}.")
    lookup = parse_lookup(lookup_text, identity)
    missing = [
        t
        for t in (ID_GRAPH_TABLE, EXTERNAL_ID_TABLE, MERGES_TABLE)
        if not session.table_exists(*t.split("."))
    ]
    if missing:
        raise ExplorerError(
            "graph_not_built",
            f"the identity graph is not built yet ({', '.join(missing)} missing): materialize it first with "
            f"`{BUILD_GRAPH}` (or *Materialize all* in the UI).",
        )
    canonical = _canonical(session, lookup)
    segment_ids = [
        r[0]
        for r in session.query(
            f"SELECT segment_id FROM {ID_GRAPH_TABLE} WHERE canonical_segment_id = {literal(canonical)} "
            "ORDER BY seq, segment_id"
        ).rows
    ]
    identifiers = session.query(
        f"SELECT external_id_type AS type, external_id_value AS value, timestamp, triggering_event_id, "
        f"segment_id AS added_to FROM {EXTERNAL_ID_TABLE} WHERE canonical_segment_id = {literal(canonical)} "
        "ORDER BY seq, external_id_type, external_id_value"
    ).dicts()
    merges = session.query(
        f"SELECT segment_id, merged_into, timestamp, triggering_event_id FROM {MERGES_TABLE} "
        f"WHERE canonical_segment_id = {literal(canonical)} ORDER BY seq, segment_id"
    ).dicts()
    traits, notes = _traits(session, f"{schema_of(identity)}.profile_traits", canonical)
    return ProfileView(
        lookup=lookup,
        segment_id=canonical,
        segment_ids=segment_ids,
        identifiers=identifiers,
        merges=merges,
        events=_events(session, identity, event_tables, canonical, identifiers, events),
        traits=traits,
        notes=notes,
    )


def _canonical(session: WarehouseSession, lookup: Lookup) -> str:
    if lookup.type == SEGMENT_ID:
        found = session.query(
            f"SELECT canonical_segment_id FROM {ID_GRAPH_TABLE} WHERE segment_id = {literal(lookup.value)}"
        ).scalar()
    else:
        found = session.query(
            f"SELECT canonical_segment_id FROM {EXTERNAL_ID_TABLE} WHERE external_id_type = {literal(lookup.type)} "
            f"AND external_id_value = {literal(lookup.value)}"
        ).scalar()
    if found is None:
        raise ExplorerError("no_such_profile", f"no profile has {lookup}.{_suggest(session, lookup)}")
    return str(found)


def _suggest(session: WarehouseSession, lookup: Lookup) -> str:
    """Close identifiers, cheaply: the same value under another type, another case, or a few typos away.

    One scan of the identifier table with ``levenshtein`` (Snowflake: ``EDITDISTANCE``)."""
    value = literal(lookup.value.lower())
    budget = max(2, len(lookup.value) // 4)
    rows = session.query(
        f"SELECT external_id_type, external_id_value FROM (SELECT external_id_type, external_id_value, "
        f"levenshtein(lower(external_id_value), {value}) AS distance FROM {EXTERNAL_ID_TABLE}) AS c "
        f"WHERE distance <= {budget} ORDER BY distance, external_id_type, external_id_value LIMIT {SUGGESTIONS}"
    ).rows
    if not rows:
        return (
            " Nothing close to it is in the graph either: check the value, or rebuild the graph if it is new."
        )
    return " Close matches: " + ", ".join(f"{t}:{v}" for t, v in rows) + "."


def _traits(
    session: WarehouseSession, profile_traits: str, canonical: str
) -> tuple[list[dict[str, Any]] | None, list[str]]:
    """The profile's traits (the sidecar's latest row per trait, ties to the source sorting first, as
    ``profile_traits`` holds them), or None and why. Both tables come from the profiles_sync assets."""
    missing = [t for t in (profile_traits, TRAIT_SOURCES) if not session.table_exists(*t.split("."))]
    if missing:
        return None, [f"traits are not available: {', '.join(missing)} not built yet; {BUILD_PROFILES_SYNC}."]
    rows = session.query(
        f"SELECT trait, value_json, source, updated_at, dry_run FROM {TRAIT_SOURCES} "
        f"WHERE segment_id = {literal(canonical)} "
        "QUALIFY row_number() OVER (PARTITION BY trait ORDER BY updated_at DESC, source) = 1 ORDER BY trait"
    ).dicts()
    for row in rows:
        raw = row.pop("value_json")
        row["value"] = orjson.loads(raw) if raw is not None else None
        row["dry_run"] = bool(row["dry_run"])
    notes = []
    if any(r["dry_run"] for r in rows):
        notes.append(
            "traits marked dry run come from what a dry run would send: Segment has not received them."
        )
    return rows, notes


def _events(
    session: WarehouseSession,
    identity: IdentityProject,
    event_tables: list[tuple[str, str]],
    canonical: str,
    identifiers: list[dict[str, Any]],
    limit: int,
) -> list[dict[str, Any]]:
    """The latest ``limit`` messages attributed to the profile, one SQL statement over every source.

    A message belongs to the profile its most trusted identifier known to the graph resolves to:
    ``profile_keys.resolved_events_sql``, the one definition the traits layer uses too. Rows are
    pre-filtered to those holding one of the profile's identifiers; ``via`` is the first of them in
    priority order (a more trusted one would have placed the row elsewhere, or is unknown)."""
    if limit == 0 or not identifiers:
        return []
    values: dict[str, list[str]] = {}
    for row in identifiers:
        values.setdefault(row["type"], []).append(row["value"])
    id_map = f"({identifier_map_sql(t.type for t in identity.rules.types)})"
    parts = []
    for table, id_column, arrival, present in Sources(session, identity, event_tables).tables:
        schema, name = table.split(".")
        if not session.table_exists(schema, name):
            continue
        columns = {c for c, _ in session.columns(schema, name)}
        ordered = [
            IdentifierColumn(t.type, present[t.type]) for t in identity.rules.types if t.type in present
        ]
        if table == IDENTIFY_LOG:
            source, event = "'identify (' || mapping || ')'", "'identify'"
        else:
            label = next((c for c in ("event_text", "event") if c in columns), None)
            source, event = literal(table), f"CAST({label} AS VARCHAR)" if label else "CAST(NULL AS VARCHAR)"
        mine = {
            i.type: f"CAST(e.{ident(i.column)} AS VARCHAR) IN {in_list(values[i.type])}"
            for i in ordered
            if i.type in values
        }
        if not mine:
            continue
        via = " ".join(
            f"WHEN {test} THEN {literal(kind + ':')} || CAST(e.{ident(present[kind])} AS VARCHAR)"
            for kind, test in mine.items()
        )
        held = f"(SELECT * FROM {table} AS e WHERE {' OR '.join(mine.values())})"
        parts.append(
            f"SELECT {source} AS source, CAST(e.{ident(id_column)} AS VARCHAR) AS message_id, {event} AS event, "
            f"CAST(e.{ident(arrival)} AS TIMESTAMP) AS received_at, CASE {via} END AS via "
            f"FROM ({resolved_events_sql(held, ordered, id_map)}) AS e WHERE e.profile_key = {literal(canonical)}"
        )
    if not parts:
        return []
    return session.query(
        "SELECT source, message_id, event, received_at, via FROM (\n"
        + "\nUNION ALL\n".join(parts)
        + "\n) AS a QUALIFY row_number() OVER (PARTITION BY message_id ORDER BY received_at NULLS FIRST, source) = 1 "
        f"ORDER BY received_at DESC NULLS LAST, message_id LIMIT {limit}"
    ).dicts()


# -- the Dagster job ------------------------------------------------------------------------------

JOB_NAME = "profile_explorer"
_IDENTIFIER_SCHEMA = TableSchema(
    columns=[TableColumn(n, "string") for n in ("type", "value", "since", "triggering_event_id")]
)
_TRAIT_SCHEMA = TableSchema(
    columns=[TableColumn(n, "string") for n in ("trait", "value", "source", "updated_at", "dry_run")]
)
_MERGE_SCHEMA = TableSchema(
    columns=[
        TableColumn(n, "string") for n in ("segment_id", "merged_into", "timestamp", "triggering_event_id")
    ]
)
_EVENT_SCHEMA = TableSchema(
    columns=[TableColumn(n, "string") for n in ("received_at", "source", "event", "message_id", "via")]
)


class ExplorerConfig(Config):
    lookup: str = PydanticField(
        description="The identifier to look up, `<type>:<value>`: email:ana@example.com, user_id:u_0000001, "
        "anonymous_id:…, a custom type, or segment_id:use_…"
    )
    events: int = PydanticField(
        default=DEFAULT_EVENTS, ge=0, le=MAX_EVENTS, description="Latest events to show."
    )


def _table(schema: TableSchema, rows: list[list[Any]]) -> MetadataValue:
    names = [c.name for c in schema.columns]
    return MetadataValue.table(
        [
            TableRecord({n: "" if v is None else _when(v) for n, v in zip(names, row, strict=True)})
            for row in rows
        ],
        schema=schema,
    )


def view_metadata(view: ProfileView) -> dict[str, MetadataValue]:
    """The job's output: the readable text as markdown, and one table per part (small: one profile)."""
    traits = view.traits or []
    return {
        "segment_id": MetadataValue.text(view.segment_id),
        "profile": MetadataValue.md(f"```\n{view.text()}\n```"),
        "identifiers": _table(
            _IDENTIFIER_SCHEMA,
            [[i["type"], i["value"], i["timestamp"], i["triggering_event_id"]] for i in view.identifiers],
        ),
        "traits": _table(
            _TRAIT_SCHEMA,
            [
                [
                    t["trait"],
                    orjson.dumps(t["value"]).decode(),
                    t["source"],
                    t["updated_at"],
                    str(t["dry_run"]),
                ]
                for t in traits
            ],
        ),
        "traits_available": MetadataValue.bool(view.traits is not None),
        "merges": _table(
            _MERGE_SCHEMA,
            [
                [m["segment_id"], m["merged_into"], m["timestamp"], m["triggering_event_id"]]
                for m in view.merges
            ],
        ),
        "events": _table(
            _EVENT_SCHEMA,
            [[e["received_at"], e["source"], e["event"], e["message_id"], e["via"]] for e in view.events],
        ),
    }


def build_explorer_job(models_dir: Path) -> JobDefinition:
    """``profile_explorer``: run it with ``ops: {explore_profile: {config: {lookup: "email:…"}}}``.

    It reads through ``warehouse.read_only_session()``, so it never waits for (or blocks) a sync."""
    identity, event_tables = explorer_sources(models_dir)

    @op(
        name="explore_profile",
        description="Look one profile up on the local identity graph (docs/identity.md).",
    )
    def explore_profile(
        context: OpExecutionContext, config: ExplorerConfig, warehouse: ResourceParam[Warehouse]
    ) -> Output[None]:
        try:
            with warehouse.read_only_session() as session:
                view = explore(session, identity, event_tables, config.lookup, events=config.events)
        except ExplorerError as exc:
            raise Failure(description=str(exc), metadata={"code": exc.code}, allow_retries=False) from None
        context.log.info(view.text())
        return Output(None, metadata=view_metadata(view))

    @job(
        name=JOB_NAME,
        description="Profile explorer: identifiers, traits, merges and latest events of one profile.",
    )
    def profile_explorer() -> None:
        explore_profile()

    return profile_explorer
