"""The language of ``models/predictions.yml``: Segment-style Predictions and their delivery.

Validated once at load time with pydantic through ``yaml_config.load_yaml``, like the traits
file, so every error names the file and the field. Names follow Segment: a prediction reads a
track event (``Order Completed``) stored in its own table (``shop.order_completed``), with
snake_case property columns (``revenue``, ``currency``).

Four kinds, Segment's: ``likelihood_to_churn`` (the probability that an eligible profile does
**not** perform the event at least once in the next N days), ``likelihood_to_purchase`` and
``custom_goal`` (the probability that a profile **does** perform it: the first prefilled with
``Order Completed``, the second any event the user names), and ``predicted_ltv`` (expected
revenue of the event over the next 120 days). All four are one binary or regression target over
the same per-profile features; they differ only in the label, the eligibility and the model
(``features.CompiledFeatures.label_sql`` / ``eligible_sql``). Any of them may narrow its event
with ``conditions`` in the computed traits' condition language (``traits.config.ConditionNode``,
compiled by ``traits.compiler.condition_sql``): the goal is then "the event, where it matches".
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from segment_profiles_pipeline.config import (
    IDENTIFIER,
    SNAKE,
    Identifier,
    MappingConfig,
    ScheduleConfig,
    Strict,
)
from segment_profiles_pipeline.errors import ConfigError
from segment_profiles_pipeline.project import PREDICTIONS_FILE, MappingSpec, SyncSource
from segment_profiles_pipeline.traits.config import (
    RESERVED_WORDS,
    ConditionNode,
    _conditions_shorthand,
    event_table_name,
    leaves,
    snake_case,
)
from segment_profiles_pipeline.yaml_config import load_yaml

PREDICTIONS_SCHEMA = "predictions"
TRAITS_ASSET = "prediction_traits"
TRAITS_TABLE = f"models.{TRAITS_ASSET}"
"""One row per profile, one percentile-cohort column per prediction: what the mapping syncs.

It lives in ``models`` under its asset's name, as every model table does, so audiences can join
it like a model (``joins: {prediction_traits: {column: user_id}}``) without a compiler change."""
PROFILE_COLUMN = "profile_key"
"""The identity-resolved profile (canonical segment_id) every prediction table is keyed on."""
KEY_COLUMNS = (PROFILE_COLUMN, "user_id", "anonymous_id")
"""Leading columns of the prediction tables: the profile and its send target (``targets_sql``)."""
WINDOWS = (15, 30, 60, 90, 120)
LTV_WINDOW_DAYS = 120
PredictionType = Literal["likelihood_to_churn", "likelihood_to_purchase", "custom_goal", "predicted_ltv"]
PERFORM_TYPES = ("likelihood_to_purchase", "custom_goal")
"""Kinds whose target is *doing* the event in the window; any profile with a past event may do it."""


class EventSources(Strict):
    """Where the track events live: Segment's warehouse layout, one table per event."""

    schema_: Identifier = Field(default="shop", alias="schema", description="Schema of the event tables.")
    events: dict[str, str] = Field(
        default_factory=dict,
        description="Event name → `table` or `schema.table` when it differs from Segment's naming.",
    )

    @field_validator("events")
    @classmethod
    def _tables(cls, value: dict[str, str]) -> dict[str, str]:
        for event, table in value.items():
            if not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)?", table):
                raise ValueError(
                    f"event '{event}': '{table}' is not a table name (use `table` or `schema.table`)"
                )
        return value

    def table_for(self, event: str) -> tuple[str, str]:
        """(schema, table) of an event: the override, else Segment's naming in ``schema``."""
        table = self.events.get(event) or event_table_name(event)
        schema, _, name = table.rpartition(".")
        return (schema or self.schema_).lower(), name.lower()


