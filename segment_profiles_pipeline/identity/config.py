"""The language of ``models/identity.yml``: identifier types, their priority and limit, blocked values.

It mirrors Segment's Identity Resolution settings (Unify > Identity Resolution), validated once at
load time with pydantic through ``yaml_config.load_yaml``, so every error names the file and field.
Segment's defaults apply when the file is missing or leaves a part out: ``user_id`` priority 1
limit 1, ``email`` priority 2 limit 5, every other type after them (alphabetically) with limit 5,
and the suggested blocked values ``^[0-]*$``, ``-1``, ``null``, ``anonymous`` (plus empty strings).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from segment_profiles_pipeline.config import IDENTIFIER, Identifier, Strict
from segment_profiles_pipeline.yaml_config import load_yaml

IDENTITY_FILE = "identity.yml"
IDENTITY_SCHEMA = "identity"
ID_GRAPH_TABLE = f"{IDENTITY_SCHEMA}.id_graph"
EXTERNAL_ID_TABLE = f"{IDENTITY_SCHEMA}.external_id_mapping"
MERGES_TABLE = f"{IDENTITY_SCHEMA}.profile_merges"
DEFAULT_LIMIT = 5
DEFAULT_BLOCKED = ("^[0-]*$", "-1", "null", "anonymous")
PROFILES_SYNC_SCHEMA = "profiles_sync"
TYPE_PATTERN = r"^[a-z][a-z0-9_.]*$"
"""Segment's identifier types are lower-case (``user_id``, ``email``, ``ios.idfa``)."""


class IdentifierConfig(Strict):
    """One identifier type: where its values come from, how much it is trusted, how many a profile holds."""

    type: str = Field(description="Segment's identifier type name, lower-case (`user_id`, `email`, `phone`).")
    priority: int | None = Field(
        default=None, ge=1, description="1 is trusted most; default: after user_id and email, by type name."
    )
    limit: int | None = Field(
        default=None,
        ge=1,
        description="Most values of this type one profile holds (ever); default 5, user_id 1.",
    )
    column: Identifier | None = Field(
        default=None,
        description="Event-table column holding the value; default: the type (`user_id`, `anonymous_id`, `email`).",
    )
    trait: Identifier | None = Field(
        default=None,
        description="Identify mappings: the trait key carrying the value; default: the type. "
        "`user_id` and `anonymous_id` come from the mapping's userId / anonymousId instead.",
    )

    @field_validator("type")
    @classmethod
    def _lower_case(cls, value: str) -> str:
        if not re.match(TYPE_PATTERN, value):
            raise ValueError(
                f"identifier type '{value}' must be lower-case letters, digits, '_' or '.' (Segment's naming)"
            )
        return value

    @property
    def event_column(self) -> str | None:
        """The column read from event tables (None when the type's name is no column name)."""
        name = self.column or self.type
        return name if re.match(IDENTIFIER, name) else None


class SourcesConfig(Strict):
    """Which messages feed the graph. Default: every event table the computed traits read, and every
    identify mapping of the models."""

    events: list[str] | None = Field(
        default=None, description="Event tables `schema.table`; default: the traits' event tables."
    )
    identify_mappings: list[Identifier] | None = Field(
        default=None,
        description="Model identify mappings whose records count as identify calls; default: all.",
    )
    watermark_column: Identifier = Field(
        default="received_at", description="Arrival time of a message; drives the order and incremental runs."
    )

    @field_validator("events")
    @classmethod
    def _tables(cls, value: list[str] | None) -> list[str] | None:
        for table in value or []:
            if not re.match(r"^[A-Za-z_]\w*\.[A-Za-z_]\w*$", table):
                raise ValueError(f"'{table}' is not a table name `schema.table`")
        return value


class GraphConfig(Strict):
    """Where the identity graph comes from: resolved here (``local``), or read from the tables
    Segment's own Profiles Sync lands (``segment``), so traits and everything downstream use
    Segment's graph in a workspace that already has Profiles Sync."""

    source: Literal["local", "segment"] = Field(
        default="local",
        description="`local`: resolve the graph from the event tables; `segment`: read Segment's landed tables.",
    )
    landed_schema: Identifier | None = Field(
        default=None,
        description="`segment`: the schema where Segment lands `id_graph_updates` and `external_id_mapping_updates`.",
    )

    @model_validator(mode="after")
    def _schema_for_segment(self) -> GraphConfig:
        if self.source == "segment" and self.landed_schema is None:
            raise ValueError(
                "`source: segment` reads Segment's landed Profiles Sync tables: set `landed_schema` "
                "to the schema holding id_graph_updates and external_id_mapping_updates"
            )
        if self.source == "local" and self.landed_schema is not None:
            raise ValueError(
                "`landed_schema` is only read with `source: segment`; remove it or set the source"
            )
        return self


