"""The warehouse protocol shared by the DuckDB and Snowflake implementations."""

from __future__ import annotations

import contextlib
import datetime as dt
import decimal
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from segment_profiles_pipeline.errors import WarehouseError

if TYPE_CHECKING:  # annotations only: pyarrow costs ~0.15 s, paid by whatever loads data, not by every load
    import pyarrow as pa

Dialect = Literal["duckdb", "snowflake"]


class WarehouseBusy(WarehouseError):
    """The warehouse is locked by a writer (DuckDB's one-writer rule); try again later."""


@dataclass(frozen=True)
class QueryResult:
    """A small, fully fetched result. Column names are lower-case on every warehouse."""

    columns: list[str]
    rows: list[tuple[Any, ...]]

    def dicts(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]

    def scalar(self) -> Any:
        return self.rows[0][0] if self.rows else None


@runtime_checkable
class WarehouseSession(Protocol):
    """One short-lived connection. SQL is DuckDB dialect; implementations translate."""

    dialect: Dialect
    exclusive: bool
    """True when no other writer can run while this session is open (DuckDB's file lock)."""

    def execute(self, sql: str) -> None: ...

    def query(self, sql: str) -> QueryResult: ...

    def stream(self, sql: str, batch_rows: int) -> Iterator[list[dict[str, Any]]]:
        """Yield the result in batches of dict rows, never holding it all in memory."""
        ...

    def stream_arrow(self, sql: str, batch_rows: int) -> Iterator[pa.RecordBatch]:
        """``stream`` as Arrow record batches (column names lower-case): the sync's render query
        reads every planned row, and column arrays cost a fraction of a dict per row there."""
        ...

    def arrow_rows(self, batch: pa.RecordBatch) -> list[dict[str, Any]]:
        """The rows of a batch ``stream_arrow`` yielded, as the very Python values ``stream``
        gives (Arrow's own conversion differs: a DuckDB date past year 9999 is text there and an
        error in Arrow), for the rows the Python builder takes."""
        ...

    def load(self, table: str, data: pa.Table, *, create: bool = False) -> None:
        """Append an Arrow table to ``schema.table`` (or create it with that schema)."""
        ...

    def table_exists(self, schema: str, table: str) -> bool: ...

    def columns(self, schema: str, table: str) -> list[tuple[str, str]]:
        """(name, type) pairs, names lower-case, in table order."""
        ...


class Warehouse(Protocol):
    """A Dagster resource that opens sessions."""

    def session(self) -> AbstractContextManager[WarehouseSession]: ...

    def sync_session(self) -> AbstractContextManager[WarehouseSession]:
        """The session one sync runs in: like ``session``, with the warehouse's memory cap for syncs
        (DuckDB: ``sync_memory_limit``), so a sync's memory stays flat in the model's size."""
        ...

    def read_only_session(self) -> AbstractContextManager[WarehouseSession]:
        """A session that never takes the write lock (sensors); raises ``WarehouseBusy`` when locked."""
        ...

    @property
    def kind(self) -> Dialect: ...


@contextlib.contextmanager
def transaction(session: WarehouseSession) -> Iterator[None]:
    """Run the block's statements as one unit: a crash leaves none of them, and DuckDB writes
    (and syncs) its log once for all of them instead of once per statement."""
    session.execute("BEGIN TRANSACTION")
    try:
        yield
    except BaseException:
        with contextlib.suppress(WarehouseError):
            session.execute("ROLLBACK")
        raise
    session.execute("COMMIT")


def ident(name: str) -> str:
    """Quote nothing, but refuse anything that is not a plain identifier.

    Unquoted identifiers keep SQL portable (Snowflake upper-cases them, DuckDB is
    case-insensitive), so we only accept names that need no quoting.
    """
    parts = name.split(".")
    for part in parts:
        if (
            not part
            or not (part[0].isalpha() or part[0] == "_")
            or not all(c.isalnum() or c == "_" for c in part)
        ):
            raise WarehouseError(
                f"'{name}' is not a plain identifier; use letters, digits and underscores (not starting with a digit)."
            )
    return name


def literal(value: Any) -> str:
    """A SQL literal for the few values we inline (names, ids, timestamps), escaped."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | float | decimal.Decimal):
        return repr(value) if not isinstance(value, decimal.Decimal) else str(value)
    if isinstance(value, dt.datetime):
        return f"CAST('{value.isoformat(sep=' ')}' AS TIMESTAMP)"
    text = str(value).replace("'", "''")
    return f"'{text}'"


def in_list(values: Sequence[Any]) -> str:
    return "(" + ", ".join(literal(v) for v in values) + ")"
