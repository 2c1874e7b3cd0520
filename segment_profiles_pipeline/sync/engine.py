"""Run one sync of one mapping shard, as stages: prepare → plan → reject → per chunk (render →
deliver → record) → settle → status (``_run``, one small function per stage). What differs
between a live sync and a dry run is the ``Delivery`` (``sync/delivery.py``); the stages here are
the same for both. State is written through ``segment_profiles_pipeline.state``.

The invariant everything here protects: **a record enters the ledger only after Segment
answered its batch with the documented success answer**. Everything else (crash, 429, 5xx,
timeout, an answer that is not Segment's, bad row) leaves the record out of the ledger, so the
next sync plans it again with the latest data, under the same deterministic ``messageId`` when
neither the data nor the ledger changed (Segment deduplicates the resend), and under a new one
once anything for the record was acknowledged (see ``payloads.message_id``).
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from segment_profiles_pipeline.config import SUBSCRIPTION_FIELDS
from segment_profiles_pipeline.errors import SyncError
from segment_profiles_pipeline.project import MappingSpec
from segment_profiles_pipeline.state import ensure_state, watermarks
from segment_profiles_pipeline.state.failed_records import Failure
from segment_profiles_pipeline.state.sync_history import SyncStatus
from segment_profiles_pipeline.state.sync_locks import SyncLock, ensure_held
from segment_profiles_pipeline.state.writer import StateWriter
from segment_profiles_pipeline.sync.delivery import (
    PLANNED_COLUMNS,
    Chunk,
    ChunkResult,
    Delivery,
    Live,
    Outbox,
    PlannedMessage,
    Sender,
    SyncStage,
    delivery_for,
    planned_schema,
    planned_table,
)
from segment_profiles_pipeline.sync.hot_loop import fewer_collections
from segment_profiles_pipeline.sync.payloads import (
    ID_SEPARATOR,
    InvalidRecord,
    PayloadBuilder,
    encode,
    identity_of,
    message_id,
    message_ids,
)
from segment_profiles_pipeline.sync.plan import (
    CHECKSUM,
    GENERATION,
    IDENTITY,
    KEY,
    OP,
    OPS_SENT,
    Plan,
    PlanCounts,
    PlanSpec,
    drop_plan,
)
from segment_profiles_pipeline.sync.render_sql import SqlRenderer, sql_renderer
from segment_profiles_pipeline.warehouse.base import WarehouseSession

if TYPE_CHECKING:
    import pyarrow as pa

CHUNK_ROWS = 20_000
SAMPLE_PAYLOADS = 5

__all__ = ["CHUNK_ROWS", "Sender", "SyncReport", "mapped_columns", "run_sync"]


@dataclass
class SyncReport:
    mapping: str
    sync_id: str
    shard: int
    dry_run: bool
    status: SyncStatus = "running"
    counts: dict[str, int] = field(default_factory=dict)
    delivery_rate: float | None = None
    duration_s: float = 0.0
    first_error: str | None = None
    samples: list[dict[str, Any]] = field(default_factory=list)

    @property
    def messages_per_s(self) -> float:
        done = self.counts.get("delivered", 0) if not self.dry_run else self.counts.get("planned", 0)
        return done / self.duration_s if self.duration_s else 0.0


def mapped_columns(spec: MappingSpec, columns: list[str]) -> tuple[str, ...]:
    """The columns a mapping reads, validated against the table, in a stable order."""
    m = spec.mapping
    available = set(columns)
    wanted: dict[str, str] = {}
    for field_name in ("user_id", "anonymous_id", "group_id", "timestamp", "message_id"):
        column = getattr(m, field_name)
        if column:
            wanted[column.lower()] = field_name
    for key, trait in m.trait_columns(columns).items():
        wanted.setdefault(trait.column.lower(), f"traits.{key}")
    # Fields of the track and subscription actions (and consent) come after, so the column order,
    # hence the checksum, of an identify/group mapping written before them is unchanged.
    later = {f: getattr(m, f) for f in ("consent", "incremental_column", *SUBSCRIPTION_FIELDS)}
    later["event_name"] = m.event_name.column if m.event_name else None
    later |= {f"subscription_groups.{k}": v for k, v in m.subscription_groups.items()}
    later |= {f"properties.{k}": t.column for k, t in m.property_columns(columns).items()}
    for field_name, column in later.items():
        if column:
            wanted.setdefault(column.lower(), field_name)
    for column, field_name in wanted.items():
        if column not in available:
            raise SyncError(
                f"{spec.source.file} (mapping '{m.name}', field '{field_name}'): column '{column}' is not in "
                f"{spec.source.table}, which has: {', '.join(columns)}. Fix the mapping or select the column in the model."
            )
    return tuple(wanted)


def _status(attempted: int, delivered: int, problems: int) -> tuple[SyncStatus, float]:
    """Segment's sync statuses and the delivery rate, judged on what this sync attempted.

    ``attempted`` counts deliverable records sent this time; ``problems`` counts rows rejected
    this time (bad keys, content Segment would refuse or silently drop). A record rejected for
    its content is parked until its data changes, so it makes one sync ``partial_success``, not
    every later one ``failed``; only sending something and getting nothing accepted fails.
    """
    rate = delivered / attempted if attempted else 1.0
    if attempted and delivered == 0:
        return "failed", rate
    return ("partial_success" if delivered < attempted or problems else "success"), rate


def run_sync(
    session: WarehouseSession,
    spec: MappingSpec,
    delivery: Sender | Live | Outbox,
    *,
    shard: int = 0,
    dagster_run_id: str | None = None,
    reset: bool = False,
    log: Callable[[str], None] = lambda _msg: None,
    now: dt.datetime | None = None,
) -> SyncReport:
    """Sync one shard of one mapping through ``delivery`` (a bare ``Sender`` is live delivery to it;
    ``sync.delivery.OUTBOX`` is a dry run: payloads to the outbox, ledger untouched).

    Holds the shard's lock and its ``sync_history`` row around the stages (``_run``); whatever
    happens, the plan table is dropped, the lock released and the history row closed."""
    started = time.perf_counter()
    now = (now or dt.datetime.now(dt.UTC)).replace(tzinfo=None)
    mode = delivery_for(delivery)
    mapping = spec.mapping
    sync_id = f"{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
    report = SyncReport(mapping.name, sync_id, shard, mode.dry_run)
    ensure_state(session)
    writer = StateWriter(session, mapping.name, shard, sync_id, now)
    lock = SyncLock(session, mapping.name, shard, sync_id, log=log).acquire()
    try:
        writer.start_history(mapping.shards, dagster_run_id, mode.dry_run)
        stage = SyncStage(session, mapping, _plan_spec(session, spec, shard), writer, log)
        _run(stage, spec, mode, report, reset, now)
    except Exception as exc:
        report.status = "failed"
        report.first_error = report.first_error or str(exc)
        writer.finish_history("failed", report.counts, report.delivery_rate, report.first_error)
        raise
    finally:
        report.duration_s = time.perf_counter() - started
        drop_plan(session, mapping.name, shard)
        lock.release()
    writer.finish_history(report.status, report.counts, report.delivery_rate, report.first_error)
    return report


def _run(
    stage: SyncStage, spec: MappingSpec, mode: Delivery, report: SyncReport, reset: bool, now: dt.datetime
) -> None:
    """The stages, in order: prepare → plan → reject → per chunk (render → deliver → record) →
    settle → status. Each is one call here; what differs per delivery mode is in ``mode``."""
    stage = mode.prepare(stage, reset)
    report.counts = _plan(stage, spec)
    mode.reject(stage, _rejected_keys(stage))
    chunks = _rendering(stage, mode.destination_salt, now, report)
    with fewer_collections(), closing(mode.record_all(stage, chunks)) as results:
        for chunk, result in results:  # the delivery pulls (renders) the next chunk when it is ready
            _record(report, chunk, result)
            ensure_held(stage.session, stage.mapping.name, stage.plan.shard, report.sync_id)
    mode.settle(stage)
    _conclude(report, mode.dry_run)


def _plan(stage: SyncStage, spec: MappingSpec) -> dict[str, int]:
    """Create the plan table; the report's counts, from it. Refuses to treat a model that
    returned no rows as every record deleted, unless the mapping allows it."""
    counts = plan_counts(Plan(stage.plan, stage.session).build())
    stage.log(f"plan for '{stage.mapping.name}' shard {stage.plan.shard}: {counts}")
    refuse_full_delete(spec, counts)
    return counts


def plan_counts(found: PlanCounts) -> dict[str, int]:
    """The report's counts once the plan exists: what it found, nothing sent yet."""
    return {
        **found.as_dict(),
        "rejected": 0,
        "planned": 0,
        "sent": 0,
        "delivered": 0,
        "failed": 0,
    }


