"""Schemathesis drives every operation of /api/schema/ against the WSGI app with a token: no
input may make a view answer 5xx. (A view made to raise turns this test red: docs/api.md.)"""
from __future__ import annotations

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from rest_framework.authtoken.models import Token
from schemathesis.checks import not_a_server_error

from campaigns.models import ArgSet
from campaigns.stores import ResultUpdate, store_for

# Each operation runs up to this many generated requests; the whole file stays near a minute.
MAX_EXAMPLES = 15


@pytest.fixture
def wsgi_app():
    """The Django WSGI app, serving inside the test's transaction: Django closes "old"
    connections around each request, which would close the test's own (its test client
    disconnects these handlers too)."""
    from htportal.wsgi import application
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield application
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def token(alice, owned_campaign, portal_redis) -> str:
    """Alice's token; she owns campaign noop_demo (results in out.a) and its dataset."""
    campaign = owned_campaign(name="noop_demo", records=3)
    ArgSet.objects.create(campaign=campaign, name="b", position=1)
    store_for(campaign.dataset).write_results(updates=[ResultUpdate(
        "mol-000000", "out", "a", {"energy": {"value": -1.0, "unit": "Eh"}})])
    return Token.objects.create(user=alice).key


@pytest.fixture
def api_schema(db, wsgi_app, token):
    return schemathesis.openapi.from_wsgi("/api/schema/", wsgi_app,
                                          headers={"Authorization": f"Token {token}"})


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.filter_too_much, HealthCheck.data_too_large])
def test_no_input_makes_a_server_error(case, token):
    case.call_and_validate(headers={"Authorization": f"Token {token}"},
                           checks=[not_a_server_error])
