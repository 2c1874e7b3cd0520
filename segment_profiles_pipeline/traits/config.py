"""The language of ``models/computed_traits.yml``: computed traits, audiences and their delivery.

Everything a user can write is declared here and validated once, at load time, with pydantic
(through ``yaml_config.load_yaml``, so every error names the file and field). Problems that need
the warehouse (does the column exist, is it numeric) are checked by the compiler at run time.

Names follow Segment: a trait is defined over a track event (``Flex - Engagement Initiated``)
and its properties (``channelType``); the warehouse stores the event in its own table
(``flex.flex_engagement_initiated``) with snake_case columns (``channel_type``).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import sqlglot
from pydantic import (
    Discriminator,
    Field,
    Tag,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)
from sqlglot.errors import ParseError

from segment_profiles_pipeline.config import (
    IDENTIFIER,
    SNAKE,
    Identifier,
    MappingConfig,
    Strict,
)
from segment_profiles_pipeline.errors import ConfigError
from segment_profiles_pipeline.project import TRAITS_FILE, MappingSpec, Project, SyncSource
from segment_profiles_pipeline.yaml_config import describe_errors, load_yaml

TRAITS_SCHEMA = "traits"
TRAITS_TABLE = f"{TRAITS_SCHEMA}.computed_traits"
AUDIENCES_TABLE = f"{TRAITS_SCHEMA}.audiences"
PROFILE_KEY = "profile_key"
KEY_COLUMNS = (PROFILE_KEY, "user_id", "anonymous_id")

TRAIT_TYPES = (
    "event_counter",
    "aggregation",
    "most_frequent",
    "first",
    "last",
    "unique_list",
    "unique_list_count",
)
OPERATORS = (
    "equals",
    "not_equals",
    "less_than",
    "greater_than",
    "less_than_or_equal",
    "greater_than_or_equal",
    "contains",
    "not_contains",
    "starts_with",
    "ends_with",
    "exists",
    "not_exists",
    "equals_one_of",
)
NO_VALUE_OPERATORS = ("exists", "not_exists")
TEXT_OPERATORS = ("contains", "not_contains", "starts_with", "ends_with")

Scalar = str | bool | int | float


def snake_case(name: str) -> str:
    """Segment's warehouse naming for properties and trait keys: ``lastKnownAgentWorkerSid`` → ``last_known_agent_worker_sid``.

    Word boundaries are lower→upper changes and acronym ends (``URLPath`` → ``url_path``);
    anything that is not a letter or digit becomes one underscore.
    """
    text = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)
    text = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", text)
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def event_table_name(event: str) -> str:
    """Segment's table name for a track event: lower-case, non-alphanumerics to ``_``, repeats collapsed."""
    return re.sub(r"[^a-z0-9]+", "_", event.lower()).strip("_")


# Reserved words of DuckDB (``duckdb_keywords()``) and Snowflake (its "Reserved & limited keywords"
# page): a trait key becomes an unquoted column name, so it must not be one of them.
RESERVED_WORDS = frozenset(
    [
        "account",
        "all",
        "alter",
        "analyse",
        "analyze",
        "and",
        "any",
        "array",
        "as",
        "asc",
        "asymmetric",
        "between",
        "both",
        "by",
        "case",
        "cast",
        "check",
        "collate",
        "column",
        "connect",
        "connection",
        "constraint",
        "create",
        "cross",
        "current",
        "current_date",
        "current_time",
        "current_timestamp",
        "current_user",
        "database",
        "default",
        "deferrable",
        "delete",
        "desc",
        "describe",
        "distinct",
        "do",
        "drop",
        "else",
        "end",
        "except",
        "exists",
        "false",
        "fetch",
        "following",
        "for",
        "foreign",
        "from",
        "full",
        "grant",
        "group",
        "gscluster",
        "having",
        "ilike",
        "in",
        "increment",
        "initially",
        "inner",
        "insert",
        "intersect",
        "into",
        "is",
        "issue",
        "join",
        "lambda",
        "lateral",
        "leading",
        "left",
        "like",
        "limit",
        "localtime",
        "localtimestamp",
        "minus",
        "natural",
        "not",
        "null",
        "of",
        "offset",
        "on",
        "only",
        "or",
        "order",
        "organization",
        "pivot",
        "pivot_longer",
        "pivot_wider",
        "placing",
        "primary",
        "qualify",
        "references",
        "regexp",
        "returning",
        "revoke",
        "right",
        "rlike",
        "row",
        "rows",
        "sample",
        "schema",
        "select",
        "set",
        "show",
        "some",
        "start",
        "summarize",
        "symmetric",
        "table",
        "tablesample",
        "then",
        "to",
        "trailing",
        "trigger",
        "true",
        "try_cast",
        "union",
        "unique",
        "unpivot",
        "update",
        "using",
        "values",
        "variadic",
        "view",
        "when",
        "whenever",
        "where",
        "window",
        "with",
    ]
)