def refuse_full_delete(spec: MappingSpec, counts: dict[str, int]) -> None:
    """An empty model with records synced before is a broken model far more often than a wish
    to delete everything: refuse, naming the override."""
    mapping = spec.mapping
    if counts["extracted"] == 0 and counts["deleted"] and not mapping.allow_full_delete:
        raise SyncError(
            f"{spec.source.table} returned no rows but {counts['deleted']} records were synced before: refusing to treat "
            f"every profile as deleted. If the model really is empty on purpose, set `allow_full_delete: true` on "
            f"mapping '{mapping.name}' in {spec.source.file} for one run."
        )


def _rejected_keys(stage: SyncStage) -> list[Failure]:
    """The plan's null and duplicated keys, as failed records."""
    return invalid_key_failures(stage.plan.primary_key, Plan(stage.plan, stage.session).invalid_keys())


def invalid_key_failures(primary_key: str, rows: Sequence[tuple[str, str | None, int]]) -> list[Failure]:
    """One failed record per duplicated key and one for all null keys, from (op, key, rows)."""
    return [
        Failure(
            key,
            None,
            "invalid",
            f"{n} row(s) have a null primary key '{primary_key}'; they cannot be tracked or sent. "
            "Filter them out in the model or fill the key.",
            reason_code="null_primary_key",
        )
        if op == "invalid_null_key"
        else Failure(
            key,
            None,
            "invalid",
            f"primary key '{primary_key}' value '{key}' appears in {n} rows; Segment needs one record per key. "
            "Deduplicate the model on it.",
            reason_code="duplicate_primary_key",
        )
        for op, key, n in rows
    ]


