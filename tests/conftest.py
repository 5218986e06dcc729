"""Fixtures that start real servers: one redis-server per test session on a free port, and a
PostgreSQL server (the machine's, or a throwaway one when none answers)."""
from __future__ import annotations

import os

import pytest
from redis import Redis

from tests import servers

# Playwright's sync API runs an event loop in the test thread; Django would then refuse ORM
# calls made from that thread (see RECIPES.md, browser tests).
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


@pytest.fixture(scope="session")
def redis_server():
    server = servers.start_redis()
    yield server
    server.stop()


@pytest.fixture
def redis_conn(redis_server):
    conn = Redis.from_url(redis_server.url)
    conn.flushdb()
    yield conn
    conn.flushdb()
    conn.close()


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix):
    """Point the 'postgres' alias at a throwaway server when the configured one is silent."""
    from django.conf import settings

    pg = settings.DATABASES["postgres"]
    if servers.postgres_answers(pg.get("HOST") or "127.0.0.1", int(pg.get("PORT") or 5432)):
        yield
        return
    server = servers.start_postgres()
    pg.update({"HOST": "127.0.0.1", "PORT": server.port, "USER": "postgres", "PASSWORD": ""})
    yield
    server.stop()
