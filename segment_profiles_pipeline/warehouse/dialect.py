"""One SQL dialect in the source (DuckDB's), translated to Snowflake with sqlglot."""

from __future__ import annotations

from functools import lru_cache

import sqlglot
from sqlglot.errors import OptimizeError, ParseError
from sqlglot.optimizer.scope import traverse_scope

from segment_profiles_pipeline.errors import WarehouseError


@lru_cache(maxsize=2048)
def to_dialect(sql: str, dialect: str) -> str:
    """Translate DuckDB SQL to ``dialect``; DuckDB SQL is returned as written."""
    if dialect == "duckdb":
        return sql
    try:
        statements = sqlglot.transpile(sql, read="duckdb", write=dialect)
    except ParseError as exc:
        raise WarehouseError(f"could not translate SQL to {dialect}: {exc}") from exc
    return ";\n".join(statements)


def referenced_tables(sql: str) -> list[tuple[str | None, str]]:
    """(schema, table) of every table a query reads, CTE names excluded, in first-seen order.

    Uses sqlglot's scope analysis: a name is a CTE only where that CTE is in scope, so
    ``WITH users AS (SELECT * FROM users) SELECT * FROM users`` still reads the table ``users``
    (inside its own definition, a non-recursive CTE's name is the table). DuckDB's statement form
    ``PIVOT app.users ON …`` is invisible to the scopes, so the table it pivots is added unless a
    CTE of the query has its name."""
    tree = sqlglot.parse_one(sql, read="duckdb")
    try:
        real = {
            id(source)
            for scope in traverse_scope(tree)
            for source in scope.sources.values()
            if isinstance(source, sqlglot.exp.Table)
        }
    except OptimizeError as exc:
        raise WarehouseError(f"could not analyse the query's tables: {exc}") from exc
    ctes = {cte.alias_or_name.lower() for cte in tree.find_all(sqlglot.exp.CTE)}
    real |= {
        id(pivot.this)
        for pivot in tree.find_all(sqlglot.exp.Pivot)
        if isinstance(pivot.this, sqlglot.exp.Table) and pivot.this.name.lower() not in ctes
    }
    seen: dict[tuple[str | None, str], None] = {}
    for table in tree.find_all(sqlglot.exp.Table):
        name = table.name.lower()
        if not name or id(table) not in real:
            continue
        seen.setdefault((table.db.lower() or None, name), None)
    return list(seen)
