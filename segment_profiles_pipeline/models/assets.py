"""One Dagster asset per SQL model, plus the source tables they read.

Upstream dependencies come from the SQL itself (sqlglot), so lineage in the UI is right
without hand-written deps: ``models.<name>`` is another model, anything else a source table,
declared as an external asset.
"""

import hashlib
from collections.abc import Iterable

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    AssetSpec,
    Definitions,
    Failure,
    MaterializeResult,
    MetadataValue,
    ResourceParam,
    TableColumnDep,
    TableColumnLineage,
    asset,
    multi_asset,
)

from segment_profiles_pipeline.errors import WarehouseError
from segment_profiles_pipeline.metadata import table_metadata
from segment_profiles_pipeline.models.checks import check_specs, primary_key_checks
from segment_profiles_pipeline.models.lineage import DEFAULT_SCHEMA, LineageError, column_origins
from segment_profiles_pipeline.models.sample_tables import SOURCE_TABLES
from segment_profiles_pipeline.project import MODELS_SCHEMA, ModelSpec, Project, display_path
from segment_profiles_pipeline.vocabulary import DEFAULT_KEYS, POOL, WAREHOUSE_RETRY, AssetKeys
from segment_profiles_pipeline.warehouse.base import Warehouse, WarehouseBusy, WarehouseSession, ident


def table_key(schema: str | None, table: str, keys: AssetKeys = DEFAULT_KEYS) -> AssetKey:
    """The asset of a table a model reads: another model, or a source table."""
    return keys(AssetKey(table)) if schema == MODELS_SCHEMA else keys.source(schema, table)


def upstream_keys(spec: ModelSpec, keys: AssetKeys = DEFAULT_KEYS) -> list[AssetKey]:
    return [table_key(schema, table, keys) for schema, table in spec.upstream]


def column_lineage(
    session: WarehouseSession, spec: ModelSpec, columns: list[str], keys: AssetKeys = DEFAULT_KEYS
) -> tuple[TableColumnLineage, list[str]]:
    """``dagster/column_lineage`` of a model just built, and the columns sqlglot could not trace.

    Traced against the upstream tables' columns as the warehouse has them. A column missing from
    the trace (DuckDB's ``COLUMNS('…')`` expands only in the warehouse) is reported, not dropped
    silently; a constant column is traced, to nothing."""
    schemas = {
        (schema, table): [c for c, _ in session.columns(schema or DEFAULT_SCHEMA, table)]
        for schema, table in spec.upstream
    }
    origins = column_origins(spec.sql, schemas)
    lineage = TableColumnLineage(
        deps_by_column={
            column: [TableColumnDep(asset_key=table_key(s, t, keys), column_name=c) for s, t, c in found]
            for column, found in origins.items()
            if found
        }
    )
    return lineage, [c for c in columns if c not in origins]


def source_specs(
    tables: Iterable[tuple[str | None, str]], kind: str, generated: bool, keys: AssetKeys = DEFAULT_KEYS
) -> list[AssetSpec]:
    """Asset specs for every source table the project reads.

    With sample data on, the sample tables are produced by the ``sample_data`` multi-asset (so
    runs order them before the models); every other source is an external asset.
    """
    specs: dict[AssetKey, AssetSpec] = {}
    for schema, table in tables:
        key = keys.source(schema, table)
        sample = generated and f"{schema}.{table}" in SOURCE_TABLES
        specs[key] = AssetSpec(
            key,
            group_name="sources",
            kinds={kind},
            description=f"Warehouse table `{schema or 'main'}.{table}`"
            + (
                ", created with sample data when missing (never overwritten)."
                if sample
                else ", maintained outside this project."
            ),
            metadata={"sample_data": sample},
        )
    return list(specs.values())


def build_sources(
    tables: Iterable[tuple[str | None, str]],
    kind: str,
    sample_users: int | None,
    keys: AssetKeys = DEFAULT_KEYS,
) -> list:
    """External source assets, plus the ``sample_data`` multi-asset when sample data is on."""
    tables = list(dict.fromkeys(tables))
    specs = source_specs(tables, kind, sample_users is not None, keys)
    if sample_users is None:
        return specs
    generated = [s for s in specs if s.metadata["sample_data"]]
    table_of = {keys.source(schema, table): f"{schema or 'main'}.{table}" for schema, table in tables}

    @multi_asset(
        name="sample_data",
        specs=generated,
        pool=POOL,
        retry_policy=WAREHOUSE_RETRY,
        description="Creates the sample source tables that are missing. Never overwrites an existing table.",
    )
    def sample_data(context: AssetExecutionContext, warehouse: ResourceParam[Warehouse]):
        from segment_profiles_pipeline.models.sample_data import seed_missing  # numpy + pyarrow: runs only

        with warehouse.session() as session:
            report = seed_missing(session, sample_users)
            for spec in generated:
                table = table_of[spec.key]  # the key may be translated: the table is not
                status = "created" if table in report.created else "kept existing table untouched"
                context.log.info(f"{table}: {status}")
                yield MaterializeResult(
                    asset_key=spec.key,
                    metadata={"status": status, **table_metadata(session, table)},
                )

    return [sample_data, *(s for s in specs if not s.metadata["sample_data"])]


