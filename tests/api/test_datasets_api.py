"""Datasets through the API: create, list, read, and bulk uploads of molecules (each a
background job, worked here by a real rq worker on the test Redis)."""
from __future__ import annotations

import json
import time

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from campaigns.models import Dataset, Record
from tests.api.conftest import WATER
from tests.api.portal_jobs import run_job

pytestmark = pytest.mark.django_db


def jsonl(count: int, start: int = 0) -> bytes:
    return "".join(json.dumps({"id": f"w{number:07d}", **WATER}) + "\n"
                   for number in range(start, start + count)).encode()


EXTXYZ = b"""3
Properties=species:S:1:pos:R:3 id=water charge=0 multiplicity=1
O 0.0 0.0 0.117
H 0.0 0.757 -0.467
H 0.0 -0.757 -0.467
2
Properties=species:S:1:pos:R:3 id=hydrogen
H 0.0 0.0 0.0
H 0.0 0.0 0.74
"""


@pytest.fixture
def waters(api):
    assert api.post("/api/datasets/", {"name": "waters"}, format="json").status_code == 201
    return Dataset.objects.get(name="waters")


def send(api, body: bytes, content_type="application/x-ndjson", dataset="waters", query=""):
    return api.generic("POST", f"/api/datasets/{dataset}/records/{query}", body,
                       content_type=content_type)


@pytest.fixture
def upload(api, portal_redis, django_capture_on_commit_callbacks):
    """upload(body, ...) -> the upload's job once a worker has run it."""
    def run(body: bytes, **options) -> dict:
        return run_job(api, django_capture_on_commit_callbacks, portal_redis,
                       lambda: send(api, body, **options))
    return run


@pytest.fixture
def upload_file(api, portal_redis, django_capture_on_commit_callbacks):
    """upload_file(SimpleUploadedFile) -> its multipart upload's job once run."""
    def run(file) -> dict:
        return run_job(api, django_capture_on_commit_callbacks, portal_redis,
                       lambda: api.post("/api/datasets/waters/records/", {"file": file},
                                        format="multipart"))
    return run


def test_it_creates_a_dataset_owned_by_the_user(api, alice):
    response = api.post("/api/datasets/", {"name": "waters", "description": "wet"}, format="json")
    assert response.status_code == 201
    assert response.json()["name"] == "waters"
    assert response.json()["owner"] == "alice"
    dataset = Dataset.objects.get(name="waters")
    assert (dataset.owner, dataset.description, dataset.store) == (alice, "wet", "sql")


def test_a_bad_or_taken_name_is_a_400_with_the_models_message(api, waters):
    taken = api.post("/api/datasets/", {"name": "waters"}, format="json")
    assert taken.status_code == 400
    assert taken.json() == {"error": "name: the name 'waters' is not available; choose another"}
    bad = api.post("/api/datasets/", {"name": "two words"}, format="json")
    assert bad.status_code == 400
    assert bad.json()["error"].startswith("name: Enter a valid “slug”")
    missing = api.post("/api/datasets/", {}, format="json")
    assert missing.json() == {"error": "name: This field is required."}


def test_it_lists_and_reads_datasets_a_page_at_a_time(api, owned_dataset):
    for name in ("a1", "a2", "a3"):
        owned_dataset(name, count=2)
    first = api.get("/api/datasets/?limit=2")
    assert [d["name"] for d in first.json()["results"]] == ["a1", "a2"]
    assert first["Link"] == f'<{first.json()["next"]}>; rel="next"'
    second = api.get(first.json()["next"])
    assert [d["name"] for d in second.json()["results"]] == ["a3"]
    assert second.json()["next"] is None
    one = api.get("/api/datasets/a2/").json()
    assert (one["name"], one["record_count"], one["store"]) == ("a2", 2, "sql")


