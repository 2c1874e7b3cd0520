"""Find and validate the user's project: SQL models, their YAML companions, mappings.

Everything a user writes is read and checked here, once, when definitions load: a bad file
fails the load with a message naming the file and field, instead of failing a run later.

Two modes (see ``settings.strict_from_env``): *strict* raises the first problem, which is what
``dagster definitions validate`` and the tests want; *lenient* (a running webserver, daemon or
run worker) keeps every good model and reports each broken model file as a ``ModelProblem``, so
one bad file cannot take every other mapping's assets, schedules and sensors down with it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import sqlglot
from sqlglot.errors import ParseError

from segment_profiles_pipeline.config import IDENTIFIER, SNAKE, MappingConfig, ModelConfig, UpstreamConfig
from segment_profiles_pipeline.errors import ConfigError, PipelineError
from segment_profiles_pipeline.settings import PROJECT_ROOT
from segment_profiles_pipeline.yaml_config import load_yaml, read_yaml

MODELS_SCHEMA = "models"
TRAITS_FILE = "computed_traits.yml"
PREDICTIONS_FILE = "predictions.yml"
IDENTITY_FILE = "identity.yml"
UPSTREAM_FILE = "upstream.yml"
"""Tables other assets produce (dbt models, other pipelines) and their mappings."""
DOMAIN_FILES = (TRAITS_FILE, PREDICTIONS_FILE, IDENTITY_FILE, UPSTREAM_FILE)
"""YAML files of the traits, predictions, identity and upstream-tables domains: not model companions."""


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
    """Anything a mapping can sync from: a model table, the computed-traits table, or a table
    another asset produces (``upstream.yml``)."""

    name: str  # the table asset's key as the user writes it (``dim_users``, ``dbt/dim_users``)
    asset_key: tuple[str, ...]
    table: str
    primary_key: str
    file: str  # where its mappings are configured, for error messages
    external: bool = False  # another project's asset (upstream.yml): its key is final, never translated


@dataclass(frozen=True)
class MappingSpec:
    source: SyncSource
    mapping: MappingConfig


@dataclass(frozen=True)
class ModelProblem:
    """A model whose files do not load (lenient mode): what its assets show instead of data."""

    name: str  # the asset name its stub takes: the model name, or the file stem made safe
    path: Path  # the file at fault
    error: ConfigError
    mapping_names: tuple[str, ...] = ()  # sync assets of the model that still get a stub


@dataclass(frozen=True)
class Project:
    models_dir: Path
    models: dict[str, ModelSpec]
    mappings: list[MappingSpec]
    problems: list[ModelProblem] = field(default_factory=list)


def display_path(path: Path) -> str:
    """A file as the user knows it: relative to the project root (else absolute)."""
    try:
        return str(path.resolve().relative_to(PROJECT_ROOT))
    except ValueError:
        return str(path)


def model_mappings(model: ModelSpec) -> list[MappingSpec]:
    source = SyncSource(model.name, (model.name,), model.table, model.config.primary_key, str(model.yml_path))
    return [MappingSpec(source, mapping) for mapping in model.config.mappings]


def check_unique_names(specs: list[MappingSpec], taken: dict[str, str]) -> None:
    """Raise when a mapping name repeats, within ``specs`` or with ``taken`` (name → file); else add them.

    Each name becomes a sync asset's key, so a repeat left alone surfaces later as Dagster's
    duplicate-key error, which names neither file. ``taken`` grows only when every name of
    ``specs`` is free: a lenient load that drops the file at fault keeps the names it kept."""
    seen = dict(taken)
    for spec in specs:
        name, file = spec.mapping.name, spec.source.file
        other = seen.get(name)
        if other is not None:
            where = f"twice in {file}" if other == file else f"both in {other} and in {file}"
            raise ConfigError(
                f"mapping name '{name}' is used {where}; each name becomes a sync asset's key.",
                file=file,
                field="tables.mappings.name" if spec.source.external else "mappings.name",
                fix=f"rename one of the two mappings; names are unique across the models' YAML, {UPSTREAM_FILE}, "
                f"{TRAITS_FILE} and {PREDICTIONS_FILE}.",
            )
        seen[name] = file
    taken.update(seen)


def collect_mappings(project: Project, extra: list[MappingSpec]) -> list[MappingSpec]:
    """Every mapping of the project plus ``extra``, names checked over the whole list (each becomes
    an asset key). The traits domain checks its own names first, so that a lenient load turns its
    file into a stub instead of failing here."""
    out = [*project.mappings, *extra]
    check_unique_names(out, {})
    return out


def upstream_mappings(path: Path) -> list[MappingSpec]:
    """The mappings of ``upstream.yml``: each reads a table whose asset is defined elsewhere.

    A table in the ``models`` schema is refused: that schema is this project's, and its model's
    own YAML is where a mapping of it belongs (its asset would otherwise be claimed twice)."""
    config = load_yaml(path, UpstreamConfig)
    specs = []
    for i, entry in enumerate(config.tables):
        if entry.table.lower().startswith(f"{MODELS_SCHEMA}."):
            raise ConfigError(
                f"'{entry.table}' is a table of this project's models.",
                file=str(path),
                field=f"tables[{i}].table",
                fix=f"put the mapping in models/{entry.table.split('.', 1)[1]}.yml instead.",
            )
        key = entry.key
        source = SyncSource(
            "/".join(key), key, entry.table.lower(), entry.primary_key, str(path), external=True
        )
        specs += [MappingSpec(source, mapping) for mapping in entry.mappings]
    return specs


def _read_sql(path: Path) -> tuple[str, tuple[tuple[str | None, str], ...], tuple[str, ...] | None]:
    """The query, the tables it reads, and its output columns when the select list is explicit."""
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

    try:
        upstream = tuple(referenced_tables(body))
    except PipelineError as exc:
        raise ConfigError(str(exc), file=str(path)) from None
    return body, upstream, selected_columns(statements[0])


def selected_columns(query: sqlglot.exp.Query) -> tuple[str, ...] | None:
    """The output columns of a query, lower-cased; None when a ``*`` makes them unknowable here."""
    names = tuple(name.lower() for name in query.named_selects)
    return None if not names or any(n in ("", "*") for n in names) else names


def _check_columns(sql_path: Path, yml_path: Path, config: ModelConfig, columns: tuple[str, ...]) -> None:
    """Primary key and mapped columns the explicit select list does not return: a load error, not a
    failed run an hour later. Uses the sync's own column resolution, so both agree on every field."""
    from segment_profiles_pipeline.sync.engine import mapped_columns

    if config.primary_key.lower() not in columns:
        raise ConfigError(
            f"column '{config.primary_key}' is not selected by {sql_path.name}, which returns: {', '.join(columns)}.",
            file=str(yml_path),
            field="primary_key",
            fix="select the column in the query or fix primary_key.",
        )
    source = SyncSource(sql_path.stem, (), "", config.primary_key, str(yml_path))
    for mapping in config.mappings:
        try:
            mapped_columns(MappingSpec(source, mapping), list(columns))
        except PipelineError as exc:
            raise ConfigError(f"{exc} ({sql_path.name} selects them explicitly)") from None