def _rendering(stage: SyncStage, salt: str, now: dt.datetime, report: SyncReport) -> Iterator[Chunk]:
    """The chunks to send (adds/updates per ``send``, deletes with ``clear_traits``), rendered
    as the delivery pulls them: by the warehouse where it can (``render_sql``, read as Arrow
    batches), else row by row by the Python builder."""
    mapping = stage.mapping
    builder = PayloadBuilder.for_mapping(mapping, dict(stage.plan.column_types))
    sent_ops = OPS_SENT[mapping.send] + (("delete",) if mapping.on_delete == "clear_traits" else ())
    renderer = sql_renderer(stage.plan, builder, stage.session.dialect, now, sent_ops)
    if renderer is None:
        rows = Plan(stage.plan, stage.session).rows(sent_ops, CHUNK_ROWS)
        return (_render(batch, builder, salt, now, report) for batch in rows)
    batches = stage.session.stream_arrow(renderer.sql, CHUNK_ROWS)
    return (_render_sql(batch, stage.session, renderer, builder, salt, now, report) for batch in batches)


def _record(report: SyncReport, chunk: Chunk, result: ChunkResult) -> None:
    """Add one delivered chunk to the report."""
    counts = report.counts
    counts["rejected"] += len(chunk.rejected)
    counts["planned"] += len(chunk.messages)
    counts["sent"] += result.sent
    counts["delivered"] += result.delivered
    counts["failed"] += result.failed
    report.first_error = report.first_error or result.first_error


def _conclude(report: SyncReport, dry_run: bool) -> None:
    """The sync's status, delivery rate (none for a dry run) and first error, from its counts."""
    counts = report.counts
    report.status, rate = _status(counts["sent"], counts["delivered"], counts["invalid"] + counts["rejected"])
    report.delivery_rate = None if dry_run else rate
    if counts["invalid"] and not report.first_error:
        report.first_error = (
            "records with a null or duplicated primary key were rejected (see failed_records)"
        )


