"""Segment's *Test Mapping* step: the exact payloads of a few chosen records, without a sync.

One small job per mapping, ``<mapping>_test_mapping``: give it primary-key values and it builds
their messages with the sync's own ``PayloadBuilder`` (same traits, ids, null handling, value
conversion, size and Unify limits), shows them on the run and as an observation on the mapping's
sync asset, and with ``send_test: true`` sends them to the configured destination.

A test is not a sync: it only *reads* the model. The ledger, ``failed_records``, the outbox and
``sync_history`` are untouched, so a test never changes what the next sync sends. For the same
reason every test message carries a fresh random ``messageId`` (``spp-test-<uuid>``, even when
the mapping has a ``message_id`` column): Segment drops a message whose id it saw in the last day,
and a test must never make Segment drop the real sync of the same record state.
"""

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from dagster import (
    AssetObservation,
    Config,
    Failure,
    JobDefinition,
    MetadataValue,
    OpExecutionContext,
    ResourceParam,
    TableColumn,
    TableRecord,
    TableSchema,
    job,
    op,
)
from pydantic import Field

from segment_profiles_pipeline.errors import SyncError
from segment_profiles_pipeline.project import MappingSpec
from segment_profiles_pipeline.sync.engine import Sender, mapped_columns
from segment_profiles_pipeline.sync.payloads import InvalidRecord, PayloadBuilder, encode
from segment_profiles_pipeline.sync.resources import SegmentDestination
from segment_profiles_pipeline.vocabulary import DEFAULT_KEYS, POOL, AssetKeys, mapping_test_job_name
from segment_profiles_pipeline.warehouse.base import Warehouse, WarehouseSession, ident, in_list

MAX_KEYS = 20
TEST_ID_PREFIX = "spp-test-"


class MappingTestConfig(Config):
    """Run config of a Test Mapping job."""

    keys: list[str] = Field(
        min_length=1,
        max_length=MAX_KEYS,
        description=f"Primary-key values of the records to build (1 to {MAX_KEYS}), as text.",
    )
    send_test: bool = Field(
        default=False,
        description="Also send the payloads to the configured destination (needs SEGMENT_WRITE_KEY).",
    )


@dataclass(frozen=True)
class RecordPreview:
    """One requested key: its message, or why the sync would not send it; and, once sent, the answer."""

    key: str
    message: dict[str, Any] | None = None
    reason: str | None = None
    outcome: str | None = None


@dataclass
class MappingPreview:
    mapping: str
    records: list[RecordPreview] = field(default_factory=list)
    not_found: list[str] = field(default_factory=list)
    sent: bool = False


def fresh_message_id() -> str:
    """A messageId Segment has never seen: a test must not deduplicate a later real sync."""
    return f"{TEST_ID_PREFIX}{uuid.uuid4().hex}"


def preview(
    session: WarehouseSession, spec: MappingSpec, keys: Sequence[str], now: dt.datetime | None = None
) -> MappingPreview:
    """Build the messages of the records with these keys, exactly as the sync would; read only."""
    now = (now or dt.datetime.now(dt.UTC)).replace(tzinfo=None)
    schema, table = spec.source.table.split(".")
    column_types = dict(session.columns(schema, table))
    if not column_types:
        raise SyncError(
            f"{spec.source.table} does not exist; materialize the '{spec.source.name}' asset first."
        )
    mapped = mapped_columns(spec, list(column_types))
    builder = PayloadBuilder.for_mapping(spec.mapping, {c: column_types[c] for c in mapped})
    key_sql = f"CAST({ident(spec.source.primary_key)} AS VARCHAR)"
    columns = "".join(f", {ident(c)}" for c in mapped)
    wanted = list(dict.fromkeys(keys))
    rows = session.query(
        f"SELECT {key_sql} AS __key{columns} FROM {ident(spec.source.table)} WHERE {key_sql} IN {in_list(wanted)}"
    ).dicts()
    by_key: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_key.setdefault(row["__key"], []).append(row)
    result = MappingPreview(spec.mapping.name, not_found=[k for k in wanted if k not in by_key])
    for key in (k for k in wanted if k in by_key):
        found = by_key[key]
        if len(found) > 1:
            reason = (
                f"primary key '{spec.source.primary_key}' value '{key}' appears in {len(found)} rows; the sync "
                "rejects it. Deduplicate the model on it."
            )
            result.records.append(RecordPreview(key, reason=reason))
            continue
        try:
            message = builder.build(found[0], fresh_message_id(), now)
            message["messageId"] = fresh_message_id()  # even over a message_id column: see the module doc
            encode(message)
        except InvalidRecord as exc:
            result.records.append(RecordPreview(key, reason=str(exc)))
            continue
        result.records.append(RecordPreview(key, message=message))
    return result


