"""Find and validate the user's project: SQL models, their YAML companions, mappings.

Everything a user writes is read and checked here, once, when definitions load: a bad file
fails the load with a message naming the file and field, instead of failing a run later.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import sqlglot
import yaml
from sqlglot.errors import ParseError

from segment_profiles_pipeline.config import IDENTIFIER, MappingConfig, ModelConfig, validate_yaml
from segment_profiles_pipeline.errors import ConfigError

MODELS_SCHEMA = "models"
TRAITS_FILE = "computed_traits.yml"


@dataclass(frozen=True)
class ModelSpec:
    """One SQL model: ``models/<name>.sql`` plus ``models/<name>.yml``."""

    name: str
    sql: str
    sql_path: Path
    yml_path: Path
    config: ModelConfig
    upstream: tuple[tuple[str | None, str], ...]

    @property
    def table(self) -> str:
        return f"{MODELS_SCHEMA}.{self.name}"


@dataclass(frozen=True)
class SyncSource:
    """Anything a mapping can sync from: a model table or the computed-traits table."""

    name: str  # asset key (last part) of the table asset
    asset_key: tuple[str, ...]
    table: str
    primary_key: str
    file: str  # where its mappings are configured, for error messages


@dataclass(frozen=True)
class MappingSpec:
    source: SyncSource
    mapping: MappingConfig


@dataclass(frozen=True)
class Project:
    models_dir: Path
    models: dict[str, ModelSpec]
    mappings: list[MappingSpec]


def collect_mappings(models: dict[str, ModelSpec], extra: list[MappingSpec]) -> list[MappingSpec]:
    """Every mapping of the project; names are unique because each becomes an asset key."""
    out = [
        MappingSpec(SyncSource(m.name, (m.name,), m.table, m.config.primary_key, str(m.yml_path)), mapping)
        for m in models.values()
        for mapping in m.config.mappings
    ] + extra
    seen: dict[str, str] = {}
    for spec in out:
        other = seen.get(spec.mapping.name)
        if other:
            raise ConfigError(
                f"mapping name '{spec.mapping.name}' is also used in {other}.",
                file=spec.source.file,
                field="mappings.name",
                fix="give every mapping a unique name (it becomes the sync asset key).",
            )
        seen[spec.mapping.name] = spec.source.file
    return out


def _read_sql(path: Path) -> tuple[str, tuple[tuple[str | None, str], ...]]:
    text = path.read_text().strip()
    body = text.rstrip(";").strip()
    if not body:
        raise ConfigError("the file is empty.", file=str(path), fix="write one SELECT query.")
    try:
        statements = [s for s in sqlglot.parse(body, read="duckdb") if s is not None]
    except ParseError as exc:
        raise ConfigError(f"the SQL does not parse: {exc}", file=str(path)) from None
    if len(statements) != 1:
        raise ConfigError(
            f"found {len(statements)} statements; a model is exactly one query (like Segment's Reverse ETL, "
            "which wraps it in a CTE).",
            file=str(path),
        )
    if not isinstance(statements[0], sqlglot.exp.Query):
        raise ConfigError("a model must be a SELECT (or WITH … SELECT) query.", file=str(path))
    from segment_profiles_pipeline.warehouse.dialect import referenced_tables

    return body, tuple(referenced_tables(body))


def _read_yaml(path: Path) -> object:
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"the YAML does not parse: {exc}", file=str(path)) from None


def load_project(models_dir: Path) -> Project:
    """Read every model under ``models_dir`` (recursively)."""
    import re

    if not models_dir.is_dir():
        raise ConfigError(
            "the models folder does not exist.",
            file=str(models_dir),
            fix="create it or set SEGMENT_PROFILES_MODELS_DIR.",
        )
    models: dict[str, ModelSpec] = {}
    for sql_path in sorted(models_dir.rglob("*.sql")):
        name = sql_path.stem.lower()
        if not re.match(IDENTIFIER, name):
            raise ConfigError(
                f"'{sql_path.stem}' is not a valid model name.",
                file=str(sql_path),
                fix="rename the file to letters, digits and underscores (it becomes the table and asset name).",
            )
        if name in models:
            raise ConfigError(
                f"two models are named '{name}': {models[name].sql_path} and {sql_path}.",
                file=str(sql_path),
                fix="rename one of the files; model names are unique across the models folder.",
            )
        yml_path = sql_path.with_suffix(".yml")
        if not yml_path.exists():
            raise ConfigError(
                "the model has no YAML companion.",
                file=str(sql_path),
                fix=f"create {yml_path.name} with at least `primary_key: <column>`.",
            )
        sql, upstream = _read_sql(sql_path)
        config = validate_yaml(ModelConfig, _read_yaml(yml_path), str(yml_path))
        models[name] = ModelSpec(name, sql, sql_path, yml_path, config, upstream)
    for yml_path in sorted(models_dir.rglob("*.yml")):
        if yml_path.name != TRAITS_FILE and not yml_path.with_suffix(".sql").exists():
            raise ConfigError(
                "this YAML file has no SQL model next to it.",
                file=str(yml_path),
                fix=f"add {yml_path.with_suffix('.sql').name}, or rename it if it belongs to another model.",
            )
    return Project(models_dir, models, collect_mappings(models, []))
