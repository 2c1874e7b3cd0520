"""Two processes writing to one DuckDB file queue on the file lock instead of failing.

This is what lets a schedule fire while a manual run is writing: the second run's step waits
for ``<db>.lock`` (``warehouse/duckdb.py``), where DuckDB alone would raise "Could not set lock".
"""

import multiprocessing
import time
from pathlib import Path

from segment_profiles_pipeline.warehouse.duckdb import DuckDBWarehouse

TIMEOUT_S = 60


def first_writer(db: str, inside, second_trying) -> None:
    """Takes the session, lets the second writer try, then does real work before leaving."""
    with DuckDBWarehouse(database=db).session() as session:
        enter = time.time_ns()
        inside.set()
        assert second_trying.wait(TIMEOUT_S), "the second writer never tried"
        session.execute("CREATE TABLE work AS SELECT range AS n, hash(range) AS h FROM range(3000000)")
        session.execute("CREATE TABLE IF NOT EXISTS log (who VARCHAR, enter_ns BIGINT, exit_ns BIGINT)")
        session.execute(f"INSERT INTO log VALUES ('first', {enter}, {time.time_ns()})")


def second_writer(db: str, inside, second_trying, trying_at) -> None:
    assert inside.wait(TIMEOUT_S), "the first writer never entered"
    trying_at.value = time.time_ns()
    second_trying.set()
    with DuckDBWarehouse(database=db).session() as session:
        enter = time.time_ns()
        session.execute("CREATE TABLE IF NOT EXISTS log (who VARCHAR, enter_ns BIGINT, exit_ns BIGINT)")
        session.execute(f"INSERT INTO log SELECT 'second', {enter}, {time.time_ns()} FROM work LIMIT 1")


def test_concurrent_sessions_in_two_processes_serialize(tmp_path: Path) -> None:
    db = str(tmp_path / "warehouse.duckdb")
    ctx = multiprocessing.get_context("spawn")
    inside, second_trying = ctx.Event(), ctx.Event()
    trying_at = ctx.Value("q", 0)
    processes = [
        ctx.Process(target=first_writer, args=(db, inside, second_trying)),
        ctx.Process(target=second_writer, args=(db, inside, second_trying, trying_at)),
    ]
    for p in processes:
        p.start()
    for p in processes:
        p.join(TIMEOUT_S)
    assert [p.exitcode for p in processes] == [0, 0], "a writer failed instead of waiting for the file"

    with DuckDBWarehouse(database=db).read_only_session() as session:
        log = {who: (enter, exit_) for who, enter, exit_ in session.query("SELECT * FROM log").rows}
    first, second = log["first"], log["second"]
    # the second writer tried while the first was inside, and entered only after the first left
    assert first[0] < trying_at.value < first[1] <= second[0] < second[1]