def send(result: MappingPreview, sender: Sender) -> MappingPreview:
    """Deliver the buildable messages for real; each record gets Segment's answer."""
    buildable = [r for r in result.records if r.message is not None]
    outcomes = sender.deliver([encode(r.message) for r in buildable if r.message is not None])
    answers = {
        r.key: "acknowledged" if outcome is None else f"not acknowledged: {outcome.reason}"
        for r, outcome in zip(buildable, outcomes, strict=True)
    }
    records = [RecordPreview(r.key, r.message, r.reason, answers.get(r.key)) for r in result.records]
    return MappingPreview(result.mapping, records, result.not_found, sent=True)


_RESULT_SCHEMA = TableSchema(
    columns=[
        TableColumn("record_key", "string"),
        TableColumn("result", "string"),
        TableColumn("message_id", "string"),
    ]
)


def preview_metadata(result: MappingPreview, destination: str) -> dict[str, MetadataValue]:
    rows = [
        TableRecord(
            {
                "record_key": r.key,
                "result": r.outcome
                or ("payload built" if r.message is not None else f"not sendable: {r.reason}"),
                "message_id": (r.message or {}).get("messageId", ""),
            }
        )
        for r in result.records
    ] + [
        TableRecord({"record_key": k, "result": "not found in the model", "message_id": ""})
        for k in result.not_found
    ]
    return {
        "mode": MetadataValue.text(
            "Test Mapping: not a sync (ledger, failed_records, outbox and sync_history untouched)"
        ),
        "records": MetadataValue.table(rows, schema=_RESULT_SCHEMA),
        "payloads": MetadataValue.json([r.message for r in result.records if r.message is not None]),
        "sent": MetadataValue.bool(result.sent),
        "destination": MetadataValue.text(destination if result.sent else "none: payloads only built"),
    }


def build_test_mapping_job(spec: MappingSpec, keys: AssetKeys = DEFAULT_KEYS) -> JobDefinition:
    """The ``<mapping>_test_mapping`` job (launchpad: ``keys`` and ``send_test``)."""
    mapping = spec.mapping
    sync_key = keys.sync(spec)  # its observation lands on the sync asset

    @op(
        name=f"test_mapping__{mapping.name}",
        pool=POOL,
        description=f"Builds (and with send_test, sends) the payloads of chosen records of mapping `{mapping.name}`.",
    )
    def run_test(
        context: OpExecutionContext,
        config: MappingTestConfig,
        warehouse: ResourceParam[Warehouse],
        segment: SegmentDestination,
    ) -> None:
        if config.send_test and segment.is_dry_run():
            raise Failure(
                description="send_test: true needs SEGMENT_WRITE_KEY: without a key there is no destination. "
                "Run without send_test to see the payloads.",
                allow_retries=False,
            )
        with warehouse.session() as session:
            result = preview(session, spec, config.keys)
        if config.send_test:
            with segment.client() as client:  # is_dry_run() was False: there is a key
                result = send(result, client)
        for record in result.records:
            context.log.info(f"{record.key}: {record.outcome or record.reason or 'payload built'}")
        if result.not_found:
            context.log.warning(f"not found in {spec.source.table}: {', '.join(result.not_found)}")
        context.log_event(
            AssetObservation(
                asset_key=sync_key,
                description=f"Test Mapping of {len(config.keys)} record(s)"
                + (", sent" if result.sent else ""),
                metadata=preview_metadata(result, segment.endpoint_url),
            )
        )

    @job(
        name=mapping_test_job_name(mapping.name),
        description=f"Segment's *Test Mapping* for `{mapping.name}`: the exact payloads of the records whose "
        f"`{spec.source.primary_key}` you list in `keys`, optionally sent (`send_test: true`). Never a sync.",
        tags={"segment_profiles/test_mapping": mapping.name},
    )
    def test_mapping_job() -> None:
        run_test()

    return test_mapping_job
