"""Typed configuration read from ``models/*.yml``, validated once at load time with pydantic.

The classes here are the whole user-facing configuration language for models and mappings;
the README documents every field from these definitions. ``extra="forbid"`` everywhere so a
typo is an error naming the file and field, never a silently ignored option.
"""

from __future__ import annotations

import re
import zoneinfo
from typing import Annotated, Any, Literal

from croniter import croniter
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from segment_profiles_pipeline.yaml_config import ASSET_KEY_PART, IDENTIFIER, SNAKE, TABLE

Identifier = Annotated[str, Field(pattern=IDENTIFIER)]

INTERVALS: dict[str, str] = {
    "15m": "*/15 * * * *",
    "30m": "*/30 * * * *",
    "1h": "0 * * * *",
    "2h": "0 */2 * * *",
    "4h": "0 */4 * * *",
    "6h": "0 */6 * * *",
    "8h": "0 */8 * * *",
    "12h": "0 */12 * * *",
    "1d": "0 0 * * *",
}
DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TraitField(Strict):
    """A trait fed by a column, with its own null handling."""

    column: Identifier
    nulls: Literal["send", "skip"] | None = Field(
        default=None, description="`skip` = fill, don't overwrite: a null is left out of the payload."
    )


class EventName(Strict):
    """A track mapping's event name: a column, or one fixed name for every record."""

    column: Identifier | None = None
    value: Annotated[str, Field(min_length=1)] | None = None

    @model_validator(mode="after")
    def _one(self) -> EventName:
        if (self.column is None) == (self.value is None):
            raise ValueError(
                "set exactly one of `column` (the column holding the event name) or `value` (a fixed name)"
            )
        return self


ACTIONS = ("identify", "group", "track", "subscription")
SUBSCRIPTION_FIELDS = (
    "email",
    "email_subscription_status",
    "phone",
    "sms_subscription_status",
    "whatsapp_subscription_status",
    "android_push_token",
    "android_push_subscription_status",
    "ios_push_token",
    "ios_push_subscription_status",
)
"""Send Subscriptions' column fields, named as the destination names them."""
_COMMON = ("user_id", "anonymous_id", "timestamp", "message_id", "consent")
ACTION_FIELDS: dict[str, frozenset[str]] = {
    "identify": frozenset((*_COMMON, "group_id", "traits", "all_columns_as_traits")),
    "group": frozenset((*_COMMON, "group_id", "traits", "all_columns_as_traits")),
    "track": frozenset(
        (*_COMMON, "event_name", "properties", "all_columns_as_properties", "incremental_column")
    ),
    "subscription": frozenset(
        (*_COMMON, *SUBSCRIPTION_FIELDS, "subscription_groups", "traits", "all_columns_as_traits")
    ),
}
"""The payload fields each action takes (the destination's fields per action): any other one set
on a mapping is a load error naming it, never an option silently ignored."""
ACTION_SENDS: dict[str, tuple[str, ...]] = {
    "identify": ("upsert", "add", "update"),
    "group": ("upsert", "add", "update"),
    "track": ("add", "upsert"),
    "subscription": ("upsert", "add", "update"),
}
"""``send`` modes per action; the first is the default. A track record is an event: sent once."""


class RetryConfig(Strict):
    """Failed records are retried on later syncs (with the latest data) until they succeed or expire."""

    max_syncs: int = Field(default=5, ge=1, description="Give up on a record after this many failed syncs.")
    max_days: int = Field(default=14, ge=1, description="...or this many days after its first failure.")