def test_it_uploads_json_lines(upload, waters):
    job = upload(jsonl(3))
    assert (job["state"], job["kind"]) == ("done", "records_import")
    report = job["report"]
    assert {key: report[key] for key in ("read", "written", "already_present", "skipped",
                                         "errors", "record_count")} == {
        "read": 3, "written": 3, "already_present": 0, "skipped": 0, "errors": [],
        "record_count": 3}
    assert job["message"] == "waters: 3 written, 0 skipped, 0 already present; 3 records"
    record = Record.objects.get(dataset=waters, record_id="w0000001")
    assert record.input["coordinates"] == WATER["coordinates"]
    again = upload(jsonl(4))["report"]
    assert (again["written"], again["already_present"]) == (1, 3)


def test_it_uploads_extended_xyz_as_body_and_as_multipart_file(upload, upload_file, waters):
    job = upload(EXTXYZ, content_type="chemical/x-extxyz")
    assert job["report"]["written"] == 2
    assert Record.objects.get(dataset=waters, record_id="hydrogen").input["elements"] == ["H", "H"]
    multipart = upload_file(SimpleUploadedFile("more.jsonl", jsonl(2, start=10)))
    assert multipart["state"] == "done"
    assert multipart["report"]["record_count"] == 4


def test_a_broken_molecule_fails_the_upload_naming_its_line_and_writes_nothing(upload, waters):
    body = jsonl(2) + b'{"id": "bad", "elements": ["O"]}\n' + jsonl(2, start=5)
    job = upload(body)
    assert job["state"] == "failed"
    assert job["message"] == ("upload.jsonl:3: missing coordinates; nothing was written "
                              "(on_error=abort)")
    assert job["report"]["error"] == "upload.jsonl:3: missing coordinates"
    assert Record.objects.filter(dataset=waters).count() == 0


def test_a_broken_multipart_file_is_named_by_its_own_name(upload_file, waters):
    job = upload_file(SimpleUploadedFile("mine.jsonl", b"[1, 2]\n"))
    assert job["report"]["error"] == "mine.jsonl:1: expected a JSON object, found list"


def test_on_error_skip_passes_broken_molecules_over_and_lists_them(upload, waters):
    body = jsonl(2) + b"not json\n" + jsonl(1, start=5)
    job = upload(body, query="?on_error=skip")
    assert job["state"] == "done"
    report = job["report"]
    assert (report["written"], report["skipped"]) == (3, 1)
    assert report["errors"][0]["file"] == "upload.jsonl"
    assert report["errors"][0]["line"] == 3
    assert report["errors"][0]["error"].startswith("not JSON")


@pytest.mark.parametrize("query, content_type, body, error", [
    ("?on_error=maybe", "application/x-ndjson", b"{}\n", "on_error must be one of skip, abort, "
                                                       "got 'maybe'"),
    ("", "application/octet-stream", b"x", 'Unsupported media type "application/octet-stream" '
                                           'in request.'),
])
def test_bad_upload_requests_are_400_or_415_with_a_message(api, waters, query, content_type,
                                                           body, error):
    response = send(api, body, content_type=content_type, query=query)
    assert response.status_code in (400, 415)
    assert response.json() == {"error": error}


def test_an_upload_without_a_file_says_how_to_send_one(api, waters):
    response = api.post("/api/datasets/waters/records/", {}, format="multipart")
    assert response.status_code == 400
    assert response.json()["error"].startswith("no molecules: send a file as the body")


def test_an_unknown_file_extension_is_refused_at_once(api, waters):
    file = SimpleUploadedFile("mol.pdb", b"HETATM\n")
    response = api.post("/api/datasets/waters/records/", {"file": file}, format="multipart")
    assert response.status_code == 400
    assert response.json() == {"error": "mol.pdb: unknown molecule file extension '.pdb' "
                                        "(supported: .xyz, .extxyz, .sdf, .mol, .jsonl)"}


def test_an_upload_above_the_limit_is_413_and_starts_no_job(api, waters, settings):
    settings.MAX_UPLOAD_BYTES = 1000
    response = send(api, jsonl(20))
    assert response.status_code == 413
    assert response.json() == {"error": f"the upload is {len(jsonl(20)):,} bytes; at most 1,000 "
                                        "are allowed (HTPORTAL_MAX_UPLOAD_BYTES): send the file "
                                        "in parts"}
    assert not waters.records.exists()
    from campaigns.models import PortalJob
    assert not PortalJob.objects.exists()
