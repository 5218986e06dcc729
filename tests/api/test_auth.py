"""Every API route needs a login; a token or the session will do; users see only their own."""
from __future__ import annotations

import re
import time

import pytest
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.test import APIClient

from tests.api.conftest import PASSWORD

METHODS = ("get", "post", "put", "patch", "delete")
# The one route open to anonymous users: it is how a script logs in.
OPEN_ROUTES = {"token/"}


def api_routes() -> list[str]:
    """Every route under /api/, as a path with sample values for its parameters."""
    api = next(p for p in get_resolver().url_patterns
               if isinstance(p, URLResolver) and str(p.pattern) == "api/")
    routes = []

    def walk(patterns, prefix):
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                walk(pattern.url_patterns, prefix + str(pattern.pattern))
            elif isinstance(pattern, URLPattern):
                routes.append(prefix + str(pattern.pattern))
    walk(api.url_patterns, "")
    return routes


def test_the_api_has_the_routes_this_file_checks():
    routes = api_routes()
    assert len(routes) == 21
    assert "campaigns/<slug:name>/resubmit-failed/" in routes
    assert "jobs/<int:id>/" in routes


@pytest.mark.django_db
@pytest.mark.parametrize("route", [r for r in api_routes() if r not in OPEN_ROUTES])
@pytest.mark.parametrize("method", METHODS)
def test_it_refuses_anonymous_requests_on_every_route(route, method, owned_campaign):
    owned_campaign(name="noop_demo")  # so that a route with a name would find something
    path = "/api/" + re.sub(r"<\w+:(\w+)>", "noop_demo", re.sub(r"<int:\w+>", "1", route))
    response = getattr(APIClient(), method)(path)
    assert response.status_code in (401, 403), (method, path, response.status_code)


@pytest.mark.django_db
def test_the_token_route_gives_a_token_for_a_password(alice):
    response = APIClient().post("/api/token/", {"username": "alice", "password": PASSWORD},
                                format="json")
    assert response.status_code == 200
    token = response.json()["token"]
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert client.get("/api/datasets/").status_code == 200


@pytest.mark.django_db
def test_a_wrong_password_gets_no_token(alice):
    response = APIClient().post("/api/token/", {"username": "alice", "password": "nope"},
                                format="json")
    assert response.status_code == 400
    assert "token" not in response.json()


@pytest.mark.django_db
def test_a_wrong_token_is_refused(owned_dataset):
    owned_dataset()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token 0123456789abcdef")
    response = client.get("/api/datasets/")
    assert response.status_code == 401
    assert response.json() == {"error": "Invalid token."}


@pytest.mark.django_db
def test_the_session_works_with_its_csrf_token(alice, owned_dataset):
    owned_dataset("waters")
    client = APIClient(enforce_csrf_checks=True)
    client.login(username="alice", password=PASSWORD)
    assert [d["name"] for d in client.get("/api/datasets/").json()["results"]] == ["waters"]
    refused = client.post("/api/datasets/", {"name": "more"}, format="json")
    assert refused.status_code == 403
    assert "CSRF" in refused.json()["error"]
    client.get("/admin/login/")  # sets the csrftoken cookie
    created = client.post("/api/datasets/", {"name": "more"}, format="json",
                          HTTP_X_CSRFTOKEN=client.cookies["csrftoken"].value)
    assert created.status_code == 201


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/api/datasets/theirs/", "/api/campaigns/their_run/",
                                  "/api/campaigns/their_run/status/",
                                  "/api/campaigns/their_run/tasks/",
                                  "/api/campaigns/their_run/definition/",
                                  "/api/campaigns/their_run/results/jsonl/"])
def test_a_user_cannot_see_anothers_objects(path, api, bob, owned_dataset, owned_campaign):
    owned_dataset("theirs", owner=bob)
    owned_campaign(name="their_run", owner=bob)
    response = api.get(path)
    assert response.status_code == 404
    assert response.json() == {"error": "No Campaign matches the given query."
                               if "campaigns" in path else "No Dataset matches the given query."}