class ScheduleConfig(Strict):
    """When a mapping syncs: one of `interval`, `cron`, `days`+`hours`, or `manual: true`."""

    interval: Literal["15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d"] | None = None
    cron: str | None = None
    days: list[Literal["sun", "mon", "tue", "wed", "thu", "fri", "sat"]] | None = None
    hours: list[Annotated[int, Field(ge=0, le=23)]] | None = None
    timezone: str = "UTC"
    manual: bool = False

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone '{value}' (use an IANA name such as 'Europe/Berlin')"
            ) from None
        return value

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is not None and not croniter.is_valid(value):
            raise ValueError(
                f"'{value}' is not a valid cron expression (five fields: minute hour day month weekday)"
            )
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> ScheduleConfig:
        kinds = [k for k, v in (("interval", self.interval), ("cron", self.cron), ("days", self.days)) if v]
        if self.manual:
            kinds.append("manual")
        if self.hours and not self.days:
            raise ValueError("`hours` needs `days` (e.g. days: [mon, fri], hours: [6])")
        if self.days and not self.hours:
            raise ValueError("`days` needs `hours` (e.g. hours: [6, 18])")
        self._check_kinds(kinds)
        return self

    def _check_kinds(self, kinds: list[str]) -> None:
        if len(kinds) != 1:
            raise ValueError("set exactly one of `interval`, `cron`, `days`+`hours` or `manual: true`")

    @property
    def cron_schedule(self) -> str | None:
        """The equivalent cron expression, or None for manual."""
        if self.interval:
            return INTERVALS[self.interval]
        if self.cron:
            return self.cron
        if self.days and self.hours:
            days = ",".join(str(DAYS.index(d)) for d in sorted(set(self.days), key=DAYS.index))
            hours = ",".join(str(h) for h in sorted(set(self.hours)))
            return f"0 {hours} * * {days}"
        return None


class MappingScheduleConfig(ScheduleConfig):
    """A mapping's ``schedule``: a schedule's cadence, or ``on_upstream_change`` (declarative automation)."""

    on_upstream_change: bool = Field(
        default=False,
        description="Follow the table's asset instead of running on a schedule (Dagster declarative "
        "automation): alone, sync after every update of it (`AutomationCondition.eager()`); with "
        "`interval`/`cron`/`days`+`hours`, at most once per tick, once it has updated since "
        "(`AutomationCondition.on_cron`). No schedule is built for such a mapping.",
    )

    def _check_kinds(self, kinds: list[str]) -> None:
        if not self.on_upstream_change:
            if len(kinds) != 1:
                raise ValueError(
                    "set exactly one of `interval`, `cron`, `days`+`hours`, `manual: true` "
                    "or `on_upstream_change: true`"
                )
        elif self.manual:
            raise ValueError("`on_upstream_change: true` and `manual: true` contradict each other (pick one)")
        elif len(kinds) > 1:
            raise ValueError(
                "with `on_upstream_change: true` set at most one of `interval`, `cron` or `days`+`hours`"
            )

    @property
    def scheduled(self) -> bool:
        """Whether a Dagster schedule runs the mapping (not manual, not following its upstream)."""
        return self.cron_schedule is not None and not self.on_upstream_change