class Condition(Strict):
    """One comparison. Traits compare an event ``property``; audiences a ``trait`` or a model ``column``."""

    property: str | None = Field(
        default=None, description="Event property, as named in Segment (`channelType`)."
    )
    trait: str | None = Field(default=None, description="Audiences: a computed trait key.")
    model: Identifier | None = Field(default=None, description="Audiences: a model listed under `joins`.")
    column: Identifier | None = Field(default=None, description="Audiences: a column of that model.")
    operator: str
    value: Scalar | list[Scalar] | None = None
    case_sensitive: bool = Field(default=True, description="`false` compares strings ignoring case.")

    @field_validator("operator")
    @classmethod
    def _known_operator(cls, value: str) -> str:
        if value not in OPERATORS:
            raise ValueError(f"unknown operator '{value}'; use one of: {', '.join(OPERATORS)}")
        return value

    @model_validator(mode="after")
    def _value_fits_operator(self) -> Condition:
        if self.operator in NO_VALUE_OPERATORS:
            if self.value is not None:
                raise ValueError(f"operator '{self.operator}' takes no `value`; remove it")
            if not self.case_sensitive:
                raise ValueError(f"operator '{self.operator}' takes no `case_sensitive`; remove it")
            return self
        if self.value is None:
            raise ValueError(f"operator '{self.operator}' needs a `value`")
        if self.operator == "equals_one_of":
            if not isinstance(self.value, list) or not self.value:
                raise ValueError(
                    "operator 'equals_one_of' needs a non-empty list `value` (e.g. [email, sms])"
                )
        elif isinstance(self.value, list):
            raise ValueError(
                f"operator '{self.operator}' compares with one value; use equals_one_of for a list"
            )
        if self.operator in TEXT_OPERATORS and not isinstance(self.value, str):
            raise ValueError(f"operator '{self.operator}' needs a string `value` (quote it in YAML)")
        values = self.value if isinstance(self.value, list) else [self.value]
        if not self.case_sensitive and not all(isinstance(v, str) for v in values):
            raise ValueError("`case_sensitive: false` applies to string values only")
        return self

    def values(self) -> list[Scalar]:
        """The comparison value(s) as a list (empty for exists/not_exists)."""
        if self.value is None:
            return []
        return list(self.value) if isinstance(self.value, list) else [self.value]


class AndGroup(Strict):
    and_: list[ConditionNode] = Field(alias="and", min_length=1)


class OrGroup(Strict):
    or_: list[ConditionNode] = Field(alias="or", min_length=1)


def _node_kind(value: Any) -> str:
    if isinstance(value, dict):
        if "and" in value:
            return "and_group"
        if "or" in value:
            return "or_group"
        return "leaf"
    kinds: dict[type, str] = {AndGroup: "and_group", OrGroup: "or_group"}
    return kinds.get(type(value), "leaf")


ConditionNode = Annotated[
    Annotated[Condition, Tag("leaf")]
    | Annotated[AndGroup, Tag("and_group")]
    | Annotated[OrGroup, Tag("or_group")],
    Discriminator(_node_kind),
]
AndGroup.model_rebuild()
OrGroup.model_rebuild()


def leaves(node: ConditionNode | None) -> Iterator[Condition]:
    """Every comparison in a condition tree, depth first."""
    if node is None:
        return
    if isinstance(node, Condition):
        yield node
        return
    for child in node.and_ if isinstance(node, AndGroup) else node.or_:
        yield from leaves(child)


def _conditions_shorthand(value: Any) -> Any:
    """A YAML list of conditions means all of them (``and``)."""
    return {"and": value} if isinstance(value, list) else value


class WindowConfig(Strict):
    """Only events within the last N days or hours before the run count (default: at any time)."""

    days: int | None = Field(default=None, ge=1)
    hours: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _one_unit(self) -> WindowConfig:
        if (self.days is None) == (self.hours is None):
            raise ValueError("set exactly one of `days` or `hours` (e.g. window: {days: 30})")
        return self

    @property
    def length(self) -> dt.timedelta:
        return dt.timedelta(days=self.days or 0, hours=self.hours or 0)


