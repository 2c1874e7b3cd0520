"""Run one sync of one mapping shard: plan → build → send → acknowledge → record.

The invariant everything here protects: **a record enters the ledger only after the batch
holding it got HTTP 200**. Everything else (crash, 429, 5xx, timeout, bad row) leaves the
record out of the ledger, so the next sync plans it again with the latest data, under the same
deterministic ``messageId`` when the data did not change (Segment deduplicates the resend).
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from segment_profiles_pipeline.errors import SyncError
from segment_profiles_pipeline.project import MappingSpec
from segment_profiles_pipeline.sync.ledger import Ack, Failure, StateWriter
from segment_profiles_pipeline.sync.payloads import InvalidRecord, PayloadBuilder, encode, identity_of
from segment_profiles_pipeline.sync.plan import (
    OPS_SENT,
    PlanSpec,
    build_plan_sql,
    counts_sql,
    extracted_sql,
    sendable_sql,
    shard_predicate,
)
from segment_profiles_pipeline.sync.state import ensure_state
from segment_profiles_pipeline.warehouse.base import WarehouseSession

CHUNK_ROWS = 20_000
SAMPLE_PAYLOADS = 5
LOCK_STALE_AFTER = dt.timedelta(hours=2)


class Sender(Protocol):
    def deliver(self, messages: Sequence[bytes]) -> list[str | None]: ...


@dataclass
class SyncReport:
    mapping: str
    sync_id: str
    shard: int
    dry_run: bool
    status: str = "running"
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
    for column, field_name in wanted.items():
        if column not in available:
            raise SyncError(
                f"{spec.source.file} (mapping '{m.name}', field '{field_name}'): column '{column}' is not in "
                f"{spec.source.table}, which has: {', '.join(columns)}. Fix the mapping or select the column in the model."
            )
    return tuple(wanted)


def _status(attempted: int, ok: int, invalid: int) -> tuple[str, float]:
    """Segment's sync statuses and the delivery rate.

    The rate is delivered / records the sync tried to send (payload-invalid ones included);
    rows with a null or duplicated key are model-quality problems (flagged by the model's
    primary-key checks and in failed_records) and make a sync ``partial_success`` without
    lowering its delivery rate, so an unchanged bad row does not fail every later sync.
    """
    rate = ok / attempted if attempted else 1.0
    if attempted and ok == 0:
        return "failed", rate
    return ("partial_success" if ok < attempted or invalid else "success"), rate


def run_sync(
    session: WarehouseSession,
    spec: MappingSpec,
    sender: Sender | None,
    *,
    shard: int = 0,
    dagster_run_id: str | None = None,
    reset: bool = False,
    log: Callable[[str], None] = lambda _msg: None,
    now: dt.datetime | None = None,
) -> SyncReport:
    """Sync one shard of one mapping. ``sender=None`` is a dry run (outbox, ledger untouched)."""
    started = time.perf_counter()
    now = (now or dt.datetime.now(dt.UTC)).replace(tzinfo=None)
    mapping = spec.mapping
    dry_run = sender is None
    sync_id = f"{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
    report = SyncReport(mapping.name, sync_id, shard, dry_run)
    ensure_state(session)
    writer = StateWriter(session, mapping.name, shard, sync_id, now)
    # Under DuckDB's file lock no other sync can be alive, so any lock row is a dead process's.
    writer.acquire_lock(dt.timedelta(0) if session.exclusive else LOCK_STALE_AFTER)
    writer.start_history(mapping.shards, dagster_run_id, dry_run)
    try:
        _run(session, spec, sender, writer, report, shard, reset, log, now)
    except Exception as exc:
        report.status = "failed"
        report.first_error = report.first_error or str(exc)
        writer.finish_history("failed", report.counts, report.delivery_rate, report.first_error)
        raise
    finally:
        report.duration_s = time.perf_counter() - started
        session.execute(
            f"DROP TABLE IF EXISTS {PlanSpec(mapping, spec.source.table, '', (), shard).plan_table}"
        )
        writer.release_lock()
    writer.finish_history(report.status, report.counts, report.delivery_rate, report.first_error)
    return report


def _run(
    session: WarehouseSession,
    spec: MappingSpec,
    sender: Sender | None,
    writer: StateWriter,
    report: SyncReport,
    shard: int,
    reset: bool,
    log: Callable[[str], None],
    now: dt.datetime,
) -> None:
    mapping = spec.mapping
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
    plan = PlanSpec(
        mapping,
        spec.source.table,
        spec.source.primary_key,
        mapped_columns(spec, list(column_types)),
        shard,
        mapping.shards,
    )
    builder = PayloadBuilder.for_mapping(mapping, {c: column_types[c] for c in plan.mapped_columns})
    if reset:
        writer.reset(shard_predicate("record_key", plan))
        log(
            f"reset: forgot every acknowledged record of '{mapping.name}' shard {shard}; all records are sent again"
        )

    session.execute(build_plan_sql(plan))
    ops = {str(op): int(n) for op, n in session.query(counts_sql(plan)).rows}
    extracted = int(session.query(extracted_sql(plan)).scalar() or 0)
    report.counts = {
        "extracted": extracted,
        "added": ops.get("add", 0),
        "updated": ops.get("update", 0),
        "deleted": ops.get("delete", 0),
        "invalid": ops.get("invalid_null_key", 0) + ops.get("invalid_duplicate_key", 0),
        "sent": 0,
        "delivered": 0,
        "failed": 0,
    }
    log(f"plan for '{mapping.name}' shard {shard}: {report.counts}")

    if extracted == 0 and report.counts["deleted"] and not mapping.allow_full_delete:
        raise SyncError(
            f"{spec.source.table} returned no rows but {report.counts['deleted']} records were synced before: refusing to treat "
            f"every profile as deleted. If the model really is empty on purpose, set `allow_full_delete: true` on "
            f"mapping '{mapping.name}' in {spec.source.file} for one run."
        )

    _reject_invalid_keys(session, plan, writer, mapping.retry)
    if dry_run := sender is None:
        writer.clear_outbox()
    sent_ops = OPS_SENT[mapping.send] + (("delete",) if mapping.on_delete == "clear_traits" else ())
    planned = rejected = delivered = 0
    for rows in session.stream(sendable_sql(plan, sent_ops), CHUNK_ROWS):
        messages: list[bytes] = []
        meta: list[tuple[str, str, str | None, str]] = []  # key, checksum, identity, op
        failures: list[Failure] = []
        for row in rows:
            key, checksum, op = row["__key"], row["__checksum"], row["__op"]
            try:
                if op == "delete":
                    message = builder.build_clear(orjson.loads(row["__identity"] or "{}"), key, checksum, now)
                else:
                    message = builder.build(row, key, checksum, now)
                data = encode(message)
            except InvalidRecord as exc:
                failures.append(Failure(key, checksum, "invalid", str(exc)))
                continue
            if len(report.samples) < SAMPLE_PAYLOADS:
                report.samples.append(message)
            messages.append(data)
            meta.append((key, checksum, identity_of(message), op))
        rejected += len(failures)
        planned += len(messages)
        if dry_run:
            writer.outbox([(k, op, m.decode()) for (k, _, _, op), m in zip(meta, messages, strict=True)])
        elif messages:
            reasons = sender.deliver(messages)
            outcomes = list(zip(meta, reasons, messages, strict=True))
            writer.acknowledge(
                [Ack(k, c, i) for (k, c, i, op), r, _ in outcomes if r is None and op != "delete"]
            )
            writer.forget_keys([k for (k, _, _, op), r, _ in outcomes if r is None and op == "delete"])
            failures += [
                Failure(k, c, "delivery", r, m[:2000].decode(errors="replace"))
                for (k, c, _, _), r, m in outcomes
                if r
            ]
            delivered += sum(1 for r in reasons if r is None)
            report.counts["sent"] += len(messages)
        if failures:
            report.first_error = report.first_error or f"record '{failures[0].key}': {failures[0].reason}"
            writer.fail(failures, mapping.retry)
        writer.heartbeat()

    if not dry_run:
        _settle_unsent(plan, writer, mapping.send, mapping.on_delete)
    counts = report.counts
    counts["invalid"] += rejected
    counts["planned"] = planned
    counts["delivered"] = delivered
    counts["failed"] = counts["sent"] - delivered
    ok = planned if dry_run else delivered
    report.status, report.delivery_rate = _status(ok + rejected + counts["failed"], ok, counts["invalid"])
    if counts["invalid"] and not report.first_error:
        report.first_error = (
            "records with a null or duplicated primary key were rejected (see failed_records)"
        )


def _reject_invalid_keys(session: WarehouseSession, plan: PlanSpec, writer: StateWriter, retry: Any) -> None:
    """Null and duplicated keys: one failed record per key (one for all null keys), with a reason."""
    pk = plan.primary_key
    rows = session.query(
        f"SELECT __op, __key, count(*) AS n FROM {plan.plan_table} "
        "WHERE __op IN ('invalid_null_key', 'invalid_duplicate_key') GROUP BY __op, __key"
    ).rows
    failures = [
        Failure(
            key,
            None,
            "invalid",
            f"{n} row(s) have a null primary key '{pk}'; they cannot be tracked or sent. Filter them out in the model or fill the key."
            if op == "invalid_null_key"
            else f"primary key '{pk}' value '{key}' appears in {n} rows; Segment needs one record per key. "
            "Deduplicate the model on it.",
        )
        for op, key, n in rows
    ]
    writer.fail(failures, retry)


def _settle_unsent(plan: PlanSpec, writer: StateWriter, send: str, on_delete: str) -> None:
    """Records the mapping deliberately does not send still move the ledger forward."""
    if send == "update":  # new records are tracked (not sent), so their later changes count as updates
        writer.track_unsent(f"SELECT __key, __checksum FROM {plan.plan_table} WHERE __op = 'add'")
    if on_delete == "ignore":  # nothing to tell Segment; forget the record so a comeback is an add
        writer.forget(f"SELECT __key FROM {plan.plan_table} WHERE __op = 'delete'")
