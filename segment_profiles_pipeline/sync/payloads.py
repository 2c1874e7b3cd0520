"""Build the Segment Profiles destination's messages from planned rows. Pure: no I/O.

Four actions, as the destination has them: identify, group, track and subscription (an identify
with ``context.externalIds`` and ``context.messaging_subscriptions``; see ``sync/actions/``). The
message shape is exactly what the destination emits (``integrations: {"All": false}`` so records
are not forwarded to other destinations, ``context.consent`` always, ``{}`` when none or invalid)
plus ``context.library``.
Warehouse values are converted to JSON once, here:

- ``Decimal`` → number (float; integral decimals → int); dates → ``YYYY-MM-DD``;
  timestamps → ISO-8601 in UTC with ``Z`` (naive timestamps are taken as UTC);
- NaN and ±infinity have no JSON form: they are sent as ``null`` (documented in README);
- JSON / VARIANT / OBJECT / ARRAY columns arrive as text and are sent as parsed objects;
- ids are sent as strings, as Segment's libraries do; an empty id counts as missing;
- integers outside JavaScript's safe range (|n| > 2**53 - 1: HUGEINT, UBIGINT, DECIMAL(38,0)…)
  are sent as strings, because a JSON number that large loses digits in Segment (and orjson
  cannot even write one above 64 bits);
- a value that still cannot be encoded rejects *that record*, naming the column.

Unify silently drops some messages it answers 200 for (more than 299 traits, a groupId over 500
characters, a messageId of 100+ characters): those are rejected here, per record, before sending.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import hashlib
import math
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import orjson

from segment_profiles_pipeline import __version__
from segment_profiles_pipeline.config import SUBSCRIPTION_FIELDS, MappingConfig
from segment_profiles_pipeline.segment.spec import (
    MAX_GROUP_ID_CHARS,
    MAX_MESSAGE_BYTES,
    MAX_MESSAGE_ID_CHARS,
    MAX_TRAITS,
)
from segment_profiles_pipeline.sync.actions import WIRE_TYPE, subscription, track
from segment_profiles_pipeline.sync.actions.consent import context_consent
from segment_profiles_pipeline.sync.actions.errors import MISSING_USER_OR_ANONYMOUS_ID, InvalidRecord

LIBRARY = {"name": "segment-profiles-pipeline", "version": __version__}
JSON_TYPES = ("JSON", "VARIANT", "OBJECT", "ARRAY")
MISSING_ID = MISSING_USER_OR_ANONYMOUS_ID.message
__all__ = [
    "InvalidRecord",
    "PayloadBuilder",
    "encode",
    "identity_of",
    "json_value",
    "message_id",
    "message_ids",
]


def _iso(value: dt.datetime) -> str:
    if value.tzinfo is None:  # the common case (DuckDB TIMESTAMP), taken as UTC: no conversion needed
        return value.isoformat(timespec="milliseconds") + "Z"
    return value.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


_PLAIN = (str, bool)  # a tuple, not a union: isinstance is measurably faster on the hot path
MAX_SAFE_INTEGER = 2**53 - 1
"""Largest integer a JSON number carries exactly through JavaScript/float64 consumers."""


def _integer(value: int) -> int | str:
    return value if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER else str(value)


def json_value(value: Any) -> Any:
    """A warehouse value as a JSON-safe Python value."""
    if value is None or isinstance(value, _PLAIN):
        return value
    if isinstance(value, int):
        return _integer(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():
            return None
        return _integer(int(value)) if value == value.to_integral_value() else float(value)
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


ID_SEPARATOR = "\x1f"
"""Between the parts a message id hashes (``message_id``)."""


def message_id(salt: str, mapping: str, operation: str, key: str, checksum: str, generation: str) -> str:
    """Deterministic id (44 chars) for one state of one record, under one destination: ``spp-``
    and the 20-byte blake2b of ``salt␟mapping␟operation␟key␟checksum␟generation`` (UTF-8), in hex.

    ``generation`` is the id of the sync that last changed the record's ledger row (empty for a
    record never seen). It stays the same until Segment acknowledges something new for the
    record, so a resend after a crash carries the same id (Segment deduplicates it), and it
    changes with every acknowledged change, delete or reset, so a state that comes back
    (pro → free → pro) is never mistaken by Segment for the first delivery. See
    docs/decisions.md, "Message ids"."""
    (found,) = message_ids(
        salt, mapping, operation, [ID_SEPARATOR.join((key, checksum, generation)).encode()]
    )
    return found


def message_ids(salt: str, mapping: str, operation: str, records: Iterable[bytes]) -> list[str]:
    """``message_id`` of each record, given as the UTF-8 of ``key␟checksum␟generation``.

    The same hash of the same bytes, but the constant ``salt␟mapping␟operation␟`` is hashed once
    and each record's hash continues from a copy of that state: a chunk of rendered messages
    pays one copy, one update and one hex digest per record, not the join, encode and hash setup
    of ``message_id`` (measured on the shared 2-core machine with a chunk's ids and message
    assembly together: ~4.4-5.0 µs → ~2.0 µs per record, see docs/decisions.md)."""
    prefix = hashlib.blake2b(ID_SEPARATOR.join((salt, mapping, operation, "")).encode(), digest_size=20)
    copy = prefix.copy

    def one(record: bytes) -> str:
        digest = copy()
        digest.update(record)
        return "spp-" + digest.hexdigest()

    return list(map(one, records))


@dataclass(frozen=True)
class PayloadBuilder:
    """Turns a mapping plus the source table's column types into a fast row → message function."""

    mapping: MappingConfig
    traits: dict[str, tuple[str, bool]]  # trait (track: property) key → (column, skip nulls)
    column_types: dict[str, str]

    @classmethod
    def for_mapping(cls, mapping: MappingConfig, column_types: dict[str, str]) -> PayloadBuilder:
        columns = list(column_types)
        fields = (
            mapping.property_columns(columns) if mapping.action == "track" else mapping.trait_columns(columns)
        )
        traits = {
            key: (field.column.lower(), (field.nulls or mapping.nulls) == "skip")
            for key, field in fields.items()
        }
        return cls(mapping, traits, {k.lower(): v.upper() for k, v in column_types.items()})

    @property
    def values_key(self) -> str:
        """Where the mapped values go: ``properties`` on a track, ``traits`` on every other call."""
        return "properties" if self.mapping.action == "track" else "traits"

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

    def build(self, row: Mapping[str, Any], default_id: str, now: dt.datetime) -> dict[str, Any]:
        """The message for an added or updated record; raises InvalidRecord with the reason.

        ``default_id`` is the messageId unless the mapping names a ``message_id`` column."""
        m = self.mapping
        message: dict[str, Any] = {"type": WIRE_TYPE[m.action]}
        for field, column in self._ids:
            value = row.get(column)
            if value is not None and value != "":
                message[field] = value if isinstance(value, str) else str(json_value(value))
        # Send Subscriptions identifies by its external ids and does not check these (as the destination)
        if "userId" not in message and "anonymousId" not in message and m.action != "subscription":
            raise MISSING_USER_OR_ANONYMOUS_ID(
                f"Columns {m.user_id or '-'} / {m.anonymous_id or '-'} are null or empty."
            )
        if m.action == "group":
            _check_group_id(message.get("groupId"), m.group_id)
        if m.event_name is not None:
            message["event"] = track.event(m.event_name, row)
        context: dict[str, Any] = {"library": LIBRARY}
        if m.action == "subscription":  # validated before consent, in the destination's order
            context.update(self._subscription_context(row))
        context["consent"] = context_consent(
            _parse_json(row.get(m.consent.lower())) if m.consent else None, m.consent
        )
        traits: dict[str, Any] = {}
        for trait, column, skip_nulls, convert in self._trait_plan:
            try:
                value = convert(row.get(column))
            except (TypeError, ValueError, OverflowError) as exc:
                raise InvalidRecord(
                    f"column {column} (trait '{trait}'): value cannot be sent as JSON ({exc}). "
                    "Cast it in the model (e.g. to VARCHAR)."
                ) from None
            if value is None and skip_nulls:
                continue
            traits[trait] = value
        if len(traits) >= MAX_TRAITS and m.action != "track":
            raise InvalidRecord(
                f"{len(traits)} traits: Unify silently drops a profile update with {MAX_TRAITS} or more "
                "traits. Map fewer traits (or skip nulls with `nulls: skip`)."
            )
        message[self.values_key] = traits
        stamp = row.get(m.timestamp.lower()) if m.timestamp else None
        message["timestamp"] = (
            _iso(stamp) if isinstance(stamp, dt.datetime) else json_value(stamp) or _iso(now)
        )
        custom_id = row.get(m.message_id.lower()) if m.message_id else None
        message["messageId"] = str(custom_id) if custom_id else default_id
        if len(message["messageId"]) >= MAX_MESSAGE_ID_CHARS:
            raise InvalidRecord(
                f"messageId from column {m.message_id} is {len(message['messageId'])} characters; Segment "
                f"silently drops ids of {MAX_MESSAGE_ID_CHARS} or more. Shorten the column's values."
            )
        message["integrations"] = m.integrations
        message["context"] = context
        return message

    def _subscription_context(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """``context.externalIds`` / ``messaging_subscriptions`` from the mapped subscription columns."""
        m = self.mapping
        values: dict[str, str | None] = {}
        for field in SUBSCRIPTION_FIELDS:
            column = getattr(m, field)
            text = subscription.as_text(json_value(row.get(column.lower()))) if column else None
            values[field] = None if text == "" and not field.endswith("_status") else text
        groups = {
            name: text
            for name, column in m.subscription_groups.items()
            if (text := subscription.as_text(json_value(row.get(column.lower())))) is not None
        }
        return subscription.context(values, groups)

    def build_clear(self, identity: Mapping[str, Any], clear_id: str, now: dt.datetime) -> dict[str, Any]:
        """The message for a record gone from the model with ``on_delete: clear_traits``."""
        m = self.mapping
        message: dict[str, Any] = {"type": WIRE_TYPE[m.action], **{k: v for k, v in identity.items() if v}}
        if "userId" not in message and "anonymousId" not in message:
            raise MISSING_USER_OR_ANONYMOUS_ID()
        message["traits"] = dict.fromkeys(self.traits)
        message["timestamp"] = _iso(now)
        if m.action == "group":
            _check_group_id(message.get("groupId"), m.group_id)
        message["messageId"] = clear_id
        message["integrations"] = m.integrations
        message["context"] = {"library": LIBRARY, "consent": {}}
        return message


def _check_group_id(group_id: str | None, column: str | None) -> None:
    if not group_id:
        raise InvalidRecord(f"Group ID is required: column {column} is null or empty.")
    if len(group_id) > MAX_GROUP_ID_CHARS:
        raise InvalidRecord(
            f"groupId from column {column} is {len(group_id)} characters; Unify silently drops a group "
            f"call whose groupId is over {MAX_GROUP_ID_CHARS}."
        )


def encode(message: dict[str, Any]) -> bytes:
    """Serialise once; raise InvalidRecord when over Segment's 32 KB per-message limit."""
    try:
        data = orjson.dumps(message)
    except orjson.JSONEncodeError as exc:  # json_value makes this unreachable for warehouse types
        raise InvalidRecord(f"message cannot be encoded as JSON: {exc}") from None
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
