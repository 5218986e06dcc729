"""The suite's own servers are real and reachable."""
import pytest
from django.db import connections


def test_it_runs_a_real_redis_server(redis_conn):
    redis_conn.set("k", "v")
    assert redis_conn.get("k") == b"v"
    assert redis_conn.info("server")["redis_version"]


@pytest.mark.django_db(databases=["default", "postgres"])
def test_it_has_sqlite_and_postgresql():
    assert connections["default"].vendor == "sqlite"
    assert connections["postgres"].vendor == "postgresql"
    with connections["postgres"].cursor() as cursor:
        cursor.execute("select 1")
        assert cursor.fetchone() == (1,)
