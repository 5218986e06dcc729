"""Hostile requests are bounded: body size, YAML alias expansion, nesting depth, non-finite
numbers; every refusal is {"error": ...} with a status that says what happened."""
from __future__ import annotations

import json
import time
import tracemalloc

import pytest
from django.test import override_settings
from rest_framework.test import APIClient

from campaigns.api.parsers import BodyTooLarge, read_body
from campaigns.models import Campaign
from tests.api.test_campaigns_api import XTB_YAML, post_yaml
from tests.api.portal_jobs import run_job

pytestmark = pytest.mark.django_db

BILLION_LAUGHS = """\
    a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
    b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
    c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
    d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
    e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
    f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
    g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
    h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
    i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""
LAUGHING_YAML = XTB_YAML.replace("  query:\n    xtb.gfn2: null\n", "  query:\n" + BILLION_LAUGHS)


@pytest.fixture
def demo(owned_dataset):
    return owned_dataset("demo", count=3)


def deep_query(depth: int) -> dict:
    query: dict = {"xtb.gfn2": None}
    for _ in range(depth):
        query = {"$and": [query]}
    return query


# --- body size --------------------------------------------------------------------------------

def test_it_refuses_a_body_over_the_default_limit_with_413(api, demo):
    body = b"# " + b"x" * (20 * 1024 * 1024)
    response = post_yaml(api, body.decode())
    assert response.status_code == 413
    assert response.json() == {"error": f"request body is {len(body):,} bytes, over the limit of "
                                        "10,485,760 (HTPORTAL_MAX_BODY_BYTES)"}
    assert not Campaign.objects.exists()


@override_settings(MAX_BODY_BYTES=1000)
@pytest.mark.parametrize("path, content_type", [
    ("/api/campaigns/?dataset=demo", "application/yaml"),
    ("/api/campaigns/?dataset=demo", "application/json"),
    ("/api/campaigns/noop_demo/launch/", "application/json"),
    ("/api/token/", "application/x-www-form-urlencoded"),
    ("/api/token/", "application/json"),
])
def test_a_smaller_limit_set_in_settings_holds_for_every_parser(api, demo, owned_campaign, path,
                                                                content_type):
    owned_campaign(name="noop_demo")
    response = api.generic("POST", path, b"x" * 1001, content_type=content_type)
    assert response.status_code == 413
    assert response.json() == {"error": "request body is 1,001 bytes, over the limit of 1,000 "
                                        "(HTPORTAL_MAX_BODY_BYTES)"}


@override_settings(MAX_BODY_BYTES=1000)
def test_a_multipart_definition_over_the_limit_is_413(api, demo):
    from django.core.files.uploadedfile import SimpleUploadedFile

    upload = SimpleUploadedFile("big.yaml", b"#" * 5000, content_type="application/yaml")
    response = api.post("/api/campaigns/?dataset=demo", {"file": upload}, format="multipart")
    assert response.status_code == 413
    assert response.json()["error"].endswith("over the limit of 1,000 (HTPORTAL_MAX_BODY_BYTES)")


@override_settings(MAX_BODY_BYTES=1000)
def test_a_body_is_cut_off_while_reading_when_its_length_lies():
    class Stream:
        def __init__(self):
            self.sent = 0

        def read(self, size):
            self.sent += size
            return b"x" * size

    stream = Stream()
    with pytest.raises(BodyTooLarge) as caught:
        read_body(stream, parser_context={})  # no Content-Length at all
    assert str(caught.value.detail) == ("request body is over the limit of 1,000 bytes "
                                        "(HTPORTAL_MAX_BODY_BYTES)")
    assert stream.sent <= 2 * 1024 * 1024  # it stopped after the first chunk past the limit


@override_settings(MAX_BODY_BYTES=1000, MAX_UPLOAD_BYTES=100_000)
def test_a_molecule_upload_has_its_own_larger_limit(api, demo, portal_redis,
                                                    django_capture_on_commit_callbacks):
    line = json.dumps({"id": "w", "elements": ["O", "H", "H"],
                       "coordinates": [[0, 0, 0], [0, 0, 0.96], [0.93, 0, -0.24]]}) + "\n"
    lines = "".join(line.replace('"w"', f'"w{i}"') for i in range(30))  # ~3 kB: over the body limit
    job = run_job(api, django_capture_on_commit_callbacks, portal_redis,
                  lambda: api.generic("POST", "/api/datasets/demo/records/", lines.encode(),
                                      content_type="application/x-ndjson"))
    assert (job["state"], job["report"]["written"]) == ("done", 30)
    big = api.generic("POST", "/api/datasets/demo/records/", b"x" * 100_001,
                      content_type="application/x-ndjson")
    assert big.status_code == 413
    assert big.json() == {"error": "the upload is 100,001 bytes; at most 100,000 are allowed "
                                   "(HTPORTAL_MAX_UPLOAD_BYTES): send the file in parts"}


# --- YAML aliases, depth, non-finite numbers -------------------------------------------------

def test_a_billion_laughs_definition_is_refused_fast_and_small(api, demo):
    assert len(BILLION_LAUGHS) < 700
    tracemalloc.start()
    started = time.monotonic()
    try:
        response = post_yaml(api, LAUGHING_YAML)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert response.status_code == 400
    assert response.json() == {"error": "request body: the document has more than 100,000 YAML "
                                        "nodes with its aliases expanded (each use of an alias "
                                        "counts its whole value), over the limit "
                                        "(HTPORTAL_YAML_MAX_NODES)"}
    assert time.monotonic() - started < 5
    assert peak < 50 * 1024 * 1024


def test_a_few_anchors_and_aliases_still_work(api, demo):
    text = XTB_YAML.replace("  query:\n    xtb.gfn2: null\n",
                            "  query:\n    input.charge: &zero 0\n    input.uhf: *zero\n")
    response = post_yaml(api, text)
    assert response.status_code == 201, response.json()
    assert response.json()["query"] == {"input.charge": 0, "input.uhf": 0}


def test_a_recursive_alias_is_refused(api, demo):
    response = post_yaml(api, XTB_YAML.replace("xtb.gfn2: null", "xtb.gfn2: &loop [*loop]"))
    assert response.status_code == 400
    assert "a recursive alias (a node that contains itself) is not allowed" in response.json()["error"]


@pytest.mark.parametrize("how", ["yaml", "json"])
def test_a_query_nested_past_the_limit_is_a_400_naming_it(api, demo, how):
    document = {**json.loads(json.dumps(__import__("yaml").safe_load(XTB_YAML))),
                "submit": {"query": deep_query(200)}}
    if how == "json":
        response = api.post("/api/campaigns/?dataset=demo", document, format="json")
    else:
        response = post_yaml(api, json.dumps(document))  # JSON is YAML
    assert response.status_code == 400
    assert "nested deeper than the limit of 64 (HTPORTAL_MAX_JSON_DEPTH)" in response.json()["error"]


@pytest.mark.parametrize("value, spelled", [(".inf", ".inf"), ("-.inf", "-.inf"), (".nan", ".nan")])
def test_a_non_finite_parameter_is_a_400_naming_the_field(api, demo, value, spelled):
    response = post_yaml(api, XTB_YAML.replace("      task: grad", f"      task: grad\n      charge: {value}"))
    assert response.status_code == 400
    assert response.json() == {"error": f"request body: campaign_config.args[0].charge: {spelled} "
                                        "is not a finite number (.inf, -.inf and .nan are not "
                                        "allowed)"}


def test_json_infinity_and_overflow_are_refused(api, demo):
    document = json.dumps(__import__("yaml").safe_load(XTB_YAML))
    nan = api.generic("POST", "/api/campaigns/?dataset=demo",
                      document.replace('"task": "grad"', '"task": "grad", "charge": NaN'),
                      content_type="application/json")
    assert nan.status_code == 400
    assert nan.json() == {"error": "JSON parse error - NaN is not a finite number"}
    huge = api.generic("POST", "/api/campaigns/?dataset=demo",
                       document.replace('"task": "grad"', '"task": "grad", "charge": 1e999'),
                       content_type="application/json")
    assert huge.status_code == 400
    assert huge.json()["error"].startswith("request body: campaign_config.args[0].charge: .inf ")


def test_a_jsonl_record_nested_past_the_limit_is_one_broken_line(
        api, demo, portal_redis, django_capture_on_commit_callbacks):
    good = {"id": "ok", "elements": ["H", "H"], "coordinates": [[0, 0, 0], [0, 0, 0.74]]}
    deep = json.dumps(dict(good, id="deep", extra=None)).replace("null", "[" * 990 + "]" * 990)
    body = json.dumps(good) + "\n" + deep + "\n"
    job = run_job(api, django_capture_on_commit_callbacks, portal_redis,
                  lambda: api.generic("POST", "/api/datasets/demo/records/?on_error=skip",
                                      body.encode(), content_type="application/x-ndjson"))
    report = job["report"]
    assert (job["state"], report["written"], report["skipped"]) == ("done", 1, 1)
    assert report["errors"][0]["error"] == (
        "JSON nested deeper than the limit of 64 (HTPORTAL_MAX_JSON_DEPTH)")


# --- every DRF error is {"error": ...} -------------------------------------------------------

def test_drfs_own_errors_have_the_error_shape(api, demo):
    assert APIClient().get("/api/datasets/").json() == {
        "error": "Authentication credentials were not provided."}
    assert api.get("/api/datasets/nope/").json() == {"error": "No Dataset matches the given query."}
    not_allowed = api.patch("/api/datasets/demo/")
    assert (not_allowed.status_code, not_allowed.json()) == (
        405, {"error": 'Method "PATCH" not allowed.'})
    unsupported = api.generic("POST", "/api/campaigns/", b"x", content_type="text/csv")
    assert (unsupported.status_code, unsupported.json()) == (
        415, {"error": 'Unsupported media type "text/csv" in request.'})
    broken = api.generic("POST", "/api/campaigns/", b"{", content_type="application/json")
    assert broken.status_code == 400
    assert broken.json()["error"].startswith("JSON parse error - ")


def test_a_path_no_api_route_matches_is_a_404_in_the_error_shape(api):
    response = api.get("/api/nowhere/")
    assert response.status_code == 404
    assert response.json() == {"error": "no API endpoint at /api/nowhere/ (see /api/docs/)"}
    assert api.get("/api/datasets/two words/").json()["error"].startswith("no API endpoint at ")


def test_a_bug_is_a_500_in_the_error_shape(alice, client_for, monkeypatch):
    def broken(**kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr("campaigns.api.views.datasets_visible", broken)
    client = client_for(alice)
    client.raise_request_exception = False
    response = client.get("/api/datasets/")
    assert response.status_code == 500
    assert response.json()["error"].startswith("internal error: ")
    assert "a bug" not in response.content.decode()


def test_a_json_definition_with_too_many_values_is_refused_before_it_is_converted(api, demo):
    document = __import__("yaml").safe_load(XTB_YAML)
    document["submit"]["query"] = {"input.charge": {"$in": list(range(200_000))}}
    started = time.monotonic()
    response = api.post("/api/campaigns/?dataset=demo", document, format="json")
    assert response.status_code == 400
    assert response.json() == {"error": "request body: the document has more than 100,000 "
                                        "values, over the limit (HTPORTAL_YAML_MAX_NODES)"}
    assert time.monotonic() - started < 10
