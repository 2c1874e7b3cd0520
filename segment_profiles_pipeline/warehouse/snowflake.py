"""Snowflake warehouse, through ``dagster_snowflake.SnowflakeResource``.

SQL arrives in DuckDB's dialect and is transpiled with sqlglot. Column names come back
lower-case so callers see the same rows on both warehouses. Tested through ``fakesnow``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import pyarrow as pa
from dagster import ConfigurableResource, EnvVar, Model
from dagster_snowflake import SnowflakeResource

from segment_profiles_pipeline.errors import ConfigError, WarehouseError
from segment_profiles_pipeline.settings import is_set
from segment_profiles_pipeline.warehouse.base import Dialect, QueryResult, ident, literal
from segment_profiles_pipeline.warehouse.dialect import to_dialect

Connect = Callable[[], AbstractContextManager[Any]]


class SnowflakeSession:
    dialect: Dialect = "snowflake"
    exclusive = False

    def __init__(self, con: Any, connect: Connect | None = None):
        """``connect`` opens another connection like ``con`` (needed only for ``sibling``)."""
        self.con = con
        self._connect = connect

    @contextmanager
    def sibling(self) -> Iterator[SnowflakeSession]:
        """A session on a connection of its own, to the same account, database and role.

        For work that must not queue behind this session's statements: the sync lock's
        heartbeat runs in a thread while the sync's own connection is busy for minutes.
        """
        if self._connect is None:
            raise WarehouseError(
                "this Snowflake session was built from a bare connection and cannot open a second one; "
                "open it with SnowflakeWarehouse.session() or pass `connect`."
            )
        with self._connect() as con:
            yield SnowflakeSession(con, self._connect)

    def _run(self, sql: str) -> Any:
        cur = self.con.cursor()
        try:
            cur.execute(to_dialect(sql, "snowflake"))
        except Exception as exc:  # the connector raises many error classes; all are warehouse errors here
            cur.close()
            raise WarehouseError(str(exc)) from exc
        return cur

    def execute(self, sql: str) -> None:
        self._run(sql).close()

    def query(self, sql: str) -> QueryResult:
        cur = self._run(sql)
        try:
            rows = [tuple(r) for r in cur.fetchall()]
            return QueryResult([d[0].lower() for d in cur.description or []], rows)
        finally:
            cur.close()

    def stream(self, sql: str, batch_rows: int) -> Iterator[list[dict[str, Any]]]:
        cur = self._run(sql)
        try:
            columns = [d[0].lower() for d in cur.description or []]
            while rows := cur.fetchmany(batch_rows):
                yield [dict(zip(columns, r, strict=True)) for r in rows]
        finally:
            cur.close()

    def stream_arrow(self, sql: str, batch_rows: int) -> Iterator[pa.RecordBatch]:
        # From the dict rows: fakesnow (the tests' Snowflake) has no fetch_arrow_batches.
        for rows in self.stream(sql, batch_rows):
            yield pa.RecordBatch.from_pylist(rows)

    def arrow_rows(self, batch: pa.RecordBatch) -> list[dict[str, Any]]:
        # The batch was made from the connector's Python values (``stream_arrow``).
        return batch.to_pylist()

    def load(self, table: str, data: pa.Table, *, create: bool = False) -> None:
        from snowflake.connector.pandas_tools import write_pandas

        schema, _, name = ident(table).rpartition(".")
        frame = data.to_pandas()
        frame.columns = [c.upper() for c in frame.columns]
        ok, *_ = write_pandas(
            self.con,
            frame,
            name.upper(),
            schema=schema.upper() or None,
            auto_create_table=create,
            quote_identifiers=False,
            use_logical_type=True,
        )
        if not ok:
            raise WarehouseError(f"loading {len(frame)} rows into {table} failed")

    def table_exists(self, schema: str, table: str) -> bool:
        return bool(
            self.query(
                "SELECT count(*) FROM information_schema.tables "
                f"WHERE table_schema = {literal(schema.upper())} AND table_name = {literal(table.upper())}"
            ).scalar()
        )

    def columns(self, schema: str, table: str) -> list[tuple[str, str]]:
        result = self.query(
            "SELECT column_name, data_type FROM information_schema.columns "
            f"WHERE table_schema = {literal(schema.upper())} AND table_name = {literal(table.upper())} "
            "ORDER BY ordinal_position"
        )
        return [(r[0].lower(), r[1]) for r in result.rows]


class SnowflakeWarehouse(ConfigurableResource):
    """Snowflake warehouse; credentials come from ``EnvVar`` and are never logged."""

    snowflake: SnowflakeResource

    @property
    def kind(self) -> str:
        return "snowflake"

    @contextmanager
    def session(self) -> Iterator[SnowflakeSession]:
        with self.snowflake.get_connection() as con:
            yield SnowflakeSession(con, self.snowflake.get_connection)

    def sync_session(self) -> AbstractContextManager[SnowflakeSession]:
        """A plain session: the plan runs in the Snowflake warehouse, not in this process."""
        return self.session()

    @contextmanager
    def read_only_session(self) -> Iterator[SnowflakeSession]:
        with self.session() as s:
            yield s


class SnowflakeEnv(Model):
    """Names of the environment variables that hold the Snowflake connection (README, Configuration).

    One definition for both users: the standalone project takes the defaults, and the
    ``SegmentProfiles`` component's ``snowflake_env:`` YAML is this model (``dagster.Model``:
    pydantic, an unknown key is refused, which ``dg check yaml`` reports). Values are never here."""

    account: str = "SNOWFLAKE_ACCOUNT"
    user: str = "SNOWFLAKE_USER"
    database: str = "SNOWFLAKE_DATABASE"
    warehouse: str = "SNOWFLAKE_WAREHOUSE"
    password: str = "SNOWFLAKE_PASSWORD"
    private_key: str = "SNOWFLAKE_PRIVATE_KEY"
    role: str = "SNOWFLAKE_ROLE"


def snowflake_from_env(
    names: SnowflakeEnv | None = None, where: str = "WAREHOUSE=snowflake"
) -> SnowflakeWarehouse:
    """Build the Snowflake resource, failing early with the names (never values) of missing variables.

    ``where`` says who asked for Snowflake (the environment, or a component's YAML file)."""
    names = names or SnowflakeEnv()
    missing = [
        name for name in (names.account, names.user, names.database, names.warehouse) if not is_set(name)
    ]
    if not is_set(names.password) and not is_set(names.private_key):
        missing.append(f"{names.password} or {names.private_key}")
    if missing:
        raise ConfigError(
            f"{where} but these environment variables are not set: " + ", ".join(missing) + ".",
            field="environment",
            fix="export them (see README, Configuration) or use the embedded DuckDB warehouse.",
        )
    # EnvVar values: the resource reads them at run time, so no secret is ever a string here
    secret: dict[str, Any] = (
        {"password": EnvVar(names.password)}
        if is_set(names.password)
        else {"private_key": EnvVar(names.private_key)}
    )
    optional: dict[str, Any] = {"role": EnvVar(names.role)} if is_set(names.role) else {}
    return SnowflakeWarehouse(
        snowflake=SnowflakeResource(
            account=EnvVar(names.account),
            user=EnvVar(names.user),
            database=EnvVar(names.database),
            warehouse=EnvVar(names.warehouse),
            **secret,
            **optional,
        )
    )
