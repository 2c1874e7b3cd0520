"""The two delivery modes of a sync, behind one interface: live (to Segment) and outbox (dry run).

The engine never asks "is this a dry run?": it hands each rendered chunk to its delivery and
counts what comes back. Live delivery sends the chunk through a ``Sender`` and writes the
acknowledgements and failures; the outbox delivery writes what would have been sent and touches
no retry state. Everything that differs between the two lives here, so a third mode (a canary,
a second destination) is one more class, not a dozen more ``if``s in the engine.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable, Sequence
from concurrent.futures import Future
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, NamedTuple, Protocol, TypeGuard, runtime_checkable

from segment_profiles_pipeline.config import MappingConfig
from segment_profiles_pipeline.segment.outcomes import Outcome
from segment_profiles_pipeline.segment.spec import DRY_RUN_SALT
from segment_profiles_pipeline.state import ledger, watermarks
from segment_profiles_pipeline.state.failed_records import Failure, reason_code
from segment_profiles_pipeline.state.outbox import OutboxRow, rejected_row
from segment_profiles_pipeline.state.writer import StateWriter
from segment_profiles_pipeline.sync.plan import Plan, PlanSpec
from segment_profiles_pipeline.warehouse.base import WarehouseSession, transaction

if TYPE_CHECKING:
    import pyarrow as pa

Results = Generator[tuple["Chunk", "ChunkResult"], None, None]
"""What ``Delivery.record_all`` yields: each chunk with its result (closed by the engine when it stops)."""


@runtime_checkable
class Sender(Protocol):
    """Delivers serialised messages; one outcome per message (None = acknowledged)."""

    @property
    def destination_salt(self) -> str:
        """A hash of the destination's write key: message ids differ per destination."""
        ...

    def deliver(self, messages: Sequence[bytes]) -> Sequence[Outcome]: ...


class PipelinedSender(Sender, Protocol):
    """A sender that can start a delivery and answer later (``SegmentClient``), so live delivery
    renders the next chunk while this one is on the wire."""

    def submit(self, messages: Sequence[bytes]) -> Future[list[Outcome]]: ...


def pipelined(sender: Sender) -> TypeGuard[PipelinedSender]:
    """True when the sender's class itself defines ``submit``. A wrapper that intercepts
    ``deliver`` and forwards everything else (``__getattr__``) stays a plain sender, so its
    ``deliver`` is never bypassed."""
    return callable(getattr(type(sender), "submit", None))


class PlannedMessage(NamedTuple):
    """One rendered plan row: what the ledger needs once Segment acknowledges it. A row of
    ``Chunk.planned``, for the paths that go record by record (failures, the outbox, the
    Python builder)."""

    key: str
    checksum: str
    identity: str | None
    op: str  # add | update | delete
    replaces: bool = True
    """False only when the plan saw no ledger row for the key (not even a tombstone), so its
    acknowledgement has no row to replace (``state.ledger.record``); True is always safe."""


PLANNED_COLUMNS = ("record_key", "checksum", "identity", "op", "replaces")
"""``Chunk.planned``'s columns, in ``PlannedMessage``'s order."""


def planned_schema() -> pa.Schema:
    import pyarrow as pa  # ~0.2 s, paid by a sync, not by each definitions load

    types = (pa.string(), pa.string(), pa.string(), pa.string(), pa.bool_())
    return pa.schema(list(zip(PLANNED_COLUMNS, types, strict=True)))


def planned_table(rows: Sequence[PlannedMessage]) -> pa.Table:
    """``PlannedMessage`` rows as ``Chunk.planned``."""
    return ledger.rows_table(rows, planned_schema())


@dataclass
class Chunk:
    """One chunk of plan rows turned into messages, plus the rows rejected while rendering.

    ``planned`` holds one row per message, in the same order (``PLANNED_COLUMNS``), as Arrow
    columns: the SQL renderer's rows arrive as Arrow, and the acknowledgements of a chunk are
    written from those columns without a Python object per record (``Live._write``)."""

    messages: list[bytes] = field(default_factory=list)
    planned: pa.Table = field(default_factory=lambda: planned_table(()))
    rejected: list[Failure] = field(default_factory=list)

    def planned_rows(self, indices: Sequence[int] | None = None) -> list[PlannedMessage]:
        """``planned`` as rows: all of them, or those at ``indices``."""
        import pyarrow as pa

        table = self.planned if indices is None else self.planned.take(pa.array(indices, pa.int64()))
        return [PlannedMessage(*row) for row in zip(*table.to_pydict().values(), strict=True)]


@dataclass(frozen=True)
class ChunkResult:
    """What a delivery did with one chunk: counts for the report and the first error, if any."""

    sent: int
    delivered: int
    failed: int
    first_error: str | None = None


@dataclass
class SyncStage:
    """What every stage of one sync of one mapping shard works on."""

    session: WarehouseSession
    mapping: MappingConfig
    plan: PlanSpec
    writer: StateWriter
    log: Callable[[str], None]


