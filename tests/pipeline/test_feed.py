"""Feeding: a bounded window per worker queue, topped up from the ledger, by priority; jobs that
a real worker runs, with the reply on the results list."""
from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from django.core.management import call_command
from rq import Worker
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from campaigns.attempts import attempt_id
from campaigns.models import Record, Task
from campaigns.pipeline_keys import RESULTS_KEY, campaign_spec_key, worker_rq_queues
from campaigns.services.feeding import feed_window, live_workers_count, queues_feed
from campaigns.services.lifecycle import campaign_launch, campaign_pause
from campaigns.services.submission import campaign_submit
from tests.pipeline.conftest import WATER, first_job_ids, queued_ids, rq_queue, task_states

ROOT = Path(__file__).resolve().parents[2]


def test_it_fills_exactly_the_window_oldest_tasks_first(make_campaign, redis_conn):
    campaign = make_campaign(records=30)
    campaign_submit(campaign=campaign)
    report = queues_feed(connection=redis_conn, window=10)
    assert (report.queued, report.by_queue) == (10, {"pipe:normal": 10})
    assert queued_ids(redis_conn) == first_job_ids(campaign, 10)
    assert task_states(campaign) == {"queued": 10, "pending": 20}
    assert campaign.tasks.filter(state="queued", queued_at__isnull=True).count() == 0
    assert queues_feed(connection=redis_conn, window=10).queued == 0
    assert len(queued_ids(redis_conn)) == 10


def test_it_tops_up_what_workers_took(make_campaign, redis_conn):
    campaign = make_campaign(records=30)
    campaign_submit(campaign=campaign)
    queues_feed(connection=redis_conn, window=10)
    for _ in range(4):
        redis_conn.lpop(rq_queue(redis_conn).key)
    assert queues_feed(connection=redis_conn, window=10).queued == 4
    assert queued_ids(redis_conn)[-4:] == first_job_ids(campaign, 14)[-4:]
    assert task_states(campaign) == {"queued": 14, "pending": 16}


def test_a_job_is_an_rq_json_job_with_record_spec_key_and_reply_to(make_campaign, redis_conn):
    campaign = make_campaign(records=1, job_timeout=321, projection=["tag"])
    campaign_launch(campaign=campaign, connection=redis_conn)
    job = Job.fetch(campaign.tasks.get().job_id, connection=redis_conn, serializer=JSONSerializer)
    assert (job.func_name, job.args, job.timeout, job.result_ttl, job.origin) == (
        "noop", [], 321, 600, "pipe:normal")
    assert job.failure_ttl >= 24 * 3600
    # The projection cuts the input to its fields plus what builds a molecule; "note" stays home.
    assert job.kwargs == {"record": {"id": "mol-000000", "input": {**WATER, "tag": 0}},
                          "spec_key": campaign_spec_key(campaign=campaign),
                          "reply_to": RESULTS_KEY,
                          "attempt": attempt_id(job_id=job.id, delivery=1)}
    assert campaign.tasks.get().delivery == 1
    assert json.loads(redis_conn.get(campaign_spec_key(campaign=campaign)))["function"] == "noop"


def test_priority_then_age_decides_who_gets_the_window(make_campaign, redis_conn):
    old_low = make_campaign(name="old_low", records=5, priority="low")
    normal_a = make_campaign(name="normal_a", records=5)
    normal_b = make_campaign(name="normal_b", records=5)
    new_high = make_campaign(name="new_high", records=5, priority="high")
    for campaign in (old_low, normal_a, normal_b, new_high):
        campaign_submit(campaign=campaign)
    report = queues_feed(connection=redis_conn, window=8)
    assert report.by_queue == {"pipe:high": 5, "pipe:normal": 3}
    assert queued_ids(redis_conn, "pipe:normal") == first_job_ids(normal_a, 3)
    assert (task_states(normal_b), task_states(old_low)) == ({"pending": 5}, {"pending": 5})
    # The window counts the three priorities together: nothing is free now.
    assert queues_feed(connection=redis_conn, window=8).queued == 0


def test_a_paused_campaign_is_not_fed(make_campaign, redis_conn):
    paused = make_campaign(name="paused", records=5)
    other = make_campaign(name="other", records=5)
    campaign_submit(campaign=paused)
    campaign_submit(campaign=other)
    campaign_pause(campaign=paused)
    assert queues_feed(connection=redis_conn, window=100).queued == 5
    assert sorted(queued_ids(redis_conn)) == sorted(other.tasks.values_list("job_id", flat=True))
    assert task_states(paused) == {"pending": 5}