class MappingConfig(Strict):
    """One mapping: which records of a model go to Segment, as which call, with which fields."""

    name: Annotated[str, Field(pattern=SNAKE, description="Unique snake_case name; the sync asset's key.")]
    action: Literal["identify", "group", "track", "subscription"]
    user_id: Identifier | None = Field(default=None, description="Column for `userId`.")
    anonymous_id: Identifier | None = Field(default=None, description="Column for `anonymousId`.")
    group_id: Identifier | None = Field(
        default=None, description="Column for `groupId` (required for group, optional for identify)."
    )
    consent: Identifier | None = Field(
        default=None,
        description="Column holding a consent object (`{categoryPreferences: {...: bool}}`) → `context.consent`.",
    )
    event_name: EventName | None = Field(
        default=None, description="track: the event name (column or fixed value)."
    )
    properties: dict[Annotated[str, Field(min_length=1)], Identifier | TraitField] = Field(
        default_factory=dict, description="track: property key → column, or {column, nulls}."
    )
    all_columns_as_properties: bool = Field(
        default=False, description="track: also send every column not used above as a property."
    )
    incremental_column: Identifier | None = Field(
        default=None,
        description="track: a monotonic column; rows at or below the last synced high-water mark are not re-read.",
    )
    email: Identifier | None = None
    email_subscription_status: Identifier | None = None
    subscription_groups: dict[Annotated[str, Field(min_length=1)], Identifier] = Field(
        default_factory=dict, description="subscription: email group name → column holding its status."
    )
    phone: Identifier | None = None
    sms_subscription_status: Identifier | None = None
    whatsapp_subscription_status: Identifier | None = None
    android_push_token: Identifier | None = None
    android_push_subscription_status: Identifier | None = None
    ios_push_token: Identifier | None = None
    ios_push_subscription_status: Identifier | None = None
    traits: dict[Annotated[str, Field(min_length=1)], Identifier | TraitField] = Field(default_factory=dict)
    all_columns_as_traits: bool = Field(
        default=False, description="Also send every column not used above as a trait named after the column."
    )
    timestamp: Identifier | None = Field(
        default=None, description="Column for `timestamp` (else the sync time)."
    )
    message_id: Identifier | None = Field(
        default=None,
        description="Column for `messageId` (else deterministic from mapping, key and checksum).",
    )
    send: Literal["upsert", "add", "update"] = Field(
        default="upsert",
        description="Records to send: added or updated (`upsert`), only `add`ed, only `update`d (track: `add` by default).",
    )
    on_delete: Literal["ignore", "clear_traits"] = Field(
        default="ignore", description="Records gone from the model: ignore, or send their traits as null."
    )
    nulls: Literal["send", "skip"] = Field(default="send", description="Default null handling for traits.")
    enabled: bool = True
    shards: int = Field(
        default=1, ge=1, le=1024, description="Split the sync into key-hash shards (partitions)."
    )
    schedule: MappingScheduleConfig = Field(default_factory=lambda: MappingScheduleConfig(manual=True))
    delivery_rate_threshold: float = Field(default=0.99, ge=0, le=1)
    retry: RetryConfig = Field(default_factory=RetryConfig)
    allow_full_delete: bool = Field(
        default=False, description="Allow an empty model to delete (clear) every record it synced before."
    )
    integrations: dict[str, Any] = Field(default_factory=lambda: {"All": False})

    @model_validator(mode="before")
    @classmethod
    def _send_default(cls, data: Any) -> Any:
        if isinstance(data, dict) and "send" not in data and data.get("action") in ACTION_SENDS:
            return {**data, "send": ACTION_SENDS[data["action"]][0]}
        return data

    @field_validator("schedule", mode="before")
    @classmethod
    def _manual_shorthand(cls, value: Any) -> Any:
        return {"manual": True} if value in ("manual", None) else value

    @model_validator(mode="after")
    def _ids(self) -> MappingConfig:
        allowed = ACTION_FIELDS[self.action]
        for name in self.model_fields_set & (set().union(*ACTION_FIELDS.values()) - allowed):
            if getattr(self, name) not in (None, {}, False):
                raise ValueError(
                    f"`{name}` is not a field of action {self.action} (its fields: {', '.join(sorted(allowed))})"
                )
        if self.send not in ACTION_SENDS[self.action]:
            raise ValueError(
                f"send: {self.send} is not available for action {self.action} (use {' or '.join(ACTION_SENDS[self.action])})"
            )
        if self.on_delete == "clear_traits" and self.action not in ("identify", "group"):
            raise ValueError(
                f"on_delete: clear_traits is not available for action {self.action}: "
                + (
                    "a track record is an event, and a sent event cannot be taken back"
                    if self.action == "track"
                    else "a gone record says nothing about its subscriptions; map a status column instead"
                )
            )
        if self.action == "group" and not self.group_id:
            raise ValueError("a `group` mapping needs `group_id` (the column holding the account id)")
        if self.action == "track" and self.event_name is None:
            raise ValueError(
                "a `track` mapping needs `event_name` ({column: <column>} or {value: <fixed name>})"
            )
        # Send Subscriptions does not check the ids (the destination identifies by the external ids)
        if self.action != "subscription" and not self.user_id and not self.anonymous_id:
            raise ValueError("set `user_id` and/or `anonymous_id`: Segment needs at least one on every call")
        for key in [*self.traits, *self.properties]:
            if not re.match(r"^[^\s.$][^.$]*$", key):
                raise ValueError(f"key '{key}' may not contain '.' or '$' or start with a space")
        return self

    def trait_columns(self, columns: list[str]) -> dict[str, TraitField]:
        """Trait key → column (with null handling), given the model's actual columns."""
        out = {
            key: (value if isinstance(value, TraitField) else TraitField(column=value))
            for key, value in self.traits.items()
        }
        if self.all_columns_as_traits:
            used = self.field_columns() | {t.column for t in out.values()}
            for col in columns:
                if col not in used and col not in out:
                    out[col] = TraitField(column=col)
        return out

    def property_columns(self, columns: list[str]) -> dict[str, TraitField]:
        """track: property key → column (with null handling), given the model's actual columns."""
        out = {
            key: (value if isinstance(value, TraitField) else TraitField(column=value))
            for key, value in self.properties.items()
        }
        if self.all_columns_as_properties:
            used = self.field_columns() | {t.column for t in out.values()}
            out.update({col: TraitField(column=col) for col in columns if col not in used and col not in out})
        return out

    def field_columns(self) -> set[str]:
        """Columns feeding a field other than traits/properties (never also sent as one)."""
        fields = (
            "user_id",
            "anonymous_id",
            "group_id",
            "timestamp",
            "message_id",
            "consent",
            "incremental_column",
        )
        used = {getattr(self, f) for f in (*fields, *SUBSCRIPTION_FIELDS)} | set(
            self.subscription_groups.values()
        )
        if self.event_name is not None and self.event_name.column:
            used.add(self.event_name.column)
        return {c for c in used if c}

    def id_columns(self) -> dict[str, str]:
        """Segment field → column for the identity fields that are set."""
        fields = {"userId": self.user_id, "anonymousId": self.anonymous_id, "groupId": self.group_id}
        return {k: v for k, v in fields.items() if v}