class ProfilesSyncConfig(Strict):
    """The ``profiles_sync`` schema this project writes in Segment's Profiles Sync layout."""

    enabled: bool = Field(default=True, description="Write the Profiles Sync tables.")
    schema_name: Identifier = Field(
        default=PROFILES_SYNC_SCHEMA,
        alias="schema",
        description="Schema of the Profiles Sync tables (default `profiles_sync`).",
    )


class IdentityFile(Strict):
    """The whole ``identity.yml``."""

    identifiers: list[IdentifierConfig] = Field(default_factory=list)
    blocked_values: list[str] = Field(
        default_factory=lambda: list(DEFAULT_BLOCKED),
        description="Regular expressions matched against the whole value, ignoring case; empty values are always blocked.",
    )
    sources: SourcesConfig = Field(default_factory=SourcesConfig)
    graph: GraphConfig = Field(default_factory=GraphConfig)
    profiles_sync: ProfilesSyncConfig = Field(default_factory=ProfilesSyncConfig)

    @field_validator("blocked_values")
    @classmethod
    def _patterns(cls, value: list[str]) -> list[str]:
        for pattern in value:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"blocked value '{pattern}' is not a regular expression: {exc}") from None
        return value

    @model_validator(mode="after")
    def _unique(self) -> IdentityFile:
        seen: set[str] = set()
        for item in self.identifiers:
            if item.type in seen:
                raise ValueError(f"identifier type '{item.type}' is listed twice; keep one entry")
            seen.add(item.type)
        priorities = [i.priority for i in self.identifiers if i.priority is not None]
        if len(priorities) != len(set(priorities)):
            raise ValueError("two identifier types share a priority; give each a distinct `priority`")
        landed = self.graph.landed_schema
        if self.profiles_sync.enabled and landed and landed.lower() == self.profiles_sync.schema_name.lower():
            raise ValueError(
                f"profiles_sync.schema '{self.profiles_sync.schema_name}' is Segment's landed schema "
                "(graph.landed_schema): writing there would overwrite Segment's tables; choose another schema"
            )
        return self


@dataclass(frozen=True)
class IdentifierType:
    """A resolved identifier type: defaults applied, rank fixed."""

    type: str
    priority: int
    limit: int
    column: str | None
    trait: str


@dataclass(frozen=True)
class IdentityRules:
    """Everything the resolver needs: identifier types in priority order (most trusted first), blocked patterns."""

    types: tuple[IdentifierType, ...]
    blocked: tuple[str, ...]

    def is_blocked(self, value: str | None) -> bool:
        """Segment drops blocked values from a message before matching (whole value, any case)."""
        if value is None or value == "":
            return True
        return any(re.fullmatch(p, value, flags=re.IGNORECASE) for p in self.blocked)

    def limit(self, kind: str) -> int:
        return next(t.limit for t in self.types if t.type == kind)

    def rank(self, kind: str) -> int:
        """0 = most trusted."""
        return next(i for i, t in enumerate(self.types) if t.type == kind)


def rules_from(config: IdentityFile) -> IdentityRules:
    """Apply Segment's defaults: user_id 1/1, email 2/5 and anonymous_id always present; unprioritised
    types after the prioritised ones, alphabetically (as Segment numbers new types from 3)."""
    given = {i.type: i for i in config.identifiers}
    defaults = {"user_id": (1, 1), "email": (2, DEFAULT_LIMIT), "anonymous_id": (None, DEFAULT_LIMIT)}
    entries = []
    for kind in sorted(set(given) | set(defaults)):
        item = given.get(kind)
        priority, limit = defaults.get(kind, (None, DEFAULT_LIMIT))
        if item is not None:
            priority = item.priority if item.priority is not None else priority
            limit = item.limit if item.limit is not None else limit
        column = item.event_column if item is not None else kind
        trait = (item.trait if item is not None and item.trait else None) or kind
        entries.append((priority, kind, limit, column, trait))
    ordered = sorted(entries, key=lambda e: (e[0] is None, e[0] or 0, e[1]))
    types = tuple(
        IdentifierType(kind, rank, limit, column, trait)
        for rank, (_, kind, limit, column, trait) in enumerate(ordered, start=1)
    )
    return IdentityRules(types, tuple(config.blocked_values))


@dataclass(frozen=True)
class IdentityProject:
    """A validated ``identity.yml`` (or Segment's defaults when the project has none)."""

    path: Path
    config: IdentityFile
    rules: IdentityRules

    @property
    def file(self) -> str:
        return str(self.path)


def load_identity(models_dir: Path) -> IdentityProject:
    """Read and validate ``<models_dir>/identity.yml``; Segment's defaults when it is missing."""
    path = models_dir / IDENTITY_FILE
    config = load_yaml(path, IdentityFile) if path.exists() else IdentityFile()
    return IdentityProject(path, config, rules_from(config))
