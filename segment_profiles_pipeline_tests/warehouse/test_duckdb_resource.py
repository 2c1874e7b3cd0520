"""The DuckDB warehouse is a ``dagster_duckdb.DuckDBResource``: its config reaches DuckDB and the UI,
and its ``get_connection()`` (what a user's own asset calls) queues on the project's file lock."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from dagster import ResourceParam, asset, materialize
from dagster._core.remote_representation.external_data import RepositorySnap
from dagster_duckdb import DuckDBResource

from segment_profiles_pipeline.definitions import build_definitions
from segment_profiles_pipeline.errors import WarehouseError
from segment_profiles_pipeline.settings import Settings
from segment_profiles_pipeline.warehouse.base import WarehouseBusy
from segment_profiles_pipeline.warehouse.duckdb import DuckDBWarehouse

SETTINGS = "SELECT current_setting('threads'), current_setting('custom_user_agent')"


def test_connection_config_reaches_read_write_and_read_only_sessions(tmp_path: Path) -> None:
    warehouse = DuckDBWarehouse(database=str(tmp_path / "w.duckdb"), connection_config={"threads": 1})
    with warehouse.session() as session:
        assert session.query(SETTINGS).rows == [(1, "dagster")]
    with warehouse.read_only_session() as session:
        assert session.query(SETTINGS).rows == [(1, "dagster")]
    custom = DuckDBWarehouse(
        database=str(tmp_path / "w.duckdb"), connection_config={"threads": 1, "custom_user_agent": "mine"}
    )
    with custom.session() as session:
        assert session.query(SETTINGS).rows == [(1, "mine")]


def test_a_bad_connection_option_names_the_file(tmp_path: Path) -> None:
    warehouse = DuckDBWarehouse(database=str(tmp_path / "w.duckdb"), connection_config={"no_such_option": 1})
    with (
        pytest.raises(WarehouseError, match=r"could not open DuckDB file .*w\.duckdb.*no_such_option"),
        warehouse.session(),
    ):
        pass


def test_a_file_that_is_not_duckdb_fails_at_once_instead_of_retrying(tmp_path: Path) -> None:
    """DuckDBResource.get_connection retries IOException ten times (~100 s); ours must not."""
    path = tmp_path / "notes.duckdb"
    path.write_text("not a database\n")
    started = time.monotonic()
    with (
        pytest.raises(WarehouseError, match=r"notes\.duckdb.*not a valid DuckDB database file"),
        DuckDBWarehouse(database=str(path)).session(),
    ):
        pass
    assert time.monotonic() - started < 5


def test_get_connection_of_a_users_asset_queues_on_the_file_lock(tmp_path: Path) -> None:
    """A user's asset written against DuckDBResource's API waits for a running sync's session."""
    db = str(tmp_path / "w.duckdb")
    holding, release = threading.Event(), threading.Event()

    def sync_session() -> None:
        with DuckDBWarehouse(database=db).session():
            holding.set()
            release.wait()

    thread = threading.Thread(target=sync_session)
    thread.start()
    try:
        assert holding.wait(10)
        with (
            pytest.raises(WarehouseBusy, match="held the DuckDB file lock"),
            DuckDBWarehouse(database=db, lock_timeout_s=0.3).get_connection(),
        ):
            pass
    finally:
        release.set()
        thread.join()

    @asset
    def my_table(warehouse: ResourceParam[DuckDBResource]) -> None:
        with warehouse.get_connection() as con:
            con.execute("CREATE TABLE my_table AS SELECT 42 AS answer")

    assert materialize([my_table], resources={"warehouse": DuckDBWarehouse(database=db)}).success
    with DuckDBWarehouse(database=db).read_only_session() as session:
        assert session.query("SELECT answer FROM my_table").scalar() == 42


def test_writer_lock_makes_another_tool_queue_with_the_syncs(tmp_path: Path) -> None:
    """What the dbt example does around ``dbt build``: while another tool writes the file under
    ``writer_lock()``, a sync's session waits (here: times out) and a sensor's read-only session
    skips; a session inside the lock shares it; after it, both open."""
    db = str(tmp_path / "w.duckdb")
    with DuckDBWarehouse(database=db).session() as session:
        session.execute("CREATE TABLE t AS SELECT 1 AS x")
    holding, release = threading.Event(), threading.Event()
    tool = DuckDBWarehouse(database=db)

    def another_tool() -> None:
        with tool.writer_lock():
            with tool.session() as session:  # re-entrant: the tool's own step may open a session
                session.execute("INSERT INTO t VALUES (2)")
            holding.set()
            release.wait()

    thread = threading.Thread(target=another_tool)
    thread.start()
    try:
        assert holding.wait(10)
        assert tool.lock_path == tmp_path / "w.duckdb.lock"
        with (
            pytest.raises(WarehouseBusy, match="held the DuckDB file lock"),
            DuckDBWarehouse(database=db, lock_timeout_s=0.3).session(),
        ):
            pass
        with pytest.raises(WarehouseBusy, match="a run is writing the DuckDB file"), tool.read_only_session():
            pass
    finally:
        release.set()
        thread.join()
    with tool.read_only_session() as session:
        assert session.query("SELECT count(*) FROM t").scalar() == 2


def test_the_shipped_resource_shows_its_database_and_connection_config_in_the_ui(
    tmp_path: Path, sample_models: Path
) -> None:
    settings = Settings(
        warehouse="duckdb",
        duckdb_database=tmp_path / "shown.duckdb",
        sample_data=True,
        sample_users=20,
        models_dir=sample_models,
    )
    defs = build_definitions(settings)
    resource = defs.resources["warehouse"]
    assert isinstance(resource, DuckDBResource)
    snap = RepositorySnap.from_def(defs.get_repository_def())
    (shown,) = [r for r in snap.resources if r.name == "warehouse"]
    assert shown.configured_values["database"] == f'"{tmp_path / "shown.duckdb"}"'
    assert {"database", "connection_config", "lock_timeout_s"} <= {f.name for f in shown.config_field_snaps}
    assert not shown.dagster_maintained


def test_the_sync_session_caps_duckdb_memory_unless_the_user_sets_it(tmp_path: Path) -> None:
    database = str(tmp_path / "w.duckdb")

    def limit(warehouse: DuckDBWarehouse) -> str:
        with warehouse.sync_session() as session:
            return str(session.query("SELECT current_setting('memory_limit') AS m").rows[0][0])

    assert limit(DuckDBWarehouse(database=database)) == "488.2 MiB"  # 512 MB, as DuckDB prints it
    assert (
        limit(DuckDBWarehouse(database=database, connection_config={"memory_limit": "300MB"})) == "286.1 MiB"
    )
    with DuckDBWarehouse(database=database).session() as session:  # other sessions: DuckDB's default
        assert str(session.query("SELECT current_setting('memory_limit') AS m").rows[0][0]) != "488.2 MiB"