class PredictionConfig(Strict):
    """One prediction: a target over one event, trained on the profiles' own past."""

    key: str = Field(description="Trait key on the profile (and the asset name); defaults to the type.")
    type: PredictionType
    description: str = ""
    event: str = Field(
        default="Order Completed",
        min_length=1,
        description="Target (or purchase) event; custom_goal has no default.",
    )
    conditions: ConditionNode | None = Field(
        default=None,
        description="Only events matching these count as the target (computed traits' conditions on `property`).",
    )
    window_days: int = Field(
        default=30, description="Target window N in days: 15, 30, 60, 90 or 120 (predicted_ltv: 120)."
    )
    revenue_property: str = Field(default="revenue", description="predicted_ltv: the amount property.")
    currency_property: str = Field(default="currency", description="predicted_ltv: the currency property.")
    currency: str = Field(
        default="USD", pattern=r"^[A-Z]{3}$", description="predicted_ltv: revenue in this currency counts."
    )
    as_of: dt.datetime | None = Field(
        default=None, description="Score as of this time (default: the latest event in the event table)."
    )
    retrain_every_days: int = Field(default=7, ge=1, description="Retrain when the model is this old.")
    max_training_rows: int = Field(
        default=100_000, ge=100, description="Training sample size (profiles, by hash): bounds memory."
    )
    min_profiles_per_class: int = Field(
        default=100,
        ge=10,
        description="Profiles that must have done, and not done, the target (Segment: 100).",
    )
    min_auc: float = Field(default=0.6, ge=0.5, le=1.0, description="The quality check fails below this AUC.")
    schedule: ScheduleConfig = Field(default_factory=lambda: ScheduleConfig(manual=True))

    @model_validator(mode="before")
    @classmethod
    def _default_key(cls, data: Any) -> Any:
        if isinstance(data, dict) and "key" not in data and isinstance(data.get("type"), str):
            data = {**data, "key": data["type"]}
        if isinstance(data, dict) and data.get("type") == "predicted_ltv" and "window_days" not in data:
            data = {**data, "window_days": LTV_WINDOW_DAYS}
        if isinstance(data, dict) and data.get("type") == "custom_goal" and "event" not in data:
            raise ValueError(
                "a custom_goal names its target `event` (e.g. event: Signed Up); it has no default"
            )
        return data

    @field_validator("conditions", mode="before")
    @classmethod
    def _list_means_and(cls, value: Any) -> Any:
        return _conditions_shorthand(value)

    @field_validator("schedule", mode="before")
    @classmethod
    def _manual_shorthand(cls, value: Any) -> Any:
        return {"manual": True} if value in ("manual", None) else value

    @field_validator("key")
    @classmethod
    def _snake_key(cls, value: str) -> str:
        if not re.fullmatch(SNAKE, value):
            raise ValueError(f"key '{value}' must be snake_case (lower-case letters, digits, underscores)")
        if value in RESERVED_WORDS or value in KEY_COLUMNS:
            raise ValueError(f"key '{value}' is reserved; choose another key")
        return value

    @field_validator("window_days")
    @classmethod
    def _window(cls, value: int) -> int:
        if value not in WINDOWS:
            raise ValueError(
                f"window_days {value} is not one of Segment's windows: {', '.join(map(str, WINDOWS))}"
            )
        return value

    @model_validator(mode="after")
    def _fits_type(self) -> PredictionConfig:
        if self.type == "predicted_ltv" and self.window_days != LTV_WINDOW_DAYS:
            raise ValueError(
                f"predicted_ltv always predicts the next {LTV_WINDOW_DAYS} days; remove window_days"
            )
        for name in ("revenue_property", "currency_property"):
            if not re.fullmatch(r"[a-z_][a-z0-9_]*", snake_case(getattr(self, name))):
                raise ValueError(f"{name} '{getattr(self, name)}' does not map to a warehouse column name")
        for leaf in leaves(self.conditions):
            if leaf.property is None or leaf.trait or leaf.model or leaf.column:
                raise ValueError(
                    "a prediction's conditions compare properties of its event: use `property:` in every condition"
                )
            if not re.match(IDENTIFIER, snake_case(leaf.property)):
                raise ValueError(
                    f"condition property '{leaf.property}' does not map to a warehouse column name"
                )
        return self

    @property
    def binary(self) -> bool:
        """A probability (classifier) rather than an amount (regressor, predicted_ltv)."""
        return self.type != "predicted_ltv"

    @property
    def goal(self) -> str:
        """The target event as messages name it: ``'Order Completed'``, plus its conditions when set."""
        return f"'{self.event}'" + (" (matching its conditions)" if self.conditions else "")

    @property
    def window(self) -> dt.timedelta:
        return dt.timedelta(days=self.window_days)

    @property
    def revenue_column(self) -> str | None:
        return snake_case(self.revenue_property) if self.type == "predicted_ltv" else None

    @property
    def currency_column(self) -> str | None:
        return snake_case(self.currency_property) if self.type == "predicted_ltv" else None

    @property
    def min_events(self) -> int:
        """Past target events a profile needs to be scored: churn one (Segment: it did the event
        before), LTV two (Segment: 2+ purchases); purchase and custom goals none, since a profile
        that never did the event may well do it (any past event in the prediction's tables)."""
        return {"likelihood_to_churn": 1, "predicted_ltv": 2}.get(self.type, 0)


class PredictionsMappingConfig(MappingConfig):
    """An identify mapping on ``models.prediction_traits`` (profile_key, its send target user_id /
    anonymous_id, one column per prediction)."""