def build_model_asset(spec: ModelSpec, kind: str, keys: AssetKeys = DEFAULT_KEYS) -> AssetsDefinition:
    key = keys(AssetKey(spec.name))
    pk = spec.config.primary_key
    version = hashlib.sha256((spec.sql + "\n" + spec.yml_path.read_text()).encode()).hexdigest()[:16]

    @asset(
        key=key,
        group_name="models",
        deps=upstream_keys(spec, keys),
        kinds={kind, "sql"},
        code_version=version,
        description=f"{spec.config.description or 'SQL model.'}\n\nSQL: `{display_path(spec.sql_path)}`, "
        f"config: `{display_path(spec.yml_path)}`.",
        check_specs=check_specs(key, pk),
        pool=POOL,
        retry_policy=WAREHOUSE_RETRY,
        metadata={"sql_file": MetadataValue.path(str(spec.sql_path)), "primary_key": pk},
    )
    def model(context: AssetExecutionContext, warehouse: ResourceParam[Warehouse]) -> MaterializeResult:
        staging = f"{MODELS_SCHEMA}.{spec.name}__staging"
        with warehouse.session() as session:
            session.execute(f"CREATE SCHEMA IF NOT EXISTS {MODELS_SCHEMA}")
            try:
                session.execute(f"CREATE OR REPLACE TABLE {ident(staging)} AS {spec.sql}")
            except WarehouseBusy:
                raise
            except WarehouseError as exc:
                raise Failure(
                    description=f"{spec.sql_path}: the model's query failed in the warehouse: {exc}. "
                    "Fix the SQL and materialize again; the previous table was kept.",
                    allow_retries=False,  # a user error: retrying cannot fix it
                ) from None
            columns = [c for c, _ in session.columns(MODELS_SCHEMA, f"{spec.name}__staging")]
            if pk.lower() not in columns:
                session.execute(f"DROP TABLE {ident(staging)}")
                raise Failure(
                    description=f"{spec.yml_path} (field 'primary_key'): column '{pk}' is not returned by "
                    f"{spec.sql_path.name}; it returns {', '.join(columns)}. Select the column in the query or "
                    "fix primary_key. The previous table was kept.",
                    allow_retries=False,
                )
            session.execute(f"DROP TABLE IF EXISTS {ident(spec.table)}")
            session.execute(f"ALTER TABLE {ident(staging)} RENAME TO {ident(spec.name)}")
            metadata = table_metadata(session, spec.table)
            try:
                metadata["dagster/column_lineage"], untraced = column_lineage(session, spec, columns, keys)
            except LineageError as exc:  # the table is right; only the UI's column graph is missing
                context.log.warning(f"{spec.sql_path}: no column lineage for this model: {exc}")
            else:
                if untraced:
                    context.log.warning(
                        f"{spec.sql_path}: column lineage leaves out {', '.join(untraced)}: sqlglot could not "
                        "trace them (e.g. DuckDB's COLUMNS(...)); name them in the select list to get their lineage."
                    )
            checks = primary_key_checks(session, key, spec.table, pk)
        context.log.info(f"{spec.table}: {metadata['dagster/row_count'].value} rows")
        return MaterializeResult(metadata=metadata, check_results=checks)

    return model


def build_defs(
    project: Project,
    tables: Iterable[tuple[str | None, str]],
    kind: str,
    sample_users: int | None,
    keys: AssetKeys = DEFAULT_KEYS,
) -> Definitions:
    """The source tables every domain reads (``tables``: external assets, or the ``sample_data``
    multi-asset with ``sample_users``) and one asset per model of ``project``."""
    return Definitions(
        assets=[
            *build_sources(tables, kind, sample_users, keys),
            *(build_model_asset(m, kind, keys) for m in project.models.values()),
        ]
    )
