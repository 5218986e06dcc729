"""MongoDB on a real server, for the shared record-store tests in tests/campaigns/test_stores.py.

This module turns HTPORTAL_TEST_MONGODB_URL into parameters of the shared `case` fixture, so
every shared test runs once more against that server:

    HTPORTAL_TEST_MONGODB_URL=mongodb://localhost:27017 bin/test tests/campaigns/test_stores.py

Unset (the default), the list is empty and the shared tests run on SQLite, PostgreSQL and
mongomock only: nothing is skipped, there is simply no live case. Each live test works in a
collection of its own in the database `htportal_test` and drops it afterwards.
"""
from __future__ import annotations

import os
from typing import Mapping

import pytest

LIVE_DATABASE = "htportal_test"


def live_store_params(environ: Mapping[str, str]) -> list:
    """The live case for the shared fixture's params: one when the variable names a server."""
    return [pytest.param("mongodb-live", id="mongodb-live")] if live_url(environ) else []


def live_url(environ: Mapping[str, str]) -> str:
    return environ.get("HTPORTAL_TEST_MONGODB_URL", "").strip()


LIVE_URL = live_url(os.environ)
LIVE_STORE_PARAMS = live_store_params(os.environ)


@pytest.mark.parametrize("environ, ids", [
    ({}, []),
    ({"HTPORTAL_TEST_MONGODB_URL": ""}, []),
    ({"HTPORTAL_TEST_MONGODB_URL": " mongodb://db.example.org:27017 "}, ["mongodb-live"]),
])
def test_the_live_case_follows_the_environment(environ, ids):
    assert [param.id for param in live_store_params(environ)] == ids