class Delivery(Protocol):
    """Where a sync's messages go. ``dry_run`` only labels reports; behaviour lives in the methods,
    called in this order: ``prepare`` (before the plan) → ``reject`` (the plan's invalid keys) →
    ``record_all`` over the chunks → ``settle``."""

    @property
    def dry_run(self) -> bool: ...

    @property
    def destination_salt(self) -> str: ...

    def prepare(self, stage: SyncStage, reset: bool) -> SyncStage: ...

    def reject(self, stage: SyncStage, failures: Sequence[Failure]) -> None: ...

    def record_all(self, stage: SyncStage, chunks: Iterable[Chunk]) -> Results:
        """Each chunk with what became of it, in order; a chunk's result only once it is recorded."""
        ...

    def settle(self, stage: SyncStage) -> None: ...


def _rejection(chunk: Chunk) -> str | None:
    first = chunk.rejected[0] if chunk.rejected else None
    return f"record '{first.key}': {first.reason}" if first else None


class Outbox:
    """Dry run: the latest run's payloads (and rejected records with their reasons) go to the
    outbox table; nothing is sent, the ledger and the retry state are untouched."""

    dry_run = True
    destination_salt = DRY_RUN_SALT

    def prepare(self, stage: SyncStage, reset: bool) -> SyncStage:
        """A dry run never resets (it would have to forget acknowledged state) nor prunes."""
        return stage

    def reject(self, stage: SyncStage, failures: Sequence[Failure]) -> None:
        """No retry state for a dry run: the plan's invalid keys are only counted. The plan stands,
        so the outbox is emptied here for this run's payloads."""
        stage.writer.clear_outbox()

    def record(self, stage: SyncStage, chunk: Chunk) -> ChunkResult:
        rows = [
            OutboxRow(p.key, p.op, data.decode())
            for p, data in zip(chunk.planned_rows(), chunk.messages, strict=True)
        ]
        rows += [rejected_row(f.key, f.reason_code, f.reason) for f in chunk.rejected]
        stage.writer.outbox(rows)
        return ChunkResult(sent=0, delivered=len(chunk.messages), failed=0, first_error=_rejection(chunk))

    def record_all(self, stage: SyncStage, chunks: Iterable[Chunk]) -> Results:
        for chunk in chunks:
            yield chunk, self.record(stage, chunk)

    def settle(self, stage: SyncStage) -> None:
        """Nothing was acknowledged, so nothing moves: not the ledger, not a watermark."""


OUTBOX = Outbox()
"""The dry-run delivery (stateless, so one instance serves every sync)."""


