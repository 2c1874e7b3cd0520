"""Settling a sync imports no pandas: its writes are set-based SQL over the plan table.

pandas costs ~0.3 s (over a second on a loaded machine) once per process. A sync with nothing to
send runs only the plan and the settling step, so a fresh process that runs such syncs (the quick
hashes of ``refresh`` rows, an ``update``-only mapping's tracked adds, ignored deletes forgotten)
must end without pandas. Sending does import it: pyarrow's pandas shim loads pandas at the first
Arrow array or scalar built from Python values, on the render and acknowledgement path.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from segment_profiles_pipeline.sync.engine import run_sync
from segment_profiles_pipeline.warehouse.duckdb import DuckDBWarehouse
from segment_profiles_pipeline_tests.sync.helpers import ScriptedSender, ledger, people_spec, people_table

ROWS = [("u1", "a@x.io", "free"), ("u2", "b@x.io", "pro")]
SETTLE_ONLY = """
import sys
from segment_profiles_pipeline.sync.engine import run_sync
from segment_profiles_pipeline.warehouse.duckdb import DuckDBWarehouse
from segment_profiles_pipeline_tests.sync.helpers import ScriptedSender, people_spec, people_table

ROWS = [("u1", "a@x.io", "free"), ("u2", "b@x.io", "pro")]
with DuckDBWarehouse(database=sys.argv[1]).session() as session:
    for spec, rows in [
        (people_spec(), ROWS),  # unchanged, no quick hash stored: refresh rows
        (people_spec(name="tracked", send="update"), ROWS),  # new records, tracked unsent
        (people_spec(name="ignored", on_delete="ignore"), ROWS[:1]),  # u2 gone: forgotten
    ]:
        people_table(session, rows)
        sender = ScriptedSender()
        run_sync(session, spec, sender)
        assert sender.sent == [], spec.mapping.name
print("pandas" in sys.modules)
"""


def test_a_sync_that_only_settles_imports_no_pandas(tmp_path: Path) -> None:
    database = str(tmp_path / "w.duckdb")
    with DuckDBWarehouse(database=database).session() as session:
        people_table(session, ROWS)
        run_sync(session, people_spec(), ScriptedSender())
        run_sync(session, people_spec(name="ignored", on_delete="ignore"), ScriptedSender())
        session.execute("UPDATE _segment_profiles.ledger SET quick_hash = NULL")
    out = subprocess.run(
        [sys.executable, "-c", SETTLE_ONLY, database], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False", "settling imported pandas; find where with `python -X importtime`"
    with DuckDBWarehouse(database=database).session() as session:  # and each sync did settle
        stale = "SELECT count(*) FROM _segment_profiles.ledger WHERE live AND quick_hash IS NULL"
        assert session.query(stale).scalar() == 0
        assert set(ledger(session, "tracked")) == {"u1", "u2"}
        assert set(ledger(session, "ignored")) == {"u1"}