def _plan_spec(session: WarehouseSession, spec: MappingSpec, shard: int) -> PlanSpec:
    """The plan's inputs, checked against the table as it is now."""
    schema, table = spec.source.table.split(".")
    column_types = dict(session.columns(schema, table))
    if not column_types:
        raise SyncError(
            f"{spec.source.table} does not exist; materialize the '{spec.source.name}' asset first."
        )
    if spec.source.primary_key.lower() not in column_types:
        raise SyncError(
            f"{spec.source.file} (field 'primary_key'): column '{spec.source.primary_key}' is not in {spec.source.table}."
        )
    mapped = mapped_columns(spec, list(column_types))
    column = spec.mapping.incremental_column
    return PlanSpec(
        spec.mapping,
        spec.source.table,
        spec.source.primary_key,
        mapped,
        shard,
        spec.mapping.shards,
        tuple((c, column_types[c]) for c in mapped),
        watermarks.current(session, spec.mapping.name, shard, column) if column else None,
    )


def _render_sql(
    batch: pa.RecordBatch,
    session: WarehouseSession,
    renderer: SqlRenderer,
    builder: PayloadBuilder,
    salt: str,
    now: dt.datetime,
    report: SyncReport,
) -> Chunk:
    """Messages for a batch of the render query's rows. Rows the warehouse rendered (``__head``)
    only get their message id, and their planned columns stay Arrow arrays (no dict, no object
    per record: that was ~4 µs per record); Arrow joins the texts their ids hash and the messages
    themselves (``payloads.message_ids``, ``SqlRenderer.messages``). The others go to ``_render``,
    the Python builder."""
    import pyarrow as pa
    import pyarrow.compute as pc

    rendered = pc.is_valid(batch["__head"])
    fast = batch.filter(rendered)
    hashed = pc.binary_join_element_wise(fast[KEY], fast[CHECKSUM], fast[GENERATION], ID_SEPARATOR)
    ids = message_ids(salt, builder.mapping.name, "upsert", hashed.cast(pa.binary()).to_pylist())
    messages = renderer.messages(fast["__head"], pa.array(ids, pa.string()))
    report.samples += [orjson.loads(m) for m in messages[: max(0, SAMPLE_PAYLOADS - len(report.samples))]]
    planned = pa.table(
        [fast[KEY], fast[CHECKSUM], fast["__ident"], fast[OP], _replaces(fast[GENERATION])],
        names=PLANNED_COLUMNS,
    ).cast(planned_schema())  # Snowflake's batches come from Python values: a column of nulls has no type
    others = batch.filter(pc.invert(rendered))
    rest = _render(session.arrow_rows(others) if others.num_rows else [], builder, salt, now, report)
    return Chunk(messages + rest.messages, pa.concat_tables([planned, rest.planned]), rest.rejected)


def _replaces(generation: pa.Array) -> pa.Array:
    """``PlannedMessage.replaces`` from the plan's ``__generation``, which is the ledger row's
    sync id, or '' when the key has no ledger row at all (``plan.build_plan_sql``)."""
    import pyarrow.compute as pc

    return pc.not_equal(generation, "")


def _render(
    rows: list[dict[str, Any]],
    builder: PayloadBuilder,
    salt: str,
    now: dt.datetime,
    report: SyncReport,
) -> Chunk:
    """Messages for plan rows, built by the Python builder; a row that cannot be sent is
    rejected with its reason, alone."""
    name = builder.mapping.name
    messages: list[bytes] = []
    planned: list[PlannedMessage] = []
    rejected: list[Failure] = []
    for row in rows:
        key, checksum, op, generation = row[KEY], row[CHECKSUM], row[OP], row[GENERATION]
        try:
            if op == "delete":
                clear_id = message_id(salt, name, "clear", key, checksum, generation)
                message = builder.build_clear(orjson.loads(row[IDENTITY] or "{}"), clear_id, now)
            else:
                upsert_id = message_id(salt, name, "upsert", key, checksum, generation)
                message = builder.build(row, upsert_id, now)
            data = encode(message)
        except InvalidRecord as exc:
            rejected.append(Failure(key, checksum, "invalid", str(exc), reason_code=exc.code))
            continue
        if len(report.samples) < SAMPLE_PAYLOADS:
            report.samples.append(message)
        messages.append(data)
        planned.append(PlannedMessage(key, checksum, identity_of(message), op, generation != ""))  # _replaces
    return Chunk(messages, planned_table(planned), rejected)
