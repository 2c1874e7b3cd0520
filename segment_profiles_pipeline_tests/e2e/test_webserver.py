"""End to end through the real webserver: ``dg dev`` as a user starts it, driven over GraphQL.

1. materialize the whole graph (dry run: no write key) and wait for success; the run is tagged
   as a dry run;
2. the schedules, sensors and Test Mapping jobs are there with their default status, and the
   alert sensor ignores the dry run;
3. a row added to ``app.users`` makes the source-change sensor (evaluated by the daemon that
   ``dg dev`` runs) request a run of exactly what reads it, which succeeds;
4. shutting the process group down leaves no process behind.

Every wait is a bounded poll on a condition with a message saying what did not happen.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psutil
import pytest
from dagster_graphql import DagsterGraphQLClient

from segment_profiles_pipeline.settings import PROJECT_ROOT
from segment_profiles_pipeline.warehouse.duckdb import DuckDBWarehouse

pytestmark = pytest.mark.e2e

LOCATION = "segment_profiles_pipeline"
REPOSITORY = "__repository__"
SOURCE_SENSOR = "source_change_sensor"
ALERT_SENSOR = "sync_alert_sensor"
T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T | None], timeout_s: float, log: Path) -> T:
    """Poll ``probe`` until it returns something truthy; fail with ``what`` and the server log's tail."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.5)  # polling interval of a bounded wait, not synchronisation
    tail = log.read_text(errors="replace")[-4000:] if log.exists() else "(no log)"
    pytest.fail(f"timed out after {timeout_s:.0f}s waiting for {what}. dagster dev log tail:\n{tail}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """The running ``dagster dev`` and a GraphQL helper for the queries the Python client lacks."""

    def __init__(self, port: int, log: Path):
        self.port = port
        self.log = log
        self.client = DagsterGraphQLClient("127.0.0.1", port_number=port)

    def gql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        response = httpx.post(
            f"http://127.0.0.1:{self.port}/graphql",
            json={"query": query, "variables": variables or {}},
            timeout=30,
        )
        response.raise_for_status()
        body = response.json()
        assert "errors" not in body, body["errors"]
        return body["data"]

    def up(self) -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{self.port}/server_info", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def repository(self) -> dict[str, Any] | None:
        data = self.gql(
            """query($repo: RepositorySelector!) { repositoryOrError(repositorySelector: $repo) {
                __typename
                ... on Repository {
                  schedules { name cronSchedule executionTimezone scheduleState { status } }
                  jobs { name }
                  sensors { name minIntervalSeconds sensorState { status } }
                } } }""",
            {"repo": {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY}},
        )["repositoryOrError"]
        return data if data["__typename"] == "Repository" else None

    def sensor_cursor(self, name: str) -> dict[str, Any] | None:
        data = self.gql(
            """query($s: SensorSelector!) { sensorOrError(sensorSelector: $s) {
                ... on Sensor { sensorState { typeSpecificData { ... on SensorData { lastCursor } } } } } }""",
            {"s": {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY, "sensorName": name}},
        )["sensorOrError"]
        cursor = data["sensorState"]["typeSpecificData"]["lastCursor"]
        return json.loads(cursor) if cursor else None

    def runs(self, tags: dict[str, str] | None = None) -> list[dict[str, Any]]:
        data = self.gql(
            """query($tags: [ExecutionTag!]) { runsOrError(filter: {tags: $tags}) {
                ... on Runs { results { runId status tags { key value } assetSelection { path } } } } }""",
            {"tags": [{"key": k, "value": v} for k, v in (tags or {}).items()]},
        )["runsOrError"]
        return data["results"]

    def finished(self, run_id: str) -> str | None:
        status = self.client.get_run_status(run_id).value
        return status if status in {"SUCCESS", "FAILURE", "CANCELED"} else None


def session_processes(sid: int) -> list[psutil.Process]:
    """Every live process of the session ``dagster dev`` leads (children, grandchildren, run workers)."""
    found = []
    for proc in psutil.process_iter():
        try:
            if os.getsid(proc.pid) == sid and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (ProcessLookupError, psutil.NoSuchProcess, PermissionError):
            continue
    return found


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SEGMENT_", "SNOWFLAKE_"))}
    for name in ("WAREHOUSE", "SAMPLE_DATA", "ALERT_WEBHOOK_URL"):
        env.pop(name, None)
    env.update(DAGSTER_HOME=str(home), DUCKDB_DATABASE=str(tmp_path / "warehouse.duckdb"), SAMPLE_USERS="200")
    port = free_port()
    log = tmp_path / "dagster_dev.log"
    # `dg dev` as the README says (it reads [tool.dg] and runs `dagster dev` on a generated
    # workspace); `dagster dev -w workspace.yaml` is the documented equivalent.
    dg = Path(sys.executable).with_name("dg")
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(dg), "dev", "--host", "127.0.0.1", "--port", str(port)],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: one signal reaches every child
        )
    server = Server(port, log)
    try:
        wait_for("the webserver to answer /server_info", server.up, 90, log)
        wait_for("the code location to load", server.repository, 60, log)
        yield server
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
            pytest.fail("dagster dev did not stop within 30s of SIGTERM")
        psutil.wait_procs(session_processes(proc.pid), timeout=15)
        leftovers = session_processes(proc.pid)
        described = [_describe(p) for p in leftovers]  # before the kill: a killed process has no cmdline
        for p in leftovers:
            p.kill()
        assert not leftovers, f"processes left after dagster dev stopped: {described}"


def _describe(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline())
    except psutil.Error:  # it exited meanwhile
        return f"pid {process.pid} (exited while being listed)"


def test_materialize_schedules_sensors_and_source_change(server: Server, tmp_path: Path) -> None:
    # (1) the whole graph, as "Materialize all" does
    run_id = server.client.submit_job_execution("__ASSET_JOB", repository_location_name=LOCATION)
    status = wait_for(f"run {run_id} (all assets) to finish", lambda: server.finished(run_id), 90, server.log)
    assert status == "SUCCESS", f"run {run_id} ended {status}; see {server.log}"
    assert [r["runId"] for r in server.runs({"segment_profiles/dry_run": "true"})] == [run_id]

    # (2) automation and its default status: schedules of enabled mappings and both sensors run
    repo = server.repository()
    assert repo is not None
    schedules = {s["name"]: s for s in repo["schedules"]}
    # every shipped mapping is enabled, so every schedule runs; the four below are pinned exactly
    # (other domains add their own mappings and schedules)
    served = {
        name: (s["cronSchedule"], s["executionTimezone"], s["scheduleState"]["status"])
        for name, s in schedules.items()
    }
    assert {status for _, _, status in served.values()} == {"RUNNING"}
    assert (
        served.items()
        >= {
            "users_identify_schedule": ("0 * * * *", "UTC", "RUNNING"),
            "account_memberships_group_schedule": ("0 * * * *", "UTC", "RUNNING"),
            "computed_traits_identify_schedule": ("0 * * * *", "UTC", "RUNNING"),
            "audiences_identify_schedule": ("0 * * * *", "UTC", "RUNNING"),
        }.items()
    )
    sensors = {s["name"]: (s["minIntervalSeconds"], s["sensorState"]["status"]) for s in repo["sensors"]}
    assert sensors == {SOURCE_SENSOR: (30, "RUNNING"), ALERT_SENSOR: (30, "RUNNING")}
    jobs = {j["name"] for j in repo["jobs"]}
    assert {"users_identify_test_mapping", "account_memberships_group_test_mapping"} <= jobs

    # (3) the daemon's source sensor has recorded the tables as they are now...
    def recorded() -> dict[str, Any] | None:
        cursor = server.sensor_cursor(SOURCE_SENSOR)
        return cursor if cursor and cursor["tables"].get("app.users", "").startswith("rows=200;") else None

    wait_for("the source sensor to record app.users (200 rows)", recorded, 75, server.log)
    # the alert sensor has read the history after that run, and judged nothing: it was a dry run
    alert_cursor = wait_for(
        "the alert sensor to record a cursor", lambda: server.sensor_cursor(ALERT_SENSOR), 75, server.log
    )
    assert alert_cursor["version"] == 2 and alert_cursor["health"] == {}
    assert server.runs({"dagster/sensor_name": SOURCE_SENSOR}) == []
    # ...then a row arrives, written like any run writes (queued on the file lock, never during another writer)
    with DuckDBWarehouse(database=str(tmp_path / "warehouse.duckdb")).session() as session:
        session.execute(
            "INSERT INTO app.users (user_id, email, updated_at) VALUES ('u_e2e', 'e2e@example.com', now())"
        )

    def sensor_run() -> dict[str, Any] | None:
        runs = server.runs({"dagster/sensor_name": SOURCE_SENSOR})
        return runs[0] if runs else None

    run = wait_for("the source sensor to request a run after the insert", sensor_run, 75, server.log)
    tags = {t["key"]: t["value"] for t in run["tags"]}
    assert tags["segment_profiles/changed_sources"] == "app.users"
    selected = {"/".join(a["path"]) for a in run["assetSelection"]}
    # what reads app.users (other domains' models of app.users join it), the identity graph (it reads
    # the users' identify records) and, keyed on its profiles, the Flex traits and audiences
    assert {
        "users",
        "account_memberships",
        "profile_sync/users_identify",
        "profile_sync/account_memberships_group",
        "identity/external_id_mapping",
        "computed_traits",
        "audiences",
        "profile_sync/computed_traits_identify",
    } <= selected
    status = wait_for(
        f"sensor run {run['runId']} to finish", lambda: server.finished(run["runId"]), 60, server.log
    )
    assert status == "SUCCESS", f"sensor run {run['runId']} ended {status}; see {server.log}"
    # (4) shutdown and the no-leftover check happen in the fixture
