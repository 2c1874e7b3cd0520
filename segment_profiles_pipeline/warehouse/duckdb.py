"""The embedded DuckDB warehouse.

DuckDB allows one read-write process per file. Rather than letting a second writer fail with
"Could not set lock on file", every read-write session first takes an exclusive ``flock`` on a
side file (``<db>.lock``): concurrent runs (a schedule firing during a manual run, parallel
steps) queue for the file instead of failing. Read-only sessions (sensors) take a *shared*
lock on the same file without waiting: while a writer works they skip, and while they read a
writer waits a moment instead of failing on DuckDB's own lock. Sessions are short: open, work,
close.

The resource *is* a ``dagster_duckdb.DuckDBResource`` (its ``database`` and ``connection_config``
fields, shown on the UI's Resources page, and its ``get_connection()`` for user code), with two
things it cannot do added: ``get_connection()`` first takes the file lock, so a user's own asset
queues with ours; and ``read_only_session()`` opens the file read-only under a shared lock
(``DuckDBResource`` always opens read-write, which a sensor must never do). Connections are
opened here rather than by ``DuckDBResource.get_connection``, whose ten exponential retries on
``IOException`` would make a file that is not a DuckDB database fail only after ~100 s: the
file lock already does the waiting.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
from dagster_duckdb import DuckDBResource
from pydantic import Field

from segment_profiles_pipeline.errors import WarehouseError
from segment_profiles_pipeline.warehouse.base import Dialect, QueryResult, WarehouseBusy, ident, literal

if TYPE_CHECKING:  # annotations only: whoever passes an Arrow table to load() has imported pyarrow
    import pyarrow as pa

_held = threading.local()

SYNC_MEMORY_LIMIT = "512MB"
"""DuckDB's default buffer pool may grow to 80% of RAM, and a first sync's plan table and ledger
inserts fill it: peak RSS grew with the model (2.7 GB at 10M records). Capped, DuckDB spills
and the sync's RSS stays flat (measured in bench/first_sync.py ``first_sync_memory``)."""


class DuckDBSession:
    """A session over one DuckDB connection."""

    dialect: Dialect = "duckdb"
    exclusive = True  # read-write sessions hold the file lock: no other writer exists meanwhile

    def __init__(self, con: duckdb.DuckDBPyConnection):
        self.con = con

    def execute(self, sql: str) -> None:
        try:
            self.con.execute(sql)
        except duckdb.Error as exc:
            raise WarehouseError(str(exc)) from exc

    def query(self, sql: str) -> QueryResult:
        try:
            cur = self.con.execute(sql)
            rows = cur.fetchall()
            columns = [d[0].lower() for d in cur.description or []]
        except duckdb.Error as exc:
            raise WarehouseError(str(exc)) from exc
        return QueryResult(columns, rows)

    def stream(self, sql: str, batch_rows: int) -> Iterator[list[dict[str, Any]]]:
        # A cursor of its own, so the caller may write on this session between batches. DuckDB
        # streams the result; fetching tuples and zipping names is ~2.5x cheaper per row than
        # converting Arrow batches to dicts (the sync reads every planned row this way).
        cur = self.con.cursor()
        try:
            cur.execute(sql)
            columns = [d[0].lower() for d in cur.description or []]
            while rows := cur.fetchmany(batch_rows):
                yield [dict(zip(columns, row, strict=True)) for row in rows]
        except duckdb.Error as exc:
            raise WarehouseError(str(exc)) from exc
        finally:
            cur.close()

    def stream_arrow(self, sql: str, batch_rows: int) -> Iterator[pa.RecordBatch]:
        # A cursor of its own, as in ``stream``; a relation's reader streams without the extra
        # copy DuckDB makes (and warns about) for Arrow output of an executed DB-API result.
        cur = self.con.cursor()
        try:
            for batch in cur.sql(sql).to_arrow_reader(batch_rows):
                yield batch.rename_columns([name.lower() for name in batch.schema.names])
        except duckdb.Error as exc:
            raise WarehouseError(str(exc)) from exc
        finally:
            cur.close()

    def arrow_rows(self, batch: pa.RecordBatch) -> list[dict[str, Any]]:
        # Back through DuckDB, whose Python conversion ``stream`` uses; the batch came from
        # DuckDB, so its types come back as they were (HUGEINT as a DECIMAL(38, 0): same JSON).
        name = f"_rows_{id(batch)}"
        self.con.register(name, batch)
        try:
            return self.query(f"SELECT * FROM {name}").dicts()
        finally:
            self.con.unregister(name)

    def load(self, table: str, data: pa.Table, *, create: bool = False) -> None:
        name = f"_load_{id(data)}"
        self.con.register(name, data)
        try:
            if create:
                self.execute(f"CREATE TABLE {ident(table)} AS SELECT * FROM {name}")
            else:
                cols = ", ".join(ident(c) for c in data.column_names)
                self.execute(f"INSERT INTO {ident(table)} ({cols}) SELECT {cols} FROM {name}")
        finally:
            self.con.unregister(name)

    def table_exists(self, schema: str, table: str) -> bool:
        return bool(
            self.query(
                "SELECT count(*) FROM information_schema.tables "
                f"WHERE lower(table_schema) = {literal(schema.lower())} AND lower(table_name) = {literal(table.lower())}"
            ).scalar()
        )

    def columns(self, schema: str, table: str) -> list[tuple[str, str]]:
        result = self.query(
            "SELECT lower(column_name), data_type FROM information_schema.columns "
            f"WHERE lower(table_schema) = {literal(schema.lower())} AND lower(table_name) = {literal(table.lower())} "
            "ORDER BY ordinal_position"
        )
        return [(r[0], r[1]) for r in result.rows]