class Live:
    """Send each chunk through ``sender``; acknowledge exactly what Segment accepted."""

    dry_run = False

    def __init__(self, sender: Sender):
        self.sender = sender

    @property
    def destination_salt(self) -> str:
        return self.sender.destination_salt

    def prepare(self, stage: SyncStage, reset: bool) -> SyncStage:
        """Segment's *Reset sync* (forget what was acknowledged, and the watermark) and tombstone pruning."""
        name, shard = stage.mapping.name, stage.plan.shard
        if reset:
            stage.writer.reset(stage.plan.shards)
            watermarks.forget(stage.session, name, shard)
            stage = replace(stage, plan=replace(stage.plan, watermark=None))
            stage.log(
                f"reset: forgot every acknowledged record of '{name}' shard {shard}; all records are sent again"
            )
        stage.writer.prune_tombstones()
        return stage

    def reject(self, stage: SyncStage, failures: Sequence[Failure]) -> None:
        """The plan's null and duplicated keys become failed records (parked until the model changes)."""
        stage.writer.fail(failures, stage.mapping.retry)

    def record(self, stage: SyncStage, chunk: Chunk) -> ChunkResult:
        """Send one chunk, wait for Segment's answers, write them."""
        return self._finish(stage, chunk, self._submit(chunk))

    def record_all(self, stage: SyncStage, chunks: Iterable[Chunk]) -> Results:
        """Overlapped when the sender can answer later (``pipelined``): the caller renders chunk
        N+1 (pulling ``chunks``) while chunk N is on the wire. Everything else keeps the order of
        one chunk at a time: chunk N's answers are written, and the caller has checked its lock,
        before chunk N+1 is sent; a chunk's records are written only from its own answers. If
        rendering fails, the chunk in flight is still recorded before the error goes on."""
        if not pipelined(self.sender):
            for chunk in chunks:
                yield chunk, self.record(stage, chunk)
            return
        source = iter(chunks)
        sent: tuple[Chunk, Future[list[Outcome]] | None] | None = None
        error: Exception | None = None
        try:
            while True:
                rendered: Chunk | None = None
                try:
                    rendered = next(source, None)  # while `sent` is in flight
                except Exception as exc:  # `sent` is recorded first: its answers are true
                    error = exc
                if sent is not None:
                    done, sent = sent, None
                    yield done[0], self._finish(stage, *done)  # the caller checks its lock here
                if rendered is None:
                    break
                sent = (rendered, self._submit(rendered))
        finally:
            if sent is not None and sent[1] is not None:
                sent[1].cancel()  # interrupted while rendering: nothing of this delivery is recorded
        if error is not None:
            raise error

    def _submit(self, chunk: Chunk) -> Future[list[Outcome]] | None:
        """Start sending a chunk (None: nothing to send); a plain ``Sender`` delivers it at once."""
        if not chunk.messages:
            return None
        if pipelined(self.sender):
            return self.sender.submit(chunk.messages)
        future: Future[list[Outcome]] = Future()
        future.set_result(list(self.sender.deliver(chunk.messages)))
        return future

    def _finish(self, stage: SyncStage, chunk: Chunk, future: Future[list[Outcome]] | None) -> ChunkResult:
        """Wait for a chunk's answers; write what Segment accepted and what failed."""
        try:
            outcomes = future.result() if future is not None else []
        except BaseException:
            if future is not None:
                future.cancel()  # an interrupt while waiting abandons the delivery
            raise
        with _one_commit(stage.writer.session):
            undelivered = self._write(chunk, outcomes, stage.writer)
            stage.writer.fail(chunk.rejected + undelivered, stage.mapping.retry)
        first = _rejection(chunk) or next((f"record '{f.key}': {f.reason}" for f in undelivered), None)
        return ChunkResult(
            sent=len(chunk.messages),
            delivered=len(chunk.messages) - len(undelivered),
            failed=len(undelivered),
            first_error=first,
        )

    def _write(self, chunk: Chunk, outcomes: Sequence[Outcome], writer: StateWriter) -> list[Failure]:
        """Write what Segment accepted of a sent chunk, return what it did not.

        Set-based on the chunk's Arrow columns: the accepted rows are a filter of ``planned``
        (all of it in the common case), never a Python object per record; only failures, and
        the keys of acknowledged clears (deletes are few), become Python values."""
        if not chunk.messages:
            return []
        import pyarrow as pa
        import pyarrow.compute as pc

        if len(outcomes) != len(chunk.messages):
            raise ValueError(f"{len(outcomes)} outcomes for {len(chunk.messages)} messages")
        failed = [(i, outcome) for i, outcome in enumerate(outcomes) if outcome is not None]
        accepted = chunk.planned
        if failed:
            accepted = accepted.filter(pa.array([outcome is None for outcome in outcomes]))
        clears = pc.equal(accepted["op"], "delete")
        writer.acknowledge(ledger.acknowledged(accepted.filter(pc.invert(clears))))
        writer.forget_keys(accepted.filter(clears)["record_key"].to_pylist())
        rows = chunk.planned_rows([i for i, _ in failed])
        return [
            Failure(
                planned.key,
                planned.checksum,
                "delivery",
                outcome.reason,
                chunk.messages[i][:2000].decode(errors="replace"),
                reason_code(outcome.code),
                outcome.record_level,
            )
            for (i, outcome), planned in zip(failed, rows, strict=True)
        ]

    def settle(self, stage: SyncStage) -> None:
        """Records the mapping deliberately does not send still move the ledger forward; the quick
        hashes of what this sync acknowledged (tracked unsent records included) and of the plan's
        ``refresh`` rows go in; then the watermark, last, when every planned row is acknowledged or
        in failed_records."""
        mapping, plan, writer = stage.mapping, stage.plan, stage.writer
        planned = Plan(plan, stage.session)
        if mapping.send == "update":
            # new records are tracked (not sent), so their later changes count as updates
            writer.track_unsent(lambda into: planned.copy_records(("add",), into))
        writer.remember_quick_hashes(planned.table)
        # Nothing to tell Segment: with `ignore` for any delete, with `clear_traits` when another
        # live record still addresses the profile. Forget it, so a comeback is an add.
        forgotten = ("delete", "delete_shared") if mapping.on_delete == "ignore" else ("delete_shared",)
        writer.forget_planned(lambda into: planned.copy_records(forgotten, into))
        if mapping.incremental_column:
            watermarks.advance(
                stage.session,
                mapping.name,
                plan.shard,
                mapping.incremental_column,
                plan.plan_table,
                plan.watermark,
            )


def _one_commit(session: WarehouseSession) -> AbstractContextManager[None]:
    """One chunk's ledger and failure writes as one transaction on DuckDB: one unit, and one log
    write and sync instead of one per statement (measured: the largest wait left in a first
    sync). Snowflake commits any open transaction at the scratch tables' DDL, so there the
    statements commit one by one, as before."""
    return transaction(session) if session.dialect == "duckdb" else nullcontext()


def delivery_for(target: Sender | Live | Outbox) -> Delivery:
    """A bare ``Sender`` (the HTTP client, a test double, a wrapper) means live delivery to it.

    Decided by the two delivery classes, not by ``isinstance(target, Sender)``: from Python 3.12 a
    runtime protocol check reads attributes statically, so a wrapper that forwards
    ``destination_salt`` through ``__getattr__`` would stop counting as a sender there."""
    if isinstance(target, Live | Outbox):
        return target
    return Live(target)
