"""Long requests as background jobs: an upload or a launch answers 202 at once, the job runs in a
real rq worker (JSON serializer) on the test Redis, and the client polls /api/jobs/ID/."""
from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
import zlib
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.db import connection as db_connection
from django.utils import timezone
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from campaigns.models import Dataset, PortalJob, Record
from campaigns.services import portal_jobs
from campaigns.services.portal_jobs import portal_job_run, progress_key, rq_job_id
from tests.api.conftest import WATER
from tests.api.portal_jobs import portal_queue, submit, work_portal_jobs
from tests.pipeline.conftest import queued_ids, task_states

ROOT = Path(__file__).resolve().parents[2]


def jsonl(count: int, start: int = 0) -> bytes:
    return "".join(json.dumps({"id": f"w{number:07d}", **WATER}) + "\n"
                   for number in range(start, start + count)).encode()


def send_upload(api, body: bytes, query: str = ""):
    return api.generic("POST", f"/api/datasets/waters/records/{query}", body,
                       content_type="application/x-ndjson")


def poll(api, job: dict) -> dict:
    response = api.get(job["url"])
    assert response.status_code == 200, response.content[:300]
    return response.json()["job"]


@pytest.fixture
def waters(owned_dataset):
    return owned_dataset("waters", count=0)


@pytest.fixture
def start(django_capture_on_commit_callbacks):
    """start(send) -> the 202's job, with the request's on_commit callbacks run."""
    return lambda send: submit(django_capture_on_commit_callbacks, send)


# --- uploads ------------------------------------------------------------------------------------

@pytest.mark.django_db(transaction=True)
def test_a_100000_record_upload_answers_202_at_once_and_polling_shows_it_move(
        api, client_for, alice, waters, portal_redis):
    with db_connection.cursor() as cursor:  # as the portal's settings do: readers go on
        cursor.execute("PRAGMA journal_mode=WAL")  # while the import writes
    body = jsonl(100_000)
    started = time.monotonic()
    response = send_upload(api, body)
    seconds = time.monotonic() - started
    assert response.status_code == 202, response.content[:300]
    job = response.json()["job"]
    assert (job["state"], job["url"]) == ("queued", f"/api/jobs/{job['id']}/")
    assert response["Location"] == job["url"]
    assert seconds < 2, f"{seconds:.2f} s to answer a 100,000-record upload"
    assert not Record.objects.filter(dataset=waters).exists()  # nothing imported in the request

    seen: list[tuple[str, int]] = []
    stop = threading.Event()

    def watch() -> None:  # another client polling while the worker imports
        poller = client_for(alice)
        try:
            while not stop.is_set():
                polled = poll(poller, job)
                seen.append((polled["state"], polled["progress"]["done"]))
                time.sleep(0.25)
        finally:
            db_connection.close()

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        work_portal_jobs(portal_redis)
    finally:
        stop.set()
        watcher.join()

    moving = sorted({done for state, done in seen if state == "running" and 0 < done < 100_000})
    assert len(moving) >= 2, seen  # progress moved while it ran
    final = poll(api, job)
    assert final["state"] == "done", final
    assert final["progress"]["done"] == 100_000
    assert final["report"]["written"] == 100_000 and final["report"]["skipped"] == 0
    assert final["message"] == ("waters: 100,000 written, 0 skipped, 0 already present; "
                                "100,000 records")
    assert Record.objects.filter(dataset=waters).count() == 100_000
    assert not Path(PortalJob.objects.get(pk=job["id"]).path).exists()  # the upload is gone


def test_three_bad_lines_with_skip_end_done_naming_them(api, waters, portal_redis, start):
    lines = jsonl(1000).splitlines(keepends=True)
    for at in (10, 500, 1002):
        lines.insert(at - 1, b'{"id": "broken", "elements": ["O"]}\n')
    job = start(lambda: send_upload(api, b"".join(lines), query="?on_error=skip"))
    work_portal_jobs(portal_redis)
    done = poll(api, job)
    assert done["state"] == "done"
    assert done["message"] == "waters: 1,000 written, 3 skipped, 0 already present; 1,000 records"
    assert [(e["file"], e["line"], e["error"]) for e in done["report"]["errors"]] == [
        ("upload.jsonl", 10, "missing coordinates"), ("upload.jsonl", 500, "missing coordinates"),
        ("upload.jsonl", 1002, "missing coordinates")]
    assert done["report"]["summary"] == "1,000 written, 3 skipped, 0 already present"
    assert Record.objects.filter(dataset=waters).count() == 1000


