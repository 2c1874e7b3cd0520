"""Build the identity graph in the warehouse: set work in SQL, the order-dependent step in Python.

SQL (one dialect, transpiled like the rest of the project) turns every source row into a message
(message id, arrival time, identifiers with blocked values removed), deduplicates messages by id
(first received copy wins, as in the traits layer), and keeps only the **first message of each
distinct identifier set**: a later message with the same set cannot change the graph (see
``resolver``). Those candidates are numbered in arrival order (``received_at``, then message id).
A candidate none of whose identifiers appears in another candidate or in a stored profile is
*isolated*: whatever comes before or after it, the resolver would create a profile holding all of
its identifiers (one value per type, every limit at least 1) and nothing else would ever touch
that profile in this run, so SQL writes its rows directly (the profile id and identifier hashes
are the resolver's sha256s). Only the other candidates are streamed into ``resolver.Graph``; the
graph's changes are written back as Segment-shaped tables. At 100k users whose identifiers are all
their own, that is every candidate: the sequential step, its row transfer and its Arrow loads go.

Incremental runs: with a single arrival high-water mark over every source, rows above it are
new. When the rows at or below the mark are exactly the rows seen before (no late or deleted
message) and the rules did not change, only the new messages' new identifier sets are resolved,
starting from the stored state of the profiles their identifiers reach. Anything else rebuilds
from scratch, which is always correct; both give the same tables.

With ``graph.source: segment`` none of this runs: ``compute_from_segment`` rebuilds the same
tables from Segment's landed Profiles Sync ``_updates`` tables (``segment_graph_sql``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from segment_profiles_pipeline.errors import WarehouseError
from segment_profiles_pipeline.identity.config import (
    EXTERNAL_ID_TABLE,
    ID_GRAPH_TABLE,
    IDENTITY_SCHEMA,
    MERGES_TABLE,
    IdentityProject,
    IdentityRules,
)
from segment_profiles_pipeline.identity.resolver import Graph, Message
from segment_profiles_pipeline.project import MappingSpec
from segment_profiles_pipeline.state import STATE_SCHEMA
from segment_profiles_pipeline.traits.compute import Scratch, scratch_tables, transaction, utc_naive
from segment_profiles_pipeline.warehouse.base import WarehouseSession, ident, literal

if TYPE_CHECKING:
    import pyarrow as pa

SETS_TABLE = f"{STATE_SCHEMA}.identity_sets"
STATE_TABLE = f"{STATE_SCHEMA}.identity_watermarks"
IDENTIFY_LOG = f"{STATE_SCHEMA}.identity_identify_log"
CANDIDATES_TABLE = f"{STATE_SCHEMA}._identity_candidates"
"""The candidates the resolver must see, streamed from it: an ordinary table, not a scratch TEMP
one, since DuckDB streams through a cursor of its own, which does not see temporary tables."""
BATCH_ROWS = 50_000
SCHEMAS: dict[str, list[tuple[str, str]]] = {
    ID_GRAPH_TABLE: [
        ("segment_id", "VARCHAR"),
        ("canonical_segment_id", "VARCHAR"),
        ("timestamp", "TIMESTAMP"),
        ("triggering_event_id", "VARCHAR"),
        ("seq", "BIGINT"),
    ],
    EXTERNAL_ID_TABLE: [
        ("canonical_segment_id", "VARCHAR"),
        ("segment_id", "VARCHAR"),
        ("external_id_type", "VARCHAR"),
        ("external_id_value", "VARCHAR"),
        ("external_id_hash", "VARCHAR"),
        ("timestamp", "TIMESTAMP"),
        ("triggering_event_id", "VARCHAR"),
        ("seq", "BIGINT"),
    ],
    MERGES_TABLE: [
        ("segment_id", "VARCHAR"),
        ("merged_into", "VARCHAR"),
        ("canonical_segment_id", "VARCHAR"),
        ("timestamp", "TIMESTAMP"),
        ("triggering_event_id", "VARCHAR"),
        ("seq", "BIGINT"),
    ],
    SETS_TABLE: [
        ("set_key", "VARCHAR"),
        ("segment_id", "VARCHAR"),
        ("demoted", "VARCHAR"),
        ("message_id", "VARCHAR"),
        ("received_at", "TIMESTAMP"),
        ("seq", "BIGINT"),
    ],
}
"""(column, SQL type) of each graph table. SQL type names, not Arrow types: ``_arrow`` maps them when
rows are loaded, so defining the assets imports no pyarrow (~0.2 s of every definitions load)."""


@dataclass(frozen=True)
class IdentityRunStats:
    """What one run did: the asset's metadata and the benchmark's figures."""

    mode: str  # full | incremental | segment (read from Segment's landed tables)
    reason: str
    candidates: int  # messages the sequential step resolved (new identifier sets)
    profiles_created: int
    merges: int
    demotions: int  # messages that lost at least one identifier to a limit
    profiles: int  # canonical profiles afterwards
    seconds: float


def external_id_hash(kind: str, value: str) -> str:
    return hashlib.sha256(f"{kind}:{value}".encode()).hexdigest()[:32]


def _column(kind: str) -> str:
    return "v_" + kind.replace(".", "_")


def identify_sources(identity: IdentityProject, mappings: list[MappingSpec]) -> list[MappingSpec]:
    """The model identify mappings whose records feed the graph (never the traits' own mappings)."""
    wanted = identity.config.sources.identify_mappings
    return [
        s
        for s in mappings
        if s.mapping.action == "identify"
        and s.source.table.startswith("models.")
        and (wanted is None or s.mapping.name in wanted)
    ]


class Sources:
    """The messages of every source as one SQL query, and what changed since the last run."""

    def __init__(
        self,
        session: WarehouseSession,
        identity: IdentityProject,
        event_tables: list[tuple[str, str]],
    ) -> None:
        self.rules = identity.rules
        self.watermark = identity.config.sources.watermark_column
        self.tables: list[tuple[str, str, str, dict[str, str]]] = []
        """(table, message id column, arrival column, identifier type → column)"""
        for schema, table in event_tables:
            columns = {c for c, _ in session.columns(schema, table)}
            if not columns or "id" not in columns or self.watermark not in columns:
                continue
            present = {t.type: t.column for t in self.rules.types if t.column and t.column in columns}
            if present:
                self.tables.append((f"{schema}.{table}", "id", self.watermark, present))
        log_columns = {t.type: _column(t.type) for t in self.rules.types}
        self.tables.append((IDENTIFY_LOG, "message_id", "received_at", log_columns))

    def fingerprint(self) -> str:
        rules = [(t.type, t.priority, t.limit, t.column) for t in self.rules.types]
        payload = json.dumps([rules, list(self.rules.blocked), self.watermark, self.tables], default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def _clean(self, column: str) -> str:
        value = f"CAST({ident(column)} AS VARCHAR)"
        blocked = " OR ".join(
            f"regexp_matches({value}, {literal('^(' + p + ')$')}, 'i')" for p in self.rules.blocked
        )
        return f"CASE WHEN {value} IS NULL OR {value} = ''{' OR ' + blocked if blocked else ''} THEN NULL ELSE {value} END"

    def messages_sql(self, above: dt.datetime | None) -> str:
        """One row per message (deduplicated by id, first arrival wins) with at least one identifier.

        ``above``: only rows that arrived after it (incremental), minus new copies of older messages."""
        parts = []
        for table, id_column, arrival, present in self.tables:
            values = ", ".join(
                f"{self._clean(present[t.type]) if t.type in present else 'CAST(NULL AS VARCHAR)'} AS {_column(t.type)}"
                for t in self.rules.types
            )
            where = f" AND {arrival} > {literal(above)}" if above is not None else ""
            parts.append(
                f"SELECT CAST({id_column} AS VARCHAR) AS message_id, CAST({arrival} AS TIMESTAMP) AS received_at, "
                f"{literal(table)} AS source, {values} FROM {table} WHERE {id_column} IS NOT NULL{where}"
            )
        columns = [_column(t.type) for t in self.rules.types]
        key = " || ".join(
            f"CASE WHEN {c} IS NULL THEN '' ELSE {literal(f'{len(t.type)}:{t.type}')} || CAST(length({c}) AS VARCHAR) || ':' || {c} END"
            for t, c in sorted(zip(self.rules.types, columns, strict=True), key=lambda p: p[0].type)
        )
        has_any = " OR ".join(f"{c} IS NOT NULL" for c in columns)
        older = ""
        if above is not None:
            older = (
                " AND message_id NOT IN ("
                + " UNION ALL ".join(
                    f"SELECT CAST({id_column} AS VARCHAR) FROM {table} "
                    f"WHERE {id_column} IS NOT NULL AND ({arrival} <= {literal(above)} OR {arrival} IS NULL)"
                    for table, id_column, arrival, _ in self.tables
                )
                + ")"
            )
        return (
            f"SELECT *, {key} AS set_key FROM (\n" + "\nUNION ALL\n".join(parts) + "\n) AS m "
            f"WHERE ({has_any}){older}\n"
            "QUALIFY row_number() OVER (PARTITION BY message_id ORDER BY received_at NULLS FIRST, source) = 1"
        )

    def candidates_sql(self, messages: str, seen: str | None, first_seq: int) -> str:
        """The first message of each identifier set not seen before, with ``seq``: its position in
        arrival order after ``first_seq`` (message ids are unique here, so the order is total)."""
        unseen = f" AND set_key NOT IN (SELECT set_key FROM {seen})" if seen else ""
        return (
            f"SELECT *, {first_seq} + row_number() OVER (ORDER BY received_at NULLS FIRST, message_id, set_key) "
            f"AS seq FROM (SELECT * FROM ({messages}) AS d WHERE TRUE{unseen}\n"
            "QUALIFY row_number() OVER (PARTITION BY set_key ORDER BY received_at NULLS FIRST, message_id) = 1) AS c"
        )

    def snapshot_sql(self, mark: dt.datetime | None) -> str:
        """Total rows and rows at or below the mark, over every source. A row without an arrival
        time counts as below any mark: it sorts first (``NULLS FIRST``), so one seen before is old
        (no rebuild), and a new one is late (``below`` grows: a rebuild)."""
        bound = literal(mark) if mark is not None else "NULL"
        rows = " UNION ALL ".join(
            f"SELECT count(*) AS total, count(*) FILTER (WHERE {arrival} <= {bound} OR {arrival} IS NULL) AS below, "
            f"max({arrival}) AS high FROM {table}"
            for table, _, arrival, _ in self.tables
        )
        return f"SELECT sum(total) AS total, sum(below) AS below, max(high) AS high FROM ({rows}) AS s"


def _ensure_state(session: WarehouseSession, identity: IdentityProject) -> None:
    for statement in (
        f"CREATE SCHEMA IF NOT EXISTS {STATE_SCHEMA}",
        f"CREATE SCHEMA IF NOT EXISTS {IDENTITY_SCHEMA}",
        f"CREATE TABLE IF NOT EXISTS {STATE_TABLE} (fingerprint VARCHAR, high_water TIMESTAMP, "
        "rows_seen BIGINT, last_seq BIGINT, computed_at TIMESTAMP)",
    ):
        session.execute(statement)
    columns = ", ".join(f"{_column(t.type)} VARCHAR" for t in identity.rules.types)
    wanted = ["message_id", "received_at", "mapping", *(_column(t.type) for t in identity.rules.types)]
    if [c for c, _ in session.columns(STATE_SCHEMA, IDENTIFY_LOG.split(".")[1])] != wanted:
        # Other identifier types than the log has: start the log again from the current records.
        session.execute(
            f"CREATE OR REPLACE TABLE {IDENTIFY_LOG} (message_id VARCHAR, received_at TIMESTAMP, mapping VARCHAR, {columns})"
        )


def log_identify_records(
    session: WarehouseSession, identity: IdentityProject, mappings: list[MappingSpec], now: dt.datetime
) -> int:
    """Append the identify records not logged yet (a record whose identifiers changed is a new call).

    The log is what Segment would have received: a full rebuild replays it, so records that later
    left the model still count, as on Segment. Arrival: the mapping's timestamp column, else the
    run that first saw the record."""
    added = 0
    for spec in identify_sources(identity, mappings):
        schema, table = spec.source.table.split(".")
        columns = {c for c, _ in session.columns(schema, table)}
        if not columns:
            continue
        mapping = spec.mapping
        values = []
        for t in identity.rules.types:
            source = {"user_id": mapping.user_id, "anonymous_id": mapping.anonymous_id}.get(t.type)
            if t.type not in ("user_id", "anonymous_id"):
                field = mapping.traits.get(t.trait)
                source = field if isinstance(field, str) else (field.column if field is not None else None)
            ok = source is not None and source.lower() in columns
            values.append(f"CAST({ident(source)} AS VARCHAR)" if ok and source else "CAST(NULL AS VARCHAR)")
        arrival = (
            f"CAST({ident(mapping.timestamp)} AS TIMESTAMP)"
            if mapping.timestamp and mapping.timestamp.lower() in columns
            else literal(now)
        )
        names = [_column(t.type) for t in identity.rules.types]
        body = " || '|' || ".join(f"coalesce({n}, '')" for n in names)
        select = (
            f"SELECT {literal(mapping.name + ':')} || CAST(pk AS VARCHAR) || ':' || md5({body}) AS message_id, "
            f"received_at, {literal(mapping.name)} AS mapping, {', '.join(names)} FROM ("
            f"SELECT {ident(spec.source.primary_key)} AS pk, {arrival} AS received_at, "
            + ", ".join(f"{v} AS {n}" for v, n in zip(values, names, strict=True))
            + f" FROM {spec.source.table} WHERE {ident(spec.source.primary_key)} IS NOT NULL) AS r"
        )
        before = int(session.query(f"SELECT count(*) FROM {IDENTIFY_LOG}").scalar() or 0)
        session.execute(
            f"INSERT INTO {IDENTIFY_LOG} SELECT * FROM ({select}) AS n "
            f"WHERE n.message_id NOT IN (SELECT message_id FROM {IDENTIFY_LOG})"
        )
        added += int(session.query(f"SELECT count(*) FROM {IDENTIFY_LOG}").scalar() or 0) - before
    return added


def _identifiers_sql(rules: IdentityRules, candidates: str) -> str:
    """One row per (candidate, identifier): the candidate's columns, type ``t`` and value ``v``."""
    return " UNION ALL ".join(
        f"SELECT *, {literal(t.type)} AS t, {_column(t.type)} AS v FROM {candidates} WHERE {_column(t.type)} IS NOT NULL"
        for t in rules.types
    )


def linked_sql(rules: IdentityRules, candidates: str, stored: str | None) -> str:
    """The ``seq`` of the candidates the resolver must see: those with an identifier that another
    candidate carries too or, incrementally, that a stored profile (``stored``) holds."""
    ids = f"SELECT seq, t, v FROM ({_identifiers_sql(rules, candidates)}) AS i"
    shared = "SELECT t, v FROM ids GROUP BY t, v HAVING count(*) > 1"
    if stored:
        shared += f" UNION ALL SELECT external_id_type, external_id_value FROM {stored}"
    return (
        f"WITH ids AS ({ids}), shared AS ({shared}) "
        "SELECT DISTINCT ids.seq FROM ids JOIN shared ON shared.t = ids.t AND shared.v = ids.v"
    )


def isolated_sql(candidates: str, linked: str) -> str:
    """The isolated candidates, each with the id of the profile it creates (``profile_id``'s)."""
    return (
        "SELECT *, 'use_' || substr(sha256(message_id || chr(31) || set_key), 1, 27) AS segment_id "
        f"FROM {candidates} WHERE seq NOT IN (SELECT seq FROM {linked})"
    )


def isolated_rows_sql(rules: IdentityRules, isolated: str) -> dict[str, str]:
    """SELECTs of the rows the resolver would write for the ``isolated`` candidates, per table (in
    ``SCHEMAS`` column order): a new profile per candidate holding every identifier, no merge
    (the profile merges nowhere, so it is its own canonical profile)."""
    return {
        ID_GRAPH_TABLE: f"SELECT segment_id, segment_id, received_at, message_id, seq FROM {isolated}",
        EXTERNAL_ID_TABLE: "SELECT segment_id, segment_id, t, v, substr(sha256(t || ':' || v), 1, 32), "
        f"received_at, message_id, seq FROM ({_identifiers_sql(rules, isolated)}) AS i",
        SETS_TABLE: f"SELECT set_key, segment_id, CAST(NULL AS VARCHAR), message_id, received_at, seq FROM {isolated}",
    }


def _messages(rows: Iterator[list[dict]], rules: IdentityRules) -> Iterator[Message]:
    columns = [(t.type, _column(t.type)) for t in rules.types]  # once, not per row
    for batch in rows:
        for row in batch:
            identifiers = tuple((kind, row[column]) for kind, column in columns if row[column] is not None)
            yield Message(row["message_id"], row["received_at"], identifiers, row["seq"], row["set_key"])


def _preload(
    session: WarehouseSession, graph: Graph, candidates: str, rules: IdentityRules, scratch: Scratch
) -> None:
    """Load the stored state of every profile the candidates' identifiers reach (incremental runs)."""
    import pyarrow as pa  # ~0.2 s, paid by an identity run, not by each definitions load

    pairs = " UNION ".join(
        f"SELECT {literal(t.type)} AS t, {_column(t.type)} AS v FROM {candidates} WHERE {_column(t.type)} IS NOT NULL"
        for t in rules.types
    )
    owners = session.query(
        f"SELECT m.external_id_type, m.external_id_value, m.canonical_segment_id FROM {EXTERNAL_ID_TABLE} AS m "
        f"JOIN ({pairs}) AS c ON c.t = m.external_id_type AND c.v = m.external_id_value"
    ).rows
    profiles = sorted({r[2] for r in owners})
    if not profiles:
        return
    reach = scratch("_identity_reach", "SELECT CAST(NULL AS VARCHAR) AS p WHERE FALSE")
    session.load(reach, pa.table({"p": pa.array(profiles, pa.string())}))
    counts: dict[str, dict[str, int]] = {}
    for profile, kind, n in session.query(
        f"SELECT canonical_segment_id, external_id_type, count(*) FROM {EXTERNAL_ID_TABLE} "
        f"WHERE canonical_segment_id IN (SELECT p FROM {reach}) GROUP BY 1, 2"
    ).rows:
        counts.setdefault(profile, {})[kind] = int(n)
    created = {
        p: int(s)
        for p, s in session.query(
            f"SELECT segment_id, seq FROM {ID_GRAPH_TABLE} WHERE segment_id IN (SELECT p FROM {reach})"
        ).rows
    }
    graph.preload({(t, v): p for t, v, p in owners}, counts, created)


def _arrow(table: str, rows: list[tuple]) -> pa.Table:
    import pyarrow as pa  # ~0.2 s, paid by an identity run, not by each definitions load

    types = {"VARCHAR": pa.string(), "BIGINT": pa.int64(), "TIMESTAMP": pa.timestamp("us")}
    return pa.table(
        {name: pa.array([r[i] for r in rows], types[kind]) for i, (name, kind) in enumerate(SCHEMAS[table])}
    )


def compute_identity(
    session: WarehouseSession,
    identity: IdentityProject,
    event_tables: list[tuple[str, str]],
    mappings: list[MappingSpec],
    now: dt.datetime,
    full_refresh: bool = False,
) -> IdentityRunStats:
    """Bring the identity tables up to date: incrementally when that is exact, else from scratch;
    or, with ``graph.source: segment``, from Segment's landed Profiles Sync tables."""
    if identity.config.graph.source == "segment":
        return compute_from_segment(session, identity)
    started = time.perf_counter()
    now = utc_naive(now)
    _ensure_state(session, identity)
    log_identify_records(session, identity, mappings, now)
    sources = Sources(session, identity, event_tables)
    fingerprint = sources.fingerprint()
    previous = session.query(f"SELECT * FROM {STATE_TABLE}").dicts()
    state = previous[0] if previous else None
    reason = None
    if full_refresh:
        reason = "full refresh requested"
    elif state is None:
        reason = "no identity state yet"
    elif state["fingerprint"] != fingerprint:
        reason = "identity rules or sources changed since the last run"
    elif any(not session.table_exists(*t.split(".")) for t in (*SCHEMAS, IDENTIFY_LOG)):
        reason = "an identity table is missing"
    mark = state["high_water"] if state and reason is None else None
    snapshot = session.query(sources.snapshot_sql(mark)).dicts()[0]
    if reason is None and state is not None and int(snapshot["below"] or 0) != int(state["rows_seen"]):
        reason = (
            f"messages changed at or below the arrival mark {mark} (late or deleted messages): "
            f"{int(snapshot['below'] or 0)} rows, {state['rows_seen']} at the last run"
        )
    graph = Graph(identity.rules)
    full = reason is not None
    first_seq = 0 if full or state is None else int(state["last_seq"])
    with scratch_tables(session) as scratch:
        messages = sources.messages_sql(None if full else mark)
        every = scratch(
            "_identity_every_candidate",
            sources.candidates_sql(messages, None if full else SETS_TABLE, first_seq),
        )
        linked = scratch(
            "_identity_linked", linked_sql(identity.rules, every, None if full else EXTERNAL_ID_TABLE)
        )
        isolated = scratch("_identity_isolated", isolated_sql(every, linked))
        candidates = CANDIDATES_TABLE
        session.execute(
            f"CREATE OR REPLACE TABLE {candidates} AS SELECT * FROM {every} WHERE seq IN (SELECT seq FROM {linked})"
        )
        counted = session.query(f"SELECT (SELECT count(*) FROM {isolated}), max(seq) FROM {every}")
        count, last = counted.rows[0]
        isolated_count = int(count or 0)
        last_seq = first_seq if last is None else int(last)
        if not full:
            _preload(session, graph, candidates, identity.rules, scratch)
        sets: list[tuple] = []
        demotions = 0
        stream = session.stream(f"SELECT * FROM {candidates} ORDER BY seq", BATCH_ROWS)
        for message in _messages(stream, identity.rules):
            outcome = graph.resolve(message)
            if outcome is None:
                continue
            demotions += bool(outcome.demoted)
            demoted = json.dumps([list(i) for i in outcome.demoted]) if outcome.demoted else None
            sets.append(
                (
                    message.set_key,
                    outcome.segment_id,
                    demoted,
                    message.message_id,
                    message.received_at,
                    message.seq,
                )
            )
        session.execute(f"DROP TABLE IF EXISTS {candidates}")
        _write(session, graph, sets, isolated_rows_sql(identity.rules, isolated), full, scratch)
        high = snapshot["high"] if snapshot["high"] is not None else mark
        total = int(snapshot["total"] or 0)
        with transaction(session):
            session.execute(f"DELETE FROM {STATE_TABLE}")
            session.execute(
                f"INSERT INTO {STATE_TABLE} VALUES ({literal(fingerprint)}, {literal(high)}, {total}, {last_seq}, {literal(now)})"
            )
    profiles = int(
        session.query(
            f"SELECT count(*) FROM {ID_GRAPH_TABLE} WHERE segment_id = canonical_segment_id"
        ).scalar()
        or 0
    )
    return IdentityRunStats(
        "full" if full else "incremental",
        reason or f"{len(sets) + isolated_count} new identifier set(s) since the last run",
        len(sets) + isolated_count,
        len(graph.new_profiles) + isolated_count,
        len(graph.merges),
        demotions,
        profiles,
        time.perf_counter() - started,
    )


def _write(
    session: WarehouseSession,
    graph: Graph,
    sets: list[tuple],
    isolated: dict[str, str],
    full: bool,
    scratch: Scratch,
) -> None:
    """Write the graph's changes and the isolated candidates' rows (``isolated``: a SELECT per
    table): new rows, and every stored canonical id a merge moved."""
    import pyarrow as pa  # ~0.2 s, paid by an identity run, not by each definitions load

    canonical = graph.canonical
    rows: dict[str, list[tuple[Any, ...]]] = {
        ID_GRAPH_TABLE: [
            (p, canonical(p), m.received_at, m.message_id, m.seq) for p, m in graph.new_profiles
        ],
        EXTERNAL_ID_TABLE: [
            (canonical(p), p, t, v, external_id_hash(t, v), m.received_at, m.message_id, m.seq)
            for (t, v), p, m in graph.new_mappings
        ],
        MERGES_TABLE: [(a, b, canonical(b), m.received_at, m.message_id, m.seq) for a, b, m in graph.merges],
        SETS_TABLE: sets,
    }
    moved = [(a, canonical(a)) for a, _, _ in graph.merges]
    staged = {}
    for table, data in rows.items():
        name = "_identity_new_" + table.split(".")[1]
        staged[table] = scratch(
            name,
            "SELECT " + ", ".join(f"CAST(NULL AS {k}) AS {n}" for n, k in SCHEMAS[table]) + " WHERE FALSE",
        )
        if data:
            session.load(staged[table], _arrow(table, data))
    if moved:
        staged_moves = scratch(
            "_identity_moves", "SELECT CAST(NULL AS VARCHAR) AS old, CAST(NULL AS VARCHAR) AS new WHERE FALSE"
        )
        session.load(staged_moves, pa.table({"old": [a for a, _ in moved], "new": [b for _, b in moved]}))
    with transaction(session):
        for table, stage in staged.items():
            select = f"SELECT * FROM {stage}" + (f" UNION ALL {isolated[table]}" if table in isolated else "")
            if full:
                session.execute(f"CREATE OR REPLACE TABLE {table} AS {select}")
            else:
                session.execute(f"INSERT INTO {table} {select}")
        if moved and not full:
            for table in (ID_GRAPH_TABLE, EXTERNAL_ID_TABLE, MERGES_TABLE):
                session.execute(
                    f"UPDATE {table} AS t SET canonical_segment_id = mv.new FROM {staged_moves} AS mv "
                    "WHERE t.canonical_segment_id = mv.old"
                )


LANDED_COLUMNS = {
    "id_graph_updates": (
        "segment_id",
        "canonical_segment_id",
        "timestamp",
        "triggering_event_id",
        "seq",
        "uuid_ts",
    ),
    "external_id_mapping_updates": (
        "segment_id",
        "external_id_type",
        "external_id_value",
        "external_id_hash",
        "timestamp",
        "triggering_event_id",
        "seq",
        "uuid_ts",
    ),
}
"""The columns of Segment's landed Profiles Sync tables the identity layer reads (Segment's names)."""
MAX_CHAIN = 64
"""Merge chains longer than this in the landed ``id_graph_updates`` are taken as a cycle."""


def segment_graph_sql(landed_schema: str) -> dict[str, str]:
    """The identity tables from Segment's landed ``_updates`` tables (DuckDB dialect; pure).

    ``id_graph``: per ``segment_id``, its creation (the first row by ``seq``) and its canonical
    profile (the latest row's); ``external_id_mapping``: per identifier, the first association,
    under the current canonical profile; ``profile_merges``: per merged-away profile, the row that
    first pointed it elsewhere. Segment writes a new ``id_graph_updates`` row for every profile a
    merge re-points, so the latest row is already the end of the chain; ``follow_chains_sql``
    closes any gap left by rows landing out of order."""
    updates = f"{ident(landed_schema)}.id_graph_updates"
    mappings = f"{ident(landed_schema)}.external_id_mapping_updates"
    graph_rows = (
        "SELECT CAST(segment_id AS VARCHAR) AS segment_id, CAST(canonical_segment_id AS VARCHAR) AS canonical, "
        "CAST(timestamp AS TIMESTAMP) AS ts, CAST(triggering_event_id AS VARCHAR) AS event_id, "
        f"CAST(seq AS BIGINT) AS seq, CAST(uuid_ts AS TIMESTAMP) AS uuid_ts FROM {updates} WHERE segment_id IS NOT NULL"
    )
    return {
        ID_GRAPH_TABLE: f"""CREATE OR REPLACE TABLE {ID_GRAPH_TABLE} AS
WITH u AS ({graph_rows}),
first_row AS (
    SELECT * FROM u QUALIFY row_number() OVER (PARTITION BY segment_id ORDER BY seq NULLS FIRST, uuid_ts NULLS FIRST) = 1
), last_row AS (
    SELECT * FROM u QUALIFY row_number() OVER (PARTITION BY segment_id ORDER BY seq DESC NULLS LAST, uuid_ts DESC NULLS LAST) = 1
)
SELECT f.segment_id, coalesce(l.canonical, f.segment_id) AS canonical_segment_id, f.ts AS timestamp,
       f.event_id AS triggering_event_id, f.seq
FROM first_row AS f JOIN last_row AS l ON l.segment_id = f.segment_id""",
        EXTERNAL_ID_TABLE: f"""CREATE OR REPLACE TABLE {EXTERNAL_ID_TABLE} AS
SELECT coalesce(g.canonical_segment_id, e.segment_id) AS canonical_segment_id, e.segment_id,
       e.external_id_type, e.external_id_value, e.external_id_hash, e.ts AS timestamp,
       e.event_id AS triggering_event_id, e.seq
FROM (
    SELECT CAST(segment_id AS VARCHAR) AS segment_id, lower(CAST(external_id_type AS VARCHAR)) AS external_id_type,
           CAST(external_id_value AS VARCHAR) AS external_id_value, CAST(external_id_hash AS VARCHAR) AS external_id_hash,
           CAST(timestamp AS TIMESTAMP) AS ts, CAST(triggering_event_id AS VARCHAR) AS event_id,
           CAST(seq AS BIGINT) AS seq, CAST(uuid_ts AS TIMESTAMP) AS uuid_ts
    FROM {mappings}
    WHERE segment_id IS NOT NULL AND external_id_type IS NOT NULL AND external_id_value IS NOT NULL
) AS e
LEFT JOIN {ID_GRAPH_TABLE} AS g ON g.segment_id = e.segment_id
QUALIFY row_number() OVER (
    PARTITION BY e.external_id_type, e.external_id_value ORDER BY e.seq NULLS FIRST, e.uuid_ts NULLS FIRST
) = 1""",
        MERGES_TABLE: f"""CREATE OR REPLACE TABLE {MERGES_TABLE} AS
SELECT u.segment_id, u.canonical AS merged_into, g.canonical_segment_id, u.ts AS timestamp,
       u.event_id AS triggering_event_id, u.seq
FROM ({graph_rows}) AS u JOIN {ID_GRAPH_TABLE} AS g ON g.segment_id = u.segment_id
WHERE u.canonical <> u.segment_id
QUALIFY row_number() OVER (PARTITION BY u.segment_id ORDER BY u.seq NULLS FIRST, u.uuid_ts NULLS FIRST) = 1""",
    }


BROKEN_CHAINS_SQL = (
    f"SELECT count(*) FROM {ID_GRAPH_TABLE} AS t JOIN {ID_GRAPH_TABLE} AS g ON g.segment_id = t.canonical_segment_id "
    "WHERE g.canonical_segment_id <> g.segment_id"
)
FOLLOW_CHAINS_SQL = (
    f"UPDATE {ID_GRAPH_TABLE} AS t SET canonical_segment_id = g.canonical_segment_id FROM {ID_GRAPH_TABLE} AS g "
    "WHERE g.segment_id = t.canonical_segment_id AND g.canonical_segment_id <> g.segment_id "
    "AND g.canonical_segment_id <> t.segment_id"
)
"""One hop along merge chains whose end is not in the latest row yet (``A → B``, later ``B → C``)."""


def compute_from_segment(session: WarehouseSession, identity: IdentityProject) -> IdentityRunStats:
    """Replace the identity tables with Segment's own graph, read from its landed Profiles Sync tables.

    The local resolver's state is cleared, so switching back to ``source: local`` rebuilds from
    the events instead of extending Segment's graph."""
    started = time.perf_counter()
    landed = identity.config.graph.landed_schema
    assert landed is not None  # validated with the file
    for table, wanted in LANDED_COLUMNS.items():
        have = {c for c, _ in session.columns(landed, table)}
        if not have:
            raise WarehouseError(
                f"{identity.file} (field 'graph.landed_schema'): {landed}.{table} does not exist. "
                "Point `landed_schema` at the schema where Segment's Profiles Sync lands its tables, "
                "or set `graph.source: local`."
            )
        missing = [c for c in wanted if c not in have]
        if missing:
            raise WarehouseError(
                f"{identity.file} (field 'graph.landed_schema'): {landed}.{table} has no column(s) "
                f"{', '.join(missing)}; it does not look like Segment's Profiles Sync table."
            )
    _ensure_state(session, identity)
    statements = segment_graph_sql(landed)
    with transaction(session):
        session.execute(statements[ID_GRAPH_TABLE])
        for _ in range(MAX_CHAIN):
            if not int(session.query(BROKEN_CHAINS_SQL).scalar() or 0):
                break
            session.execute(FOLLOW_CHAINS_SQL)
        else:
            raise WarehouseError(
                f"{landed}.id_graph_updates: merge chains do not end after {MAX_CHAIN} hops "
                "(a cycle of canonical_segment_id); check the landed table."
            )
        session.execute(statements[EXTERNAL_ID_TABLE])
        session.execute(statements[MERGES_TABLE])
        session.execute(f"DELETE FROM {STATE_TABLE}")
    counts = session.query(
        f"SELECT count(*) FILTER (WHERE segment_id = canonical_segment_id), count(*) FILTER (WHERE segment_id <> canonical_segment_id) "
        f"FROM {ID_GRAPH_TABLE}"
    ).rows[0]
    return IdentityRunStats(
        "segment",
        f"read Segment's graph from {landed}.id_graph_updates and {landed}.external_id_mapping_updates",
        0,
        0,
        int(counts[1] or 0),
        0,
        int(counts[0] or 0),
        time.perf_counter() - started,
    )
