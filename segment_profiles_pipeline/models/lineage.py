"""Column lineage of a SQL model: which upstream columns each output column is computed from.

Computed with ``sqlglot.lineage`` when the model materializes, against the upstream tables'
real columns read from the warehouse, so ``SELECT *`` and ``u.*`` expand exactly as the warehouse
expanded them; a load-time guess could not. Pure: SQL and schemas in, lineage out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import cast

from segment_profiles_pipeline.errors import WarehouseError

DEFAULT_SCHEMA = "main"
"""Where DuckDB (and the source keys, ``main/<table>``) put a table named without a schema."""

Table = tuple[str | None, str]
Origin = tuple[str, str, str]
"""(schema, table, column) of an upstream column."""


class LineageError(WarehouseError):
    """sqlglot could not trace the query's columns (the model itself is fine: it ran)."""


def column_origins(sql: str, schemas: Mapping[Table, Sequence[str]]) -> dict[str, list[Origin]]:
    """For each output column sqlglot can see, the upstream (schema, table, column) it reads.

    ``schemas`` holds the columns of every table the query reads. A constant column (``1 AS one``)
    has no origins. Names are lower-case, as the warehouse sessions report them; origins are in
    first-seen order.
    """
    # Imported here: lineage and the optimizer (~20 ms over the parser the load needs) serve only a
    # materialization, and this module is imported by every definitions load.
    import sqlglot
    from sqlglot import exp
    from sqlglot.errors import SqlglotError
    from sqlglot.lineage import lineage
    from sqlglot.optimizer.qualify import qualify
    from sqlglot.optimizer.scope import build_scope

    mapping: dict[str, dict[str, dict[str, str]]] = {}
    for (schema, table), names in schemas.items():
        mapping.setdefault((schema or DEFAULT_SCHEMA).lower(), {})[table.lower()] = {
            name.lower(): "unknown" for name in names
        }
    try:
        # qualify returns the tree it is given, and a model is one query (project._read_sql checks)
        tree = cast(
            exp.Query,
            qualify(
                sqlglot.parse_one(sql, read="duckdb"),
                dialect="duckdb",
                db=DEFAULT_SCHEMA,
                schema=cast("dict[str, object]", mapping),
            ),
        )
        scope = build_scope(tree)
        origins: dict[str, list[Origin]] = {}
        for select in tree.selects:
            name = select.alias_or_name.lower()
            node = lineage(name, tree, schema=mapping, dialect="duckdb", scope=scope, copy=False)
            found: dict[Origin, None] = {}
            for step in node.walk():
                if isinstance(step.expression, exp.Table):
                    column = exp.to_column(step.name).name.lower()
                    found[(step.expression.db.lower(), step.expression.name.lower(), column)] = None
            origins[name] = list(found)
    except SqlglotError as exc:
        raise LineageError(f"could not trace the model's column lineage: {exc}") from exc
    return origins