def test_a_bad_line_with_abort_fails_the_job_and_writes_nothing(api, waters, portal_redis,
                                                                start):
    body = jsonl(20_000) + b'{"id": "bad", "elements": ["O"]}\n'
    job = start(lambda: send_upload(api, body))
    work_portal_jobs(portal_redis)
    failed = poll(api, job)
    assert failed["state"] == "failed"
    assert failed["message"] == ("upload.jsonl:20001: missing coordinates; nothing was written "
                                 "(on_error=abort)")
    assert failed["report"]["error"] == "upload.jsonl:20001: missing coordinates"
    assert (failed["report"]["written"], failed["report"]["record_count"]) == (0, 0)
    assert not Record.objects.filter(dataset=waters).exists()


def test_the_job_is_queued_only_once_its_row_is_committed(api, waters, portal_redis,
                                                          django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = send_upload(api, jsonl(3))
        assert response.status_code == 202
        assert portal_queue(portal_redis).count == 0  # still in the transaction
    assert len(callbacks) == 1
    assert portal_queue(portal_redis).job_ids == [rq_job_id(response.json()["job"]["id"])]


def test_the_rq_job_is_json_with_the_job_id_as_its_only_argument(api, waters, portal_redis,
                                                                 start):
    job = start(lambda: send_upload(api, jsonl(3)))
    data = portal_redis.hget(f"rq:job:{rq_job_id(job['id'])}", "data")
    assert json.loads(zlib.decompress(data)) == [
        "campaigns.portal_jobs_rq.portal_job_work", None, [job["id"]], {}]
    assert portal_queue(portal_redis).name == django_settings.PORTAL_JOBS_QUEUE == "htportal-portal"


# --- who sees a job -----------------------------------------------------------------------------

def test_another_user_cannot_poll_your_job_but_staff_can(api, client_for, bob, staff, waters,
                                                         portal_redis, start):
    job = start(lambda: send_upload(api, jsonl(3)))
    theirs = client_for(bob).get(job["url"])
    assert theirs.status_code == 404
    assert theirs.json() == {"error": "No PortalJob matches the given query."}
    assert client_for(staff).get(job["url"]).json()["job"]["owner"] == "alice"
    assert api.get("/api/jobs/999999/").status_code == 404


# --- launches -----------------------------------------------------------------------------------

def test_a_launch_answers_202_and_the_campaign_runs_when_the_job_is_worked(
        api, owned_campaign, portal_redis, settings, start):
    settings.FEED_WINDOW = 4
    campaign = owned_campaign(name="xtb_demo", records=10)
    job = start(lambda: api.post("/api/campaigns/xtb_demo/launch/"))
    assert (job["state"], job["kind"]) == ("queued", "campaign_launch")
    campaign.refresh_from_db()
    assert (campaign.state, campaign.tasks.count()) == ("draft", 0)
    work_portal_jobs(portal_redis)
    done = poll(api, job)
    assert done["state"] == "done", done
    assert (done["report"]["added"], done["report"]["queued"]) == (10, 4)
    assert done["progress"] == {"done": 10, "total": 10, "fraction": None}
    campaign.refresh_from_db()
    assert campaign.state == "running"
    assert task_states(campaign) == {"queued": 4, "pending": 6}
    assert len(queued_ids(portal_redis)) == 4  # the tasks' jobs are on the workers' queue


def test_a_launch_that_cannot_start_is_refused_at_once(api, owned_campaign, portal_redis):
    owned_campaign(name="xtb_demo", records=2, state="paused")
    response = api.post("/api/campaigns/xtb_demo/launch/")
    assert response.status_code == 400
    assert response.json()["error"].startswith("campaign xtb_demo is paused: only a campaign")
    assert not PortalJob.objects.exists()


# --- jobs that cannot end by themselves ---------------------------------------------------------

def test_a_running_job_without_heartbeat_is_failed_when_polled(api, alice, waters, portal_redis,
                                                               settings):
    settings.PORTAL_JOB_HEARTBEAT_S = 60
    job = PortalJob.objects.create(owner=alice, kind="records_import", state="running",
                                   arguments={"dataset_id": waters.pk, "on_error": "abort"},
                                   started_at=timezone.now() - timedelta(seconds=300))
    # A heartbeat 10 s ago (the worker is alive): still running.
    portal_redis.hset(progress_key(job.pk), mapping={"done": 5, "heartbeat": time.time() - 10})
    alive = api.get(f"/api/jobs/{job.pk}/").json()["job"]
    assert (alive["state"], alive["progress"]["done"]) == ("running", 5)
    # Its last heartbeat 120 s ago: the rqworker died; the poll fails the job.
    portal_redis.hset(progress_key(job.pk), "heartbeat", time.time() - 120)
    dead = api.get(f"/api/jobs/{job.pk}/").json()["job"]
    assert dead["state"] == "failed"
    assert dead["message"].startswith("no heartbeat from the portal's job worker for 12")
    assert dead["message"].endswith("(more than 60 s): it stopped while running the job")
    assert dead["report"]["written"] == 0
    assert dead["finished_at"] is not None
    # A worker that comes back later does not run it again.
    assert portal_job_run(job_id=job.pk) == "failed"


def test_a_job_rq_failed_is_failed_when_polled(api, alice, waters, portal_redis, start):
    job = start(lambda: send_upload(api, jsonl(3)))
    rq_job = Job.fetch(rq_job_id(job["id"]), connection=portal_redis, serializer=JSONSerializer)
    PortalJob.objects.filter(pk=job["id"]).update(state="running", started_at=timezone.now())
    rq_job.set_status(JobStatus.STOPPED)  # e.g. `rq` stopped it, or its horse was killed
    failed = poll(api, job)
    assert failed["state"] == "failed"
    assert failed["message"] == ("the portal's job worker ended the job without finishing it: "
                                 "rq status stopped")


def test_a_queued_job_lost_from_redis_is_failed_when_polled(api, alice, waters, portal_redis):
    job = PortalJob.objects.create(owner=alice, kind="records_import",
                                   arguments={"dataset_id": waters.pk, "on_error": "skip"})
    assert poll(api, {"url": f"/api/jobs/{job.pk}/"})["state"] == "queued"  # just created
    PortalJob.objects.filter(pk=job.pk).update(created_at=timezone.now() - timedelta(minutes=5))
    lost = poll(api, {"url": f"/api/jobs/{job.pk}/"})
    assert lost["state"] == "failed"
    assert lost["message"].startswith("the job was lost from Redis before a worker took it")


def test_a_job_that_cannot_be_queued_fails_saying_so(api, waters, settings, start):
    from tests.servers import free_port
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    job = start(lambda: send_upload(api, jsonl(3)))
    failed = poll(api, job)
    assert failed["state"] == "failed"
    assert failed["message"] == ("could not queue the job: Redis did not answer "
                                 "(ConnectionError); nothing was done, send the request again")
    assert not Path(PortalJob.objects.get(pk=job["id"]).path).parent.exists()


def test_a_job_runs_once_even_if_delivered_twice(api, waters, portal_redis, start):
    job = start(lambda: send_upload(api, jsonl(3)))
    work_portal_jobs(portal_redis)
    finished_at = PortalJob.objects.get(pk=job["id"]).finished_at
    assert portal_job_run(job_id=job["id"]) == "done"
    assert PortalJob.objects.get(pk=job["id"]).finished_at == finished_at


def test_progress_writes_are_bounded(monkeypatch):
    writes = []
    monkeypatch.setattr(portal_jobs, "_beat", lambda **fields: writes.append(fields))
    now = [0.0]
    progress = portal_jobs.JobProgress(job_id=1, clock=lambda: now[0])
    for done in range(1, 100_001):  # 100,000 records in 1 s
        now[0] = done / 100_000
        progress.update(done)
    assert [w["done"] for w in writes] == list(range(10_000, 100_001, 10_000))
    writes.clear()
    for step in range(1, 101):  # 100 records over 10 s
        now[0] = 1 + step / 10
        progress.update(100_000 + step)
    assert len(writes) == 5  # one every 2 s


# --- the portal's queue runs only the portal's jobs ---------------------------------------------

def test_a_foreign_function_on_the_portal_queue_is_not_run(portal_redis, tmp_path):
    marker = tmp_path / "ran"
    queue = portal_queue(portal_redis)
    foreign = queue.enqueue_call("os.mkdir", args=(str(marker),))
    work_portal_jobs(portal_redis)
    foreign = Job.fetch(foreign.id, connection=portal_redis, serializer=JSONSerializer)
    assert foreign.get_status() == JobStatus.FAILED
    assert "NotAPortalJob" in foreign.latest_result().exc_string
    assert not marker.exists()


def procfile_worker(redis_server, var_dir: Path) -> tuple[list[str], dict]:
    """(argv, environment) of the Procfile's portal-jobs process, on the real settings, this
    test's database and Redis."""
    [line] = [line for line in (ROOT / "Procfile").read_text().splitlines()
              if line.startswith("portal-jobs:")]
    argv = shlex.split(line.split(":", 1)[1])
    assert argv[1:5] == ["manage.py", "rqworker", "--serializer", "rq.serializers.JSONSerializer"]
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "htportal.settings",
           "REDIS_URL": redis_server.url, "HTPORTAL_VAR_DIR": str(var_dir),
           "HTPORTAL_UPLOAD_DIR": str(django_settings.UPLOAD_DIR),
           "DATABASE_URL": f"sqlite:///{django_settings.DATABASES['default']['NAME']}"}
    return [sys.executable, *argv[1:]], env