@contextmanager
def _file_lock(path: Path, timeout_s: float) -> Iterator[None]:
    """Exclusive lock on ``path`` shared by every process of every run; re-entrant per thread."""
    depth = getattr(_held, "depth", {})
    _held.depth = depth
    key = str(path)
    if depth.get(key):
        depth[key] += 1
        try:
            yield
        finally:
            depth[key] -= 1
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise WarehouseBusy(
                        f"another process held the DuckDB file lock {path} for over {timeout_s:.0f}s; "
                        "a long run is using the warehouse. Retry when it finishes."
                    ) from None
                time.sleep(0.05)
        depth[key] = 1
        try:
            yield
        finally:
            depth[key] = 0
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@contextmanager
def _shared_lock(path: Path) -> Iterator[None]:
    """Shared lock on ``path`` or ``WarehouseBusy`` at once: a sensor tick never waits for a run."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise WarehouseBusy(f"a run is writing the DuckDB file (lock {path} is held)") from None
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


class DuckDBWarehouse(DuckDBResource):
    """Embedded DuckDB file warehouse (the default): ``DuckDBResource`` plus the project's file lock."""

    lock_timeout_s: float = Field(default=3600.0, description="How long a writer waits for the file.")
    sync_memory_limit: str = Field(
        default=SYNC_MEMORY_LIMIT,
        description="DuckDB memory_limit of a sync's session (its plan and ledger writes spill to disk "
        "beyond it); empty for DuckDB's default (80% of RAM). A memory_limit in connection_config wins.",
    )

    @classmethod
    def _is_dagster_maintained(cls) -> bool:
        return False  # DuckDBResource says True; this subclass is the project's

    @property
    def kind(self) -> str:
        return "duckdb"

    def _config(self) -> dict[str, Any]:
        """``connection_config`` as ``DuckDBResource`` passes it (its user agent unless overridden)."""
        return {"custom_user_agent": "dagster", **self.connection_config}

    @property
    def lock_path(self) -> Path:
        """The file lock beside the database (``warehouse.duckdb.lock``)."""
        path = Path(self.database)
        return path.with_name(path.name + ".lock")

    @contextmanager
    def writer_lock(self) -> Iterator[None]:
        """Hold the warehouse's writer lock, the one every session of the project holds, without
        opening a connection.

        For another tool writing the same DuckDB file from inside a Dagster step (``dbt build``
        with dbt-duckdb, a loader): run it under this lock and it queues behind the syncs and
        models (up to ``lock_timeout_s``, then ``WarehouseBusy``) instead of failing on DuckDB's
        own single-writer lock, and sensors' read-only sessions skip while it writes. Re-entrant
        in a thread: a session opened inside it shares the lock."""
        with _file_lock(self.lock_path, self.lock_timeout_s):
            yield

    @contextmanager
    def get_connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-write connection, opened once the file lock is ours (``DuckDBResource``'s API)."""
        path = Path(self.database)
        path.parent.mkdir(parents=True, exist_ok=True)
        with self.writer_lock():
            held: dict[str, duckdb.DuckDBPyConnection] = getattr(_held, "cons", {})
            _held.cons = held
            key = str(path.resolve())
            if key in held:  # nested session on the same file in this thread: share its connection
                yield held[key]
                return
            try:
                con = duckdb.connect(str(path), config=self._config())
            except duckdb.Error as exc:
                raise WarehouseError(f"could not open DuckDB file {path}: {exc}") from exc
            held[key] = con
            try:
                yield con
            finally:
                del held[key]
                con.close()

    @contextmanager
    def session(self) -> Iterator[DuckDBSession]:
        with self.get_connection() as con:
            yield DuckDBSession(con)

    @contextmanager
    def sync_session(self) -> Iterator[DuckDBSession]:
        """A session whose connection is capped at ``sync_memory_limit``, unless the user's
        ``connection_config`` sets ``memory_limit`` itself (then theirs stands)."""
        with self.session() as session:
            if self.sync_memory_limit and "memory_limit" not in self.connection_config:
                session.execute(f"SET memory_limit = {literal(self.sync_memory_limit)}")
            yield session

    @contextmanager
    def read_only_session(self) -> Iterator[DuckDBSession]:
        path = Path(self.database)
        if not path.exists():
            raise WarehouseBusy(f"DuckDB file {path} does not exist yet; materialize the sources first.")
        with _shared_lock(self.lock_path), self._open_read_only(path) as session:
            yield session

    @contextmanager
    def _open_read_only(self, path: Path) -> Iterator[DuckDBSession]:
        try:
            con = duckdb.connect(str(path), read_only=True, config=self._config())
        except duckdb.IOException as exc:
            raise WarehouseBusy(f"DuckDB file {path} is locked by a writer: {exc}") from exc
        except duckdb.Error as exc:
            raise WarehouseError(f"could not open DuckDB file {path} read-only: {exc}") from exc
        try:
            yield DuckDBSession(con)
        finally:
            con.close()