def test_a_missing_record_fails_its_task_and_is_never_enqueued(make_campaign, redis_conn):
    campaign = make_campaign(records=3)
    campaign_submit(campaign=campaign)
    Record.objects.filter(record_id="mol-000001").delete()
    report = queues_feed(connection=redis_conn, window=10)
    assert (report.queued, report.missing) == (2, 1)
    task = campaign.tasks.get(record_id="mol-000001")
    assert (task.state, task.error_class, task.error_message) == (
        "failed", "RecordMissing", "record mol-000001 is no longer in dataset noop_demo-records")
    assert task.job_id not in queued_ids(redis_conn)
    assert not redis_conn.exists(Job.key_for(task.job_id))
    assert list(campaign.task_minutes.values_list("done", "failed")) == [(0, 1)]


def test_a_task_fed_twice_is_queued_once(make_campaign, redis_conn):
    """A feeder stopped between enqueueing and marking leaves pending tasks with live jobs."""
    campaign = make_campaign(records=4)
    campaign_submit(campaign=campaign)
    queues_feed(connection=redis_conn, window=10)
    campaign.tasks.update(state="pending", queued_at=None)
    report = queues_feed(connection=redis_conn, window=10)
    assert (report.queued, report.already_in_redis) == (0, 4)
    assert sorted(queued_ids(redis_conn)) == sorted(campaign.tasks.values_list("job_id", flat=True))
    assert task_states(campaign) == {"queued": 4}


def test_a_retried_task_gets_a_fresh_job_under_the_same_id(make_campaign, redis_conn):
    campaign = make_campaign(records=1)
    campaign_submit(campaign=campaign)
    queues_feed(connection=redis_conn, window=10)
    task = campaign.tasks.get()
    # As a failed attempt leaves it: off the queue, status failed, in the failed registry.
    queue = rq_queue(redis_conn)
    redis_conn.lpop(queue.key)
    redis_conn.hset(Job.key_for(task.job_id), mapping={"status": "failed", "exc_info": "boom"})
    queue.failed_job_registry.add(Job.fetch(task.job_id, connection=redis_conn,
                                            serializer=JSONSerializer), ttl=3600)
    Task.objects.filter(pk=task.pk).update(state="pending")
    assert queues_feed(connection=redis_conn, window=10).queued == 1
    job = Job.fetch(task.job_id, connection=redis_conn, serializer=JSONSerializer)
    assert (job.get_status(), queued_ids(redis_conn)) == (JobStatus.QUEUED, [task.job_id])
    assert not redis_conn.hexists(Job.key_for(task.job_id), "exc_info")
    assert task.job_id not in queue.failed_job_registry.get_job_ids()


def test_a_flushed_redis_gets_the_spec_again_and_is_refilled(make_campaign, redis_conn):
    campaign = make_campaign(records=5)
    campaign_launch(campaign=campaign, connection=redis_conn)
    spec = redis_conn.get(campaign_spec_key(campaign=campaign))
    redis_conn.flushall()
    # The collector's reconcile puts queued tasks whose job vanished back to pending.
    campaign.tasks.update(state="pending")
    report = queues_feed(connection=redis_conn, window=10)
    assert (report.specs_published, report.queued) == (1, 5)
    assert redis_conn.get(campaign_spec_key(campaign=campaign)) == spec
    assert queues_feed(connection=redis_conn, window=10).specs_published == 0


def test_the_window_grows_with_the_live_workers(make_campaign, redis_conn, settings):
    settings.FEED_WINDOW, settings.FEED_MIN_WINDOW = 0, 5
    assert feed_window(connection=redis_conn, queue="pipe") == 5
    workers = [Worker(["pipe:high", "pipe:normal", "pipe:low"], connection=redis_conn,
                      name=f"w{number}") for number in range(3)]
    for worker in workers:
        worker.register_birth()
    assert live_workers_count(connection=redis_conn, queue="pipe") == 3
    assert feed_window(connection=redis_conn, queue="pipe") == 12
    redis_conn.delete(workers[0].key)  # pre-empted: its key expired, rq's sets still list it
    assert feed_window(connection=redis_conn, queue="pipe") == 8
    settings.FEED_WINDOW = 3
    assert feed_window(connection=redis_conn, queue="pipe") == 3


def test_feed_once_prints_what_it_queued(make_campaign, portal_redis, settings):
    settings.FEED_WINDOW = 2
    campaign = make_campaign(records=5)
    campaign_submit(campaign=campaign)
    out = io.StringIO()
    call_command("feed", "--once", stdout=out)
    assert out.getvalue().strip() == "queued 2 jobs (pipe:normal 2); 1 missing specs published"
    out = io.StringIO()
    call_command("feed", "--once", stdout=out)
    assert out.getvalue().strip() == "queued 0 jobs"


# Committed rows: the loop closes its database connection between rounds, as it must in production.
@pytest.mark.django_db(transaction=True)
def test_the_feed_loop_feeds_and_stops_on_sigterm(make_campaign, portal_redis, settings,
                                                  caplog):
    settings.FEED_WINDOW = 3
    campaign = make_campaign(records=5)
    campaign_submit(campaign=campaign)
    out = io.StringIO()
    killer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGTERM))
    killer.start()
    try:
        with caplog.at_level(logging.INFO):
            call_command("feed", "--interval", "0.1", stdout=out)
    finally:
        killer.cancel()
    assert out.getvalue().strip() == "Done."
    assert any(record.getMessage().endswith(": SIGTERM, finishing the round")
               for record in caplog.records)
    assert len(queued_ids(portal_redis)) == 3