@pytest.mark.django_db(transaction=True)
def test_the_procfiles_rqworker_runs_a_job_with_the_json_serializer(api, waters, portal_redis,
                                                                   redis_server, tmp_path):
    """The Procfile's own command line (with --burst), as a process on the real settings."""
    argv, env = procfile_worker(redis_server, tmp_path)
    response = send_upload(api, jsonl(50))
    assert response.status_code == 202
    worker = subprocess.run([*argv, "--burst"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert worker.returncode == 0, worker.stderr[-2000:]
    job = poll(api, response.json()["job"])
    assert job["state"] == "done", (job, worker.stderr[-2000:])
    assert Dataset.objects.get(pk=waters.pk).record_count == 50


def children(pid: int) -> list[int]:
    return [int(child) for child in
            Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("killed", ["worker and horse", "horse"])
def test_a_job_whose_worker_is_killed_is_failed_when_polled(
        killed, api, waters, portal_redis, redis_server, tmp_path, settings):
    """kill -9 in the middle of an abort-mode import. The rqworker and its work horse (a fork
    in a process group of its own): the job stays running until its heartbeat is older than
    the timeout, then a poll fails it. The horse alone: the rqworker fails the rq job, and the
    next poll fails ours. Either way the import's transaction is rolled back."""
    argv, env = procfile_worker(redis_server, tmp_path)
    job = send_upload(api, jsonl(200_000)).json()["job"]
    worker = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while poll(api, job)["progress"]["done"] == 0:
            assert time.monotonic() < deadline and worker.poll() is None, "the job never ran"
            time.sleep(0.2)
        [horse] = children(worker.pid)
        if killed == "worker and horse":
            worker.kill()
            worker.wait(30)
        os.kill(horse, signal.SIGKILL)
        if killed == "worker and horse":
            running = poll(api, job)
            assert running["state"] == "running" and 0 < running["progress"]["done"] < 200_000
            settings.PORTAL_JOB_HEARTBEAT_S = 2
            time.sleep(2.5)
        else:
            while portal_redis.exists(f"rq:job:{rq_job_id(job['id'])}") and Job.fetch(
                    rq_job_id(job["id"]), connection=portal_redis,
                    serializer=JSONSerializer).get_status() != JobStatus.FAILED:
                assert time.monotonic() < deadline, "the rqworker never noticed"
                time.sleep(0.2)
        dead = poll(api, job)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(30)
    assert dead["state"] == "failed", dead
    expected = ("no heartbeat from the portal's job worker for " if killed != "horse" else
                "the portal's job worker ended the job without finishing it: Work-horse")
    assert dead["message"].startswith(expected), dead["message"]
    assert dead["report"]["summary"] == ("nothing was written (on_error=abort: one transaction, "
                                         "rolled back)")
    assert Record.objects.filter(dataset=waters).count() == 0
