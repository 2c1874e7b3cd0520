"""Small builders for sync tests: a model table, a mapping spec, a scripted sender."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import orjson

from segment_profiles_pipeline.config import MappingConfig
from segment_profiles_pipeline.project import MappingSpec, SyncSource
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
    """Records what it was asked to deliver; ``reason(message)`` decides a failure per message."""

    def __init__(self, reason: Callable[[dict], str | None] = lambda _m: None):
        self.reason = reason
        self.sent: list[dict] = []

    def deliver(self, messages: Sequence[bytes]) -> list[str | None]:
        decoded = [orjson.loads(m) for m in messages]
        self.sent.extend(decoded)
        return [self.reason(m) for m in decoded]

    def user_ids(self) -> list[str]:
        return sorted(m.get("userId") for m in self.sent)


def ledger(session: WarehouseSession, mapping: str = "people_identify") -> dict[str, str]:
    rows = session.query(
        f"SELECT record_key, checksum FROM _segment_profiles.ledger WHERE mapping = {literal(mapping)}"
    ).rows
    return dict(rows)


def failed(session: WarehouseSession, mapping: str = "people_identify") -> dict[str | None, tuple]:
    rows = session.query(
        "SELECT record_key, kind, reason, attempts, status FROM _segment_profiles.failed_records "
        f"WHERE mapping = {literal(mapping)}"
    ).rows
    return {r[0]: r[1:] for r in rows}