@pytest.mark.django_db
@pytest.mark.parametrize("action", ["launch", "pause", "resume", "cancel", "resubmit-failed"])
def test_a_user_cannot_act_on_anothers_campaign(action, api, bob, owned_campaign):
    campaign = owned_campaign(name="their_run", owner=bob)
    assert api.post(f"/api/campaigns/their_run/{action}/").status_code == 404
    assert api.delete("/api/campaigns/their_run/").status_code == 404
    campaign.refresh_from_db()
    assert campaign.state == "draft"


@pytest.mark.django_db
def test_lists_hold_only_ones_own_but_staff_sees_all(api, client_for, bob, staff, owned_dataset,
                                                      owned_campaign):
    owned_dataset("mine")
    owned_dataset("theirs", owner=bob)
    owned_campaign(name="my_run")
    owned_campaign(name="their_run", owner=bob)
    names = lambda client, what: sorted(x["name"] for x in client.get(f"/api/{what}/").json()["results"])  # noqa: E731
    assert names(api, "datasets") == ["mine", "my_run-records"]
    assert names(api, "campaigns") == ["my_run"]
    assert names(client_for(staff), "campaigns") == ["my_run", "their_run"]
    assert len(names(client_for(staff), "datasets")) == 4
    assert client_for(staff).get("/api/campaigns/their_run/").json()["owner"] == "bob"
    assert client_for(staff).get("/api/datasets/theirs/").status_code == 200


# --- the login throttle ----------------------------------------------------------------------

@pytest.fixture
def fresh_login_counts():
    """No failed logins counted yet (the shipped rate: 10 failures a minute)."""
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()


def login(password: str, username: str = "alice", **extra):
    return APIClient().post("/api/token/", {"username": username, "password": password},
                            format="json", **extra)


@pytest.mark.django_db
def test_a_wrong_password_is_an_error_in_the_api_shape(alice, fresh_login_counts):
    response = login("nope")
    assert response.status_code == 400
    assert response.json() == {"error": "Unable to log in with provided credentials."}


@pytest.mark.django_db
def test_the_eleventh_wrong_password_in_a_minute_is_429_and_so_is_the_right_one(alice, fresh_login_counts):
    for _ in range(10):
        assert login("nope").status_code == 400
    refused = login("nope")
    assert refused.status_code == 429
    assert refused.json()["error"].startswith("Request was throttled. Expected available in ")
    assert int(refused.headers["Retry-After"]) > 0
    right = login(PASSWORD)
    assert right.status_code == 429
    assert "token" not in right.json()


@pytest.mark.django_db
def test_right_passwords_do_not_count(alice, fresh_login_counts):
    for _ in range(15):
        assert login(PASSWORD).status_code == 200


@pytest.mark.django_db
def test_the_count_is_per_username_and_address(alice, bob, fresh_login_counts):
    for _ in range(10):
        login("nope")
    assert login("nope").status_code == 429
    assert login(PASSWORD, username="bob").status_code == 200
    assert login(PASSWORD, REMOTE_ADDR="10.0.0.2").status_code == 200
    # A client cannot pick its own address: X-Forwarded-For is not read without a proxy.
    assert login(PASSWORD, HTTP_X_FORWARDED_FOR="10.9.9.9").status_code == 429


@pytest.mark.django_db
def test_the_right_password_works_again_once_the_window_passes(alice, fresh_login_counts, monkeypatch):
    from campaigns.api.login import FailedLoginThrottle

    monkeypatch.setattr(FailedLoginThrottle, "THROTTLE_RATES", {"login": "3/s"})
    for _ in range(3):
        login("nope")
    assert login(PASSWORD).status_code == 429
    time.sleep(1.1)
    assert login(PASSWORD).status_code == 200