def _validate_named(model: type[_Named], label: str, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    """Default the key to the snake_cased name, and put the trait's name in front of every error
    (a trait is found by its name, not its position in the list)."""
    if isinstance(data, dict) and "key" not in data and isinstance(data.get("name"), str):
        data = {**data, "key": snake_case(data["name"])}
    try:
        return handler(data)
    except ValidationError as exc:
        name = data.get("name") if isinstance(data, dict) else None
        problems = [f"{path}: {msg}" if path else msg for path, msg in describe_errors(exc.errors(), model)]
        raise ValueError(f"{label} '{name}': {'; '.join(problems)}") from None


class _Named(Strict):
    """Shared by traits and audiences: a display name, a snake_case key, errors that name them."""

    name: str = Field(min_length=1)
    key: str = Field(description="snake_case key sent to Segment; defaults to the snake_cased name.")
    description: str = ""

    @field_validator("key")
    @classmethod
    def _snake_key(cls, value: str) -> str:
        if not re.match(SNAKE, value):
            raise ValueError(f"key '{value}' must be snake_case (lower-case letters, digits, underscores)")
        if value in KEY_COLUMNS:
            raise ValueError(f"key '{value}' is reserved for the table's key columns; choose another key")
        if value in RESERVED_WORDS:
            raise ValueError(f"key '{value}' is an SQL keyword; choose another key (e.g. '{value}_trait')")
        return value


class TraitConfig(_Named):
    """One computed trait over one track event."""

    type: str = Field(
        description="event_counter, aggregation, most_frequent, first, last, unique_list, unique_list_count"
    )
    event: str = Field(
        min_length=1, description="Track event name as in Segment (`Flex - Engagement Initiated`)."
    )
    property: str | None = Field(
        default=None, description="Event property the trait reads (not for counters)."
    )
    function: Literal["sum", "avg", "min", "max"] | None = Field(
        default=None, description="Aggregation only."
    )
    min_frequency: int | None = Field(default=None, ge=1, description="Most frequent only; default 2.")
    value_type: Literal["text", "number", "boolean", "timestamp"] | None = Field(
        default=None, description="Expected type of the property, checked against the column at run time."
    )
    conditions: ConditionNode | None = None
    window: WindowConfig | None = None

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        if value not in TRAIT_TYPES:
            raise ValueError(f"unknown type '{value}'; use one of: {', '.join(TRAIT_TYPES)}")
        return value

    @field_validator("conditions", mode="before")
    @classmethod
    def _list_means_and(cls, value: Any) -> Any:
        return _conditions_shorthand(value)

    @model_validator(mode="after")
    def _fields_fit_type(self) -> TraitConfig:
        if self.type == "event_counter":
            if self.property is not None:
                raise ValueError("an event_counter counts events and reads no `property`; remove it")
        elif not self.property:
            raise ValueError(f"type '{self.type}' needs `property` (the event property it reads)")
        if self.property is not None and not re.match(IDENTIFIER, self.column() or ""):
            raise ValueError(f"property '{self.property}' does not map to a warehouse column name")
        if (self.type == "aggregation") != (self.function is not None):
            raise ValueError(
                "type 'aggregation' needs `function: sum | avg | min | max`"
                if self.type == "aggregation"
                else "`function` belongs to type 'aggregation' only; remove it"
            )
        if self.min_frequency is not None and self.type != "most_frequent":
            raise ValueError("`min_frequency` belongs to type 'most_frequent' only; remove it")
        for leaf in leaves(self.conditions):
            if leaf.property is None or leaf.trait or leaf.model or leaf.column:
                raise ValueError(
                    "a trait's conditions compare event properties: use `property:` in every condition"
                )
            if not re.match(IDENTIFIER, snake_case(leaf.property)):
                raise ValueError(
                    f"condition property '{leaf.property}' does not map to a warehouse column name"
                )
        return self

    # Declared last so it wraps every validator above (pydantic layers them in order).
    @model_validator(mode="wrap")
    @classmethod
    def _name_errors(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        return _validate_named(cls, "trait", data, handler)

    def column(self) -> str | None:
        """The warehouse column of ``property``."""
        return snake_case(self.property) if self.property else None

    def frequency(self) -> int:
        """Minimum frequency of a most_frequent trait (Segment's default is 2)."""
        return self.min_frequency or 2


class AudienceConfig(_Named):
    """A boolean trait: true while a profile's computed traits (and joined model columns) match."""

    conditions: ConditionNode

    @field_validator("conditions", mode="before")
    @classmethod
    def _list_means_and(cls, value: Any) -> Any:
        return _conditions_shorthand(value)

    @model_validator(mode="after")
    def _subjects(self) -> AudienceConfig:
        for leaf in leaves(self.conditions):
            if leaf.property is not None:
                raise ValueError(
                    "audience conditions compare `trait:` keys or model `column:`s, not event properties"
                )
            if (leaf.trait is None) == (leaf.column is None):
                raise ValueError("each audience condition needs either `trait:` or `model:` + `column:`")
            if (leaf.model is None) != (leaf.column is None):
                raise ValueError(
                    "a model condition needs both `model:` (a model under `joins`) and `column:`"
                )
        return self

    # Declared last so it wraps every validator above (pydantic layers them in order).
    @model_validator(mode="wrap")
    @classmethod
    def _name_errors(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        return _validate_named(cls, "audience", data, handler)


class JoinConfig(Strict):
    """How audiences find a profile's row in a model table ``models.<name>``."""

    column: Identifier = Field(description="The model column holding the profile's id.")
    profile_column: Literal["user_id", "anonymous_id"] = Field(
        default="user_id", description="Which profile id that column holds."
    )


class SourcesConfig(Strict):
    """Where the track events live: Segment's warehouse layout, one table per event."""

    schema_: Identifier = Field(default="flex", alias="schema", description="Schema of the event tables.")
    events: dict[str, str] = Field(
        default_factory=dict,
        description="Event name → table (`table` or `schema.table`) when it differs from Segment's naming.",
    )
    watermark_column: Identifier = Field(
        default="received_at", description="Column that grows as events arrive; drives incremental runs."
    )

    @field_validator("events")
    @classmethod
    def _tables(cls, value: dict[str, str]) -> dict[str, str]:
        for event, table in value.items():
            if not re.match(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)?$", table):
                raise ValueError(
                    f"event '{event}': '{table}' is not a table name (use `table` or `schema.table`)"
                )
        return value


class TraitsMappingConfig(MappingConfig):
    """An identify mapping on one of the two output tables."""

    table: Literal["computed_traits", "audiences"] = Field(
        description="Which output table the mapping syncs."
    )

    @model_validator(mode="after")
    def _no_clears(self) -> TraitsMappingConfig:
        # A profile's row leaves these tables when it merges into another. Clearing its old ids
        # would null the merged profile's traits in Segment, which resolves those ids to it.
        if self.on_delete == "clear_traits":
            raise ValueError(
                f"mapping '{self.name}': on_delete: clear_traits is not available for computed traits and "
                "audiences (a row disappears when its profile merges into another; clearing its old ids would "
                "null the merged profile's traits); remove it (the default `ignore` applies)"
            )
        return self


class TraitsFile(Strict):
    """The whole ``computed_traits.yml``."""

    sources: SourcesConfig = Field(default_factory=SourcesConfig)
    traits: list[TraitConfig] = Field(min_length=1)
    audiences: list[AudienceConfig] = Field(default_factory=list)
    joins: dict[Identifier, JoinConfig] = Field(default_factory=dict)
    mappings: list[TraitsMappingConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> TraitsFile:
        seen: dict[str, str] = {}
        for item in [*self.traits, *self.audiences]:
            kind = "trait" if isinstance(item, TraitConfig) else "audience"
            if item.key in seen:
                raise ValueError(
                    f"{kind} '{item.name}' has key '{item.key}', already used by {seen[item.key]}; "
                    "give it a unique `key` (keys become trait names on the profile)"
                )
            seen[item.key] = f"{kind} '{item.name}'"
        traits = {t.key: t for t in self.traits}
        for audience in self.audiences:
            for leaf in leaves(audience.conditions):
                if leaf.trait is not None:
                    trait = traits.get(leaf.trait)
                    if trait is None:
                        raise ValueError(
                            f"audience '{audience.name}' uses trait '{leaf.trait}', which is not defined; "
                            f"use one of: {', '.join(traits)}"
                        )
                    if trait.type == "unique_list":
                        raise ValueError(
                            f"audience '{audience.name}' compares the list trait '{leaf.trait}'; compare a "
                            "unique_list_count trait instead"
                        )
                elif leaf.model not in self.joins:
                    raise ValueError(
                        f"audience '{audience.name}' uses model '{leaf.model}', which is not listed under `joins`; "
                        f"add `joins: {{{leaf.model}: {{column: user_id}}}}`"
                    )
        for mapping in self.mappings:
            self._check_mapping(mapping)
        return self

    def _check_mapping(self, mapping: TraitsMappingConfig) -> None:
        if mapping.action != "identify":
            raise ValueError(
                f"mapping '{mapping.name}': computed traits are user traits; use `action: identify`"
            )
        if mapping.table == "audiences" and not self.audiences:
            raise ValueError(
                f"mapping '{mapping.name}' syncs the audiences table, but no audience is defined"
            )
        columns = self.table_columns(mapping.table)
        used = [mapping.user_id, mapping.anonymous_id, mapping.timestamp, mapping.message_id]
        used += [t if isinstance(t, str) else t.column for t in mapping.traits.values()]
        for column in used:
            if column is not None and column not in columns:
                raise ValueError(
                    f"mapping '{mapping.name}' uses column '{column}', which traits.{mapping.table} does not have; "
                    f"use one of: {', '.join(columns)}"
                )

    def table_columns(self, table: Literal["computed_traits", "audiences"]) -> list[str]:
        """Columns of an output table, known from the definitions alone."""
        items = self.traits if table == "computed_traits" else self.audiences
        return [*KEY_COLUMNS, *(i.key for i in items)]

    def table_for(self, event: str) -> tuple[str, str]:
        """(schema, table) of an event: the ``sources.events`` override, else Segment's naming."""
        table = self.sources.events.get(event) or event_table_name(event)
        schema, _, name = table.rpartition(".")
        return (schema or self.sources.schema_).lower(), name.lower()


@dataclass(frozen=True)
class TraitsProject:
    """A validated ``computed_traits.yml`` and what the rest of the project needs from it."""

    path: Path
    config: TraitsFile

    @property
    def file(self) -> str:
        return str(self.path)

    @property
    def traits(self) -> list[TraitConfig]:
        return self.config.traits

    @property
    def audiences(self) -> list[AudienceConfig]:
        return self.config.audiences

    def event_tables(self) -> list[tuple[str, str]]:
        """(schema, table) of every event table the traits read, in first-use order (for source assets)."""
        return list(dict.fromkeys(self.config.table_for(t.event) for t in self.traits))

    def joined_models(self) -> list[str]:
        """Model names the audiences join (their assets are upstream of ``audiences``)."""
        return list(self.config.joins)

    def sync_mappings(self) -> list[MappingSpec]:
        """The identify mappings as the sync engine takes them.

        ``all_columns_as_traits`` is expanded here into explicit traits (every trait or audience
        column not used as an id), so the table's ``profile_key`` is never sent as a trait.
        """
        out = []
        for mapping in self.config.mappings:
            data = mapping.model_dump(exclude={"table"})
            if mapping.all_columns_as_traits:
                data["all_columns_as_traits"] = False
                data["traits"] = {
                    **{
                        column: column
                        for column in self.config.table_columns(mapping.table)
                        if column not in KEY_COLUMNS
                    },
                    **data["traits"],
                }
            table = TRAITS_TABLE if mapping.table == "computed_traits" else AUDIENCES_TABLE
            source = SyncSource(mapping.table, (mapping.table,), table, PROFILE_KEY, self.file)
            out.append(MappingSpec(source, MappingConfig.model_validate(data)))
        return out


def load_traits(models_dir: Path) -> TraitsProject | None:
    """Read and validate ``<models_dir>/computed_traits.yml``; None when the project has none."""
    path = models_dir / TRAITS_FILE
    if not path.exists():
        return None
    return TraitsProject(path, load_yaml(path, TraitsFile))


def _model_columns(sql: str) -> list[str]:
    """Output column names of a model query (best effort: a ``*`` hides the rest)."""
    try:
        tree = sqlglot.parse_one(sql, read="duckdb")
    except ParseError:
        return []
    return [name.lower() for name in getattr(tree, "named_selects", []) if name and name != "*"]


def check_trait_key_clashes(traits: TraitsProject, project: Project) -> None:
    """Fail the load when a computed trait or audience key is also sent by a model's identify mapping.

    Two mappings writing the same trait to the same profiles would overwrite each other on
    every sync, so the value on the profile would depend on which ran last.
    """
    ours = {spec.mapping.name: spec.mapping.trait_columns([]) for spec in traits.sync_mappings()}
    for model in project.models.values():
        for mapping in model.config.mappings:
            if mapping.action != "identify":
                continue
            for key in mapping.trait_columns(_model_columns(model.sql)):
                for name, keys in ours.items():
                    if key in keys:
                        raise ConfigError(
                            f"trait key '{key}' is sent by mapping '{name}' of {traits.file} and by mapping "
                            f"'{mapping.name}' of {model.yml_path}; each would overwrite the other on the profile.",
                            file=traits.file,
                            field="traits.key",
                            fix=f"give the computed trait or audience another `key`, or rename the trait in {model.yml_path}.",
                        )