class PredictionsFile(Strict):
    """The whole ``predictions.yml``."""

    sources: EventSources = Field(default_factory=EventSources)
    feature_events: list[str] = Field(
        default_factory=list,
        description="Other track events whose counts and recency feed every prediction (one pass each).",
    )
    predictions: list[PredictionConfig] = Field(min_length=1)
    mappings: list[PredictionsMappingConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> PredictionsFile:
        keys = [p.key for p in self.predictions]
        dupes = sorted({k for k in keys if keys.count(k) > 1})
        if dupes:
            raise ValueError(f"prediction key(s) {', '.join(dupes)} used twice; give each a unique `key`")
        columns = [*KEY_COLUMNS, *keys]
        for mapping in self.mappings:
            if mapping.action != "identify":
                raise ValueError(
                    f"mapping '{mapping.name}': predictions are user traits; use `action: identify`"
                )
            used = [mapping.user_id, mapping.anonymous_id, mapping.timestamp, mapping.message_id]
            used += [t if isinstance(t, str) else t.column for t in mapping.traits.values()]
            for column in used:
                if column is not None and column not in columns:
                    raise ValueError(
                        f"mapping '{mapping.name}' uses column '{column}', which {TRAITS_TABLE} does not have; "
                        f"use one of: {', '.join(columns)}"
                    )
        return self


@dataclass(frozen=True)
class PredictionsProject:
    """A validated ``predictions.yml`` and what the rest of the project needs from it."""

    path: Path
    config: PredictionsFile

    @property
    def file(self) -> str:
        return str(self.path)

    @property
    def predictions(self) -> list[PredictionConfig]:
        return self.config.predictions

    def target_table(self, prediction: PredictionConfig) -> tuple[str, str]:
        return self.config.sources.table_for(prediction.event)

    def feature_tables(self, prediction: PredictionConfig) -> list[tuple[str, str]]:
        """Every table a prediction reads: its target table first, then the feature events' tables."""
        tables = [
            self.target_table(prediction),
            *map(self.config.sources.table_for, self.config.feature_events),
        ]
        return list(dict.fromkeys(tables))

    def event_tables(self) -> list[tuple[str, str]]:
        return list(dict.fromkeys(t for p in self.predictions for t in self.feature_tables(p)))

    def fingerprint(self, prediction: PredictionConfig, extra: str) -> str:
        """What a stored model was trained for: the prediction's target, its tables and ``extra``
        (feature list, library versions). Knobs that do not change the model are left out."""
        target = prediction.model_dump(
            mode="json",
            include={
                "type",
                "event",
                "conditions",
                "window_days",
                "revenue_property",
                "currency_property",
                "currency",
            },
        )
        text = json.dumps([target, self.feature_tables(prediction), extra], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def sync_mappings(self) -> list[MappingSpec]:
        """The identify mappings as the sync engine takes them (``all_columns_as_traits`` expanded).

        The table's rows are profiles addressed by their send target: ``user_id`` when the profile
        has one, else ``anonymous_id`` (the other is null). A mapping that sends ``user_id: user_id``
        without naming an anonymous id column sends the anonymous profiles to ``anonymous_id``."""
        out = []
        source = SyncSource(TRAITS_ASSET, (TRAITS_ASSET,), TRAITS_TABLE, PROFILE_COLUMN, self.file)
        for mapping in self.config.mappings:
            data = mapping.model_dump()
            if mapping.user_id == "user_id" and mapping.anonymous_id is None:
                data["anonymous_id"] = "anonymous_id"
            if mapping.all_columns_as_traits:
                data["all_columns_as_traits"] = False
                data["traits"] = {**{p.key: p.key for p in self.predictions}, **data["traits"]}
            out.append(MappingSpec(source, MappingConfig.model_validate(data)))
        return out


def load_predictions(models_dir: Path) -> PredictionsProject | None:
    """Read and validate ``<models_dir>/predictions.yml``; None when the project has none."""
    path = models_dir / PREDICTIONS_FILE
    if not path.exists():
        return None
    return PredictionsProject(path, load_yaml(path, PredictionsFile))


def check_key_clashes(predictions: PredictionsProject, others: list[MappingSpec]) -> None:
    """Fail the load when a prediction key is also sent by another identify mapping: the two
    mappings would overwrite each other's value on the profile."""
    ours = {p.key for p in predictions.predictions}
    for spec in others:
        if spec.mapping.action != "identify":
            continue
        for key in ours & set(spec.mapping.trait_columns([])):
            raise ConfigError(
                f"prediction key '{key}' is also sent by mapping '{spec.mapping.name}' of {spec.source.file}.",
                file=predictions.file,
                field="predictions.key",
                fix="give the prediction another `key`, or rename the other trait.",
            )