class ModelConfig(Strict):
    """The YAML companion of one SQL model."""

    description: str = ""
    primary_key: Identifier = Field(
        description="Column that identifies a record (Segment's Unique Identifier)."
    )
    mappings: list[MappingConfig] = Field(default_factory=list)


class UpstreamTableConfig(Strict):
    """A warehouse table another asset produces (a dbt model, another pipeline), synced like a model.

    The sync asset depends on ``asset_key``, so lineage runs from that asset (e.g. the dbt model)
    to the Segment call and a schedule or automation condition sees it as the sync's upstream.
    The table's columns are unknown at load time: they are checked when the sync runs.
    """

    table: Annotated[str, Field(pattern=TABLE)] = Field(
        description="`schema.table` in the warehouse (dbt-duckdb's default schema is `main`)."
    )
    dbt_model: Identifier | None = Field(
        default=None,
        description="The dbt model building the table: asset key `[<dbt_model>]`, as dagster-dbt's "
        "default translator names it. Use `asset_key` when your translator names it otherwise.",
    )
    asset_key: list[Annotated[str, Field(pattern=ASSET_KEY_PART)]] | None = Field(
        default=None,
        min_length=1,
        description="The key of the asset that produces the table, as a list (`[dbt, dim_users]`) or a "
        "`/`-separated string (`dbt/dim_users`).",
    )
    primary_key: Identifier = Field(description="Column that identifies a record.")
    description: str = ""
    mappings: list[MappingConfig] = Field(min_length=1)

    @field_validator("asset_key", mode="before")
    @classmethod
    def _slashes(cls, value: Any) -> Any:
        return value.split("/") if isinstance(value, str) else value

    @model_validator(mode="after")
    def _one_key(self) -> UpstreamTableConfig:
        if (self.dbt_model is None) == (self.asset_key is None):
            raise ValueError(
                "set exactly one of `dbt_model` (the dbt model's name) or `asset_key` (the producing asset's key)"
            )
        return self

    @property
    def key(self) -> tuple[str, ...]:
        return (self.dbt_model,) if self.dbt_model else tuple(self.asset_key or ())


class UpstreamConfig(Strict):
    """``models/upstream.yml``: tables produced outside this project's models, and their mappings."""

    tables: list[UpstreamTableConfig] = Field(default_factory=list)

    @field_validator("tables")
    @classmethod
    def _distinct(cls, tables: list[UpstreamTableConfig]) -> list[UpstreamTableConfig]:
        seen: set[str] = set()
        for entry in tables:
            table = entry.table.lower()
            if table in seen:
                raise ValueError(
                    f"table '{entry.table}' is listed twice; put all its mappings under one entry"
                )
            seen.add(table)
        return tables
