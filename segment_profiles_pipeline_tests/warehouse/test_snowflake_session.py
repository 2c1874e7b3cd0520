"""Snowflake sessions can open a sibling connection (the sync lock's heartbeat runs on one)."""

import threading

import fakesnow
import pytest
import snowflake.connector

from segment_profiles_pipeline.errors import WarehouseError
from segment_profiles_pipeline.warehouse.snowflake import SnowflakeSession
from segment_profiles_pipeline_tests.warehouse.fake_snowflake import DATABASE, fake_snowflake


def test_a_sibling_session_is_another_connection_to_the_same_database() -> None:
    with fake_snowflake() as warehouse, warehouse.session() as session:
        session.execute("CREATE SCHEMA IF NOT EXISTS s")
        session.execute("CREATE TABLE s.t (x INTEGER)")
        with session.sibling() as sibling:
            assert sibling.con is not session.con
            session.execute("INSERT INTO s.t VALUES (1)")
            assert sibling.query("SELECT count(*) FROM s.t").scalar() == 1
            worker = threading.Thread(target=sibling.execute, args=("INSERT INTO s.t VALUES (2)",))
            worker.start()
            worker.join()
        assert session.query("SELECT sum(x) FROM s.t").scalar() == 3
        session.execute("INSERT INTO s.t VALUES (3)")  # closing the sibling left this session open


def test_a_session_over_a_bare_connection_says_why_it_has_no_sibling() -> None:
    with fakesnow.patch():
        session = SnowflakeSession(snowflake.connector.connect(database=DATABASE))
        with pytest.raises(WarehouseError, match="bare connection"), session.sibling():
            pass
