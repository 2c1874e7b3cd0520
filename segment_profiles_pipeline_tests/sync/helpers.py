"""Small builders for sync tests: a model table, a mapping spec, a scripted sender."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import orjson

from segment_profiles_pipeline.config import MappingConfig
from segment_profiles_pipeline.project import MappingSpec, SyncSource
from segment_profiles_pipeline.segment.outcomes import REJECTED, SERVER_ERROR, DeliveryFailure
from segment_profiles_pipeline.warehouse.base import WarehouseSession, literal


def people_table(
    session: WarehouseSession, rows: Sequence[tuple[str | None, str | None, str | None]]
) -> None:
    """(re)create models.people(id, email, plan) with the given rows."""
    session.execute("CREATE SCHEMA IF NOT EXISTS models")
    session.execute("CREATE OR REPLACE TABLE models.people (id VARCHAR, email VARCHAR, plan VARCHAR)")
    if rows:
        values = ", ".join(f"({literal(a)}, {literal(b)}, {literal(c)})" for a, b, c in rows)
        session.execute(f"INSERT INTO models.people VALUES {values}")


def people_spec(**overrides) -> MappingSpec:
    fields = {
        "name": "people_identify",
        "action": "identify",
        "user_id": "id",
        "traits": {"email": "email", "plan": "plan"},
    }
    mapping = MappingConfig(**{**fields, **overrides})
    return MappingSpec(SyncSource("people", ("people",), "models.people", "id", "models/people.yml"), mapping)


class ScriptedSender:
    """Records what it was asked to deliver; ``reason(message)`` decides a failure per message.

    A reason fails the message as Segment rejecting it (record-level) unless ``record_level``
    is False (an account or transport failure)."""

    def __init__(
        self,
        reason: Callable[[dict], str | None] = lambda _m: None,
        *,
        record_level: bool = True,
        salt: str = "test-destination",
    ):
        self.reason = reason
        self.record_level = record_level
        self.destination_salt = salt
        self.sent: list[dict] = []

    def deliver(self, messages: Sequence[bytes]) -> list[DeliveryFailure | None]:
        decoded = [orjson.loads(m) for m in messages]
        self.sent.extend(decoded)
        outcomes: list[DeliveryFailure | None] = []
        for message in decoded:
            reason = self.reason(message)
            code = REJECTED if self.record_level else SERVER_ERROR
            outcomes.append(None if reason is None else DeliveryFailure(code, reason, self.record_level))
        return outcomes

    def user_ids(self) -> list[str]:
        return sorted(m.get("userId") for m in self.sent)


def ledger(session: WarehouseSession, mapping: str = "people_identify") -> dict[str, str]:
    """Live ledger rows (key → acknowledged checksum); tombstones of gone records are left out."""
    rows = session.query(
        f"SELECT record_key, checksum FROM _segment_profiles.ledger WHERE mapping = {literal(mapping)} AND live"
    ).rows
    return dict(rows)


def failed(session: WarehouseSession, mapping: str = "people_identify") -> dict[str | None, tuple]:
    rows = session.query(
        "SELECT record_key, kind, reason, attempts, status FROM _segment_profiles.failed_records "
        f"WHERE mapping = {literal(mapping)}"
    ).rows
    return {r[0]: r[1:] for r in rows}