@pytest.mark.slow
def test_a_real_worker_runs_the_fed_jobs_and_replies_on_the_results_list(
        make_campaign, redis_conn, redis_server, tmp_path):
    campaign = make_campaign(records=3)
    report = campaign_launch(campaign=campaign, connection=redis_conn)
    assert report.queued == 3
    log = tmp_path / "worker.log"
    with open(log, "wb") as stream:
        worker = subprocess.run(
            [sys.executable, "-m", "workers.runtime.worker", "--redis-url", redis_server.url,
             "--max-tasks", "3", "--max-idle", "20", *worker_rq_queues(queue="pipe")],
            cwd=ROOT, stdout=stream, stderr=subprocess.STDOUT, timeout=60)
    assert worker.returncode == 0, log.read_text()
    replies = [json.loads(raw) for raw in redis_conn.lrange(RESULTS_KEY, 0, -1)]
    by_job = {reply["job_id"]: reply["result"] for reply in replies}
    tasks = dict(campaign.tasks.values_list("job_id", "record_id"))
    assert sorted(by_job) == sorted(tasks)
    for job_id, result in by_job.items():
        assert (result["record_id"], result["function"], result["status"]) == (
            tasks[job_id], "noop", "ok")
        assert result["arg_sets"]["a"]["status"] == "ok"
    assert queued_ids(redis_conn) == []


def test_a_fed_job_is_the_hash_rq_enqueue_many_writes(make_campaign, redis_conn):
    """The feeder writes job hashes itself, for speed; they must stay rq's, field for field."""
    campaign = make_campaign(records=1, job_timeout=77)
    campaign_launch(campaign=campaign, connection=redis_conn)
    task = campaign.tasks.get()
    fed = redis_conn.hgetall(Job.key_for(task.job_id))
    job = Job.fetch(task.job_id, connection=redis_conn, serializer=JSONSerializer)
    queue = rq_queue(redis_conn, "pipe:other")
    queue.enqueue_many([queue.prepare_data(
        "noop", kwargs=job.kwargs, timeout=77, result_ttl=600, failure_ttl=job.failure_ttl,
        description=job.description, job_id="by-rq")])
    by_rq = redis_conn.hgetall(Job.key_for("by-rq"))
    timestamps = {b"created_at", b"enqueued_at"}
    assert {k: v for k, v in fed.items() if k not in timestamps} == {
        k: v for k, v in by_rq.items() if k not in timestamps} | {b"origin": b"pipe:normal"}
    assert set(fed) == set(by_rq)
    assert redis_conn.smembers("rq:queues") == {b"rq:queue:pipe:normal", b"rq:queue:pipe:other"}


def test_max_jobs_bounds_one_feed_and_says_when_it_stopped_there(make_campaign, redis_conn):
    campaign = make_campaign(records=12)
    campaign_submit(campaign=campaign)

    first = queues_feed(connection=redis_conn, window=100, max_jobs=5)
    assert (first.queued, first.spent) == (5, True)
    second = queues_feed(connection=redis_conn, window=100, max_jobs=5)
    third = queues_feed(connection=redis_conn, window=100, max_jobs=5)
    assert (second.queued, third.queued, third.spent) == (5, 2, False)
    assert len(queued_ids(redis_conn)) == 12


def test_the_feeders_attempt_ids_are_attempt_id_s():
    from campaigns.attempts import attempt_id_maker
    make = attempt_id_maker()
    assert [make("c1-v1-abc", n) for n in (1, 2, 30)] == [
        attempt_id(job_id="c1-v1-abc", delivery=n) for n in (1, 2, 30)]


@pytest.mark.parametrize("record_id, input_text", [
    ("mol-000001", json.dumps({**WATER, "tag": 3})),
    ('odd "id" \\ é', json.dumps({"elements": ["O"], "note": "ünïcode \"quoted\""})),
])
def test_job_data_built_around_the_stored_text_is_rq_job_data_byte_for_byte(record_id,
                                                                            input_text):
    from campaigns.services.feeding import rq_job_data, rq_job_data_text
    attempt = attempt_id(job_id="j", delivery=2)
    kwargs = {"record": {"id": record_id, "input": json.loads(input_text)},
              "spec_key": "htportal:spec:1:2", "reply_to": RESULTS_KEY, "attempt": attempt}
    made = rq_job_data_text(function="noop", spec_key="htportal:spec:1:2")
    assert made(record_id, input_text, attempt) == rq_job_data(function="noop", kwargs=kwargs)
