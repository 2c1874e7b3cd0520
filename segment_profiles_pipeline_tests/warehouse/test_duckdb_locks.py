"""DuckDB's one-writer rule: writers queue, sensors' read-only sessions never break a run."""

import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from segment_profiles_pipeline.warehouse.base import WarehouseBusy
from segment_profiles_pipeline.warehouse.duckdb import DuckDBWarehouse

READER = textwrap.dedent(
    """
    import sys
    from segment_profiles_pipeline.warehouse.duckdb import DuckDBWarehouse

    with DuckDBWarehouse(database=sys.argv[1]).read_only_session() as session:
        assert session.query("SELECT count(*) FROM t").scalar() == 1
        print("reading", flush=True)
        sys.stdin.readline()
    """
)


@pytest.fixture
def db(tmp_path: Path) -> str:
    path = str(tmp_path / "wh.duckdb")
    with DuckDBWarehouse(database=path).session() as session:
        session.execute("CREATE TABLE t AS SELECT 1 AS x")
    return path


def test_read_only_session_skips_while_a_writer_works(db: str) -> None:
    writing, done = threading.Event(), threading.Event()

    def writer() -> None:
        with DuckDBWarehouse(database=db).session():
            writing.set()
            done.wait()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert writing.wait(10)
        with (
            pytest.raises(WarehouseBusy, match="a run is writing"),
            DuckDBWarehouse(database=db).read_only_session(),
        ):
            pass
    finally:
        done.set()
        thread.join()
    with DuckDBWarehouse(database=db).read_only_session() as session:
        assert session.query("SELECT x FROM t").scalar() == 1


def test_writer_waits_for_a_reader_in_another_process_instead_of_failing(db: str) -> None:
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, db], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert reader.stdout.readline().strip() == "reading"
        # Without the shared lock, DuckDB itself refuses the writer ("Could not set lock"): a
        # WarehouseError that fails the run. With it, the writer queues and times out as busy.
        with (
            pytest.raises(WarehouseBusy, match="held the DuckDB file lock"),
            DuckDBWarehouse(database=db, lock_timeout_s=0.3).session(),
        ):
            pass
    finally:
        reader.communicate("done\n", timeout=30)
    assert reader.returncode == 0
    with DuckDBWarehouse(database=db, lock_timeout_s=0.3).session() as session:
        session.execute("INSERT INTO t VALUES (2)")
        assert session.query("SELECT count(*) FROM t").scalar() == 2
