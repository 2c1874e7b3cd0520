"""One SQL dialect in the source (DuckDB's), translated to Snowflake with sqlglot."""

from __future__ import annotations

from functools import lru_cache

import sqlglot
from sqlglot.errors import ParseError

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
    """(schema, table) of every table a query reads, CTE names excluded, in first-seen order."""
    tree = sqlglot.parse_one(sql, read="duckdb")
    ctes = {cte.alias_or_name.lower() for cte in tree.find_all(sqlglot.exp.CTE)}
    seen: dict[tuple[str | None, str], None] = {}
    for table in tree.find_all(sqlglot.exp.Table):
        name = table.name.lower()
        schema = table.db.lower() or None
        if not name or (schema is None and name in ctes):
            continue
        seen.setdefault((schema, name), None)
    return list(seen)
