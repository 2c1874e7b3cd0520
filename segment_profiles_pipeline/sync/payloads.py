"""Build Segment Identify / Group messages from planned rows. Pure: no I/O.

The message shape is exactly what Segment's Profiles destination emits (``integrations:
{"All": false}`` so records are not forwarded to other destinations) plus ``context.library``.
Warehouse values are converted to JSON once, here:

- ``Decimal`` → number (float; integral decimals → int); dates → ``YYYY-MM-DD``;
  timestamps → ISO-8601 in UTC with ``Z`` (naive timestamps are taken as UTC);
- NaN and ±infinity have no JSON form: they are sent as ``null`` (documented in README);
- JSON / VARIANT / OBJECT / ARRAY columns arrive as text and are sent as parsed objects;
- ids are sent as strings, as Segment's libraries do; an empty id counts as missing.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import hashlib
import math
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import orjson

from segment_profiles_pipeline import __version__
from segment_profiles_pipeline.config import MappingConfig
from segment_profiles_pipeline.segment.spec import MAX_MESSAGE_BYTES, MAX_MESSAGE_ID_CHARS

LIBRARY = {"name": "segment-profiles-pipeline", "version": __version__}
JSON_TYPES = ("JSON", "VARIANT", "OBJECT", "ARRAY")
MISSING_ID = "Either Anonymous ID or User ID must be defined."


class InvalidRecord(ValueError):
    """A record that must not be sent; the message is the reason stored in failed_records."""


def _iso(value: dt.datetime) -> str:
    if value.tzinfo is None:  # the common case (DuckDB TIMESTAMP), taken as UTC: no conversion needed
        return value.isoformat(timespec="milliseconds") + "Z"
    return value.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


_PLAIN = (str, bool, int)  # a tuple, not a union: isinstance is measurably faster on the hot path


def json_value(value: Any) -> Any:
    """A warehouse value as a JSON-safe Python value."""
    if value is None or isinstance(value, _PLAIN):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():
            return None
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dt.datetime):
        return _iso(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, Mapping):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [json_value(v) for v in value]
    return str(value)


def _parse_json(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
    return json_value(value)


def message_id(mapping: str, key: str, checksum: str, operation: str = "upsert") -> str:
    """Deterministic id (≤ 100 chars): a resend after a crash is deduplicated by Segment."""
    digest = hashlib.blake2b(
        f"{mapping}\x1f{operation}\x1f{key}\x1f{checksum}".encode(), digest_size=20
    ).hexdigest()
    return f"spp-{digest}"


@dataclass(frozen=True)
class PayloadBuilder:
    """Turns a mapping plus the source table's column types into a fast row → message function."""

    mapping: MappingConfig
    traits: dict[str, tuple[str, bool]]  # trait key → (column, skip nulls)
    column_types: dict[str, str]

    @classmethod
    def for_mapping(cls, mapping: MappingConfig, column_types: dict[str, str]) -> PayloadBuilder:
        traits = {
            key: (field.column.lower(), (field.nulls or mapping.nulls) == "skip")
            for key, field in mapping.trait_columns(list(column_types)).items()
        }
        return cls(mapping, traits, {k.lower(): v.upper() for k, v in column_types.items()})

    def _converter(self, column: str) -> Callable[[Any], Any]:
        kind = self.column_types.get(column, "")
        return _parse_json if kind.startswith(JSON_TYPES) else json_value

    # Per-column decisions are made once per sync, not once per record: ``build`` runs for every
    # record and was most of the sync's CPU (see README, Performance).
    @cached_property
    def _ids(self) -> list[tuple[str, str]]:
        return [(field, column.lower()) for field, column in self.mapping.id_columns().items()]

    @cached_property
    def _trait_plan(self) -> list[tuple[str, str, bool, Callable[[Any], Any]]]:
        return [
            (trait, column, skip_nulls, self._converter(column))
            for trait, (column, skip_nulls) in self.traits.items()
        ]

    def build(self, row: Mapping[str, Any], key: str, checksum: str, now: dt.datetime) -> dict[str, Any]:
        """The message for an added or updated record; raises InvalidRecord with the reason."""
        m = self.mapping
        message: dict[str, Any] = {"type": m.action}
        for field, column in self._ids:
            value = row.get(column)
            if value is not None and value != "":
                message[field] = value if isinstance(value, str) else str(json_value(value))
        if "userId" not in message and "anonymousId" not in message:
            raise InvalidRecord(
                f"{MISSING_ID} Columns {m.user_id or '-'} / {m.anonymous_id or '-'} are null or empty."
            )
        if m.action == "group" and "groupId" not in message:
            raise InvalidRecord(f"Group ID is required: column {m.group_id} is null or empty.")
        traits: dict[str, Any] = {}
        for trait, column, skip_nulls, convert in self._trait_plan:
            value = convert(row.get(column))
            if value is None and skip_nulls:
                continue
            traits[trait] = value
        message["traits"] = traits
        stamp = row.get(m.timestamp.lower()) if m.timestamp else None
        message["timestamp"] = (
            _iso(stamp) if isinstance(stamp, dt.datetime) else json_value(stamp) or _iso(now)
        )
        custom_id = row.get(m.message_id.lower()) if m.message_id else None
        message["messageId"] = str(custom_id) if custom_id else message_id(m.name, key, checksum)
        if len(message["messageId"]) >= MAX_MESSAGE_ID_CHARS:
            raise InvalidRecord(
                f"messageId from column {m.message_id} is {len(message['messageId'])} characters; Segment needs under 100."
            )
        message["integrations"] = m.integrations
        message["context"] = {"library": LIBRARY}
        return message

    def build_clear(
        self, identity: Mapping[str, Any], key: str, checksum: str, now: dt.datetime
    ) -> dict[str, Any]:
        """The message for a record gone from the model with ``on_delete: clear_traits``."""
        m = self.mapping
        message: dict[str, Any] = {"type": m.action, **{k: v for k, v in identity.items() if v}}
        if "userId" not in message and "anonymousId" not in message:
            raise InvalidRecord(MISSING_ID)
        message["traits"] = dict.fromkeys(self.traits)
        message["timestamp"] = _iso(now)
        message["messageId"] = message_id(m.name, key, checksum, "clear")
        message["integrations"] = m.integrations
        message["context"] = {"library": LIBRARY}
        return message


def encode(message: dict[str, Any]) -> bytes:
    """Serialise once; raise InvalidRecord when over Segment's 32 KB per-message limit."""
    data = orjson.dumps(message)
    if len(data) > MAX_MESSAGE_BYTES:
        raise InvalidRecord(
            f"message is {len(data):,} bytes; Segment accepts at most 32 KB per call. "
            "Map fewer or smaller traits for this record."
        )
    return data


def identity_of(message: Mapping[str, Any]) -> str:
    """The ids stored in the ledger, so a later ``clear_traits`` can address the profile."""
    return orjson.dumps(
        {k: message[k] for k in ("userId", "anonymousId", "groupId") if k in message}
    ).decode()