def load_project(models_dir: Path, *, strict: bool = True) -> Project:
    """Read every model under ``models_dir`` (recursively).

    ``strict`` raises the first problem; otherwise each broken model is left out and reported in
    ``Project.problems`` (a missing models folder always raises: there is nothing to keep)."""
    if not models_dir.is_dir():
        raise ConfigError(
            "the models folder does not exist.",
            file=str(models_dir),
            fix="create it or set SEGMENT_PROFILES_MODELS_DIR.",
        )
    models: dict[str, ModelSpec] = {}
    mappings: list[MappingSpec] = []
    names: dict[str, str] = {}
    problems: list[ModelProblem] = []
    for sql_path in sorted(models_dir.rglob("*.sql")):
        try:
            model = _load_model(sql_path, models)
            specs = model_mappings(model)
            check_unique_names(specs, names)
        except ConfigError as exc:
            if strict:
                raise
            problems.append(_problem(sql_path, exc))
            continue
        models[model.name] = model
        mappings += specs
    for yml_path in sorted(models_dir.rglob("*.yml")):
        if yml_path.name not in DOMAIN_FILES and not yml_path.with_suffix(".sql").exists():
            orphan = ConfigError(
                "this YAML file has no SQL model next to it.",
                file=str(yml_path),
                fix=f"add {yml_path.with_suffix('.sql').name}, or rename it if it belongs to another model.",
            )
            if strict:
                raise orphan
            problems.append(_problem(yml_path, orphan))
    upstream = models_dir / UPSTREAM_FILE
    if upstream.exists():
        try:
            specs = upstream_mappings(upstream)
            check_unique_names(specs, names)
        except ConfigError as exc:
            if strict:
                raise
            problems.append(_problem(upstream, exc))
        else:
            mappings += specs
    return Project(models_dir, models, mappings, problems)


def _load_model(sql_path: Path, models: dict[str, ModelSpec]) -> ModelSpec:
    # fullmatch: with match, IDENTIFIER's ``$`` also accepts a name ending in a newline
    if not re.fullmatch(IDENTIFIER, sql_path.stem):
        raise ConfigError(
            f"{sql_path.stem!r} is not a valid model name.",
            file=str(sql_path),
            fix="rename the file to letters, digits and underscores (it becomes the table and asset name).",
        )
    name = sql_path.stem.lower()
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
    sql, upstream, columns = _read_sql(sql_path)
    config = load_yaml(yml_path, ModelConfig)
    if columns is not None:
        _check_columns(sql_path, yml_path, config, columns)
    return ModelSpec(name, sql, sql_path, yml_path, config, upstream)


def _problem(path: Path, error: ConfigError) -> ModelProblem:
    """The stub a broken model gets: its asset name and, when its YAML still says them, its mappings."""
    stem = re.sub(r"\W", "_", path.stem.strip()).lower() or "unnamed"
    name = stem if re.fullmatch(IDENTIFIER, stem) and stem == path.stem.lower() else f"invalid_model__{stem}"
    return ModelProblem(name, path, error, _mapping_names(path.with_suffix(".yml")))


def _mapping_names(yml_path: Path) -> tuple[str, ...]:
    """Mapping names a broken model's YAML still declares (best effort: any error means none)."""
    try:
        data = read_yaml(yml_path)
        entries = (data.get("tables") or []) if yml_path.name == UPSTREAM_FILE else [data]
        found = [m.get("name") for entry in entries for m in entry.get("mappings") or []]
    except (ConfigError, AttributeError, TypeError):
        return ()
    return tuple(n for n in found if isinstance(n, str) and re.fullmatch(SNAKE, n))
