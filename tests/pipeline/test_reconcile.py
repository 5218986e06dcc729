"""Reconciling: jobs gone from Redis, workers that stopped heartbeating, running tasks."""
from __future__ import annotations

import signal

import pytest
from rq.job import Job
from rq.registry import StartedJobRegistry
from rq.serializers import JSONSerializer

from campaigns.models import Campaign
from campaigns.services.feeding import queues_feed
from campaigns.services.reconciling import tasks_reconcile
from tests.pipeline.collect_helpers import (Processes, age_started_registries, campaign_submitted,
                                            refresh, states, wait_for)


@pytest.fixture
def fed(make_campaign, redis_conn):
    """fed(records, **fields) -> a submitted campaign whose tasks are all queued in Redis."""
    def make(**kwargs) -> Campaign:
        campaign = campaign_submitted(make_campaign, **kwargs)
        queues_feed(connection=redis_conn, window=100)
        return campaign
    return make


@pytest.fixture
def processes(redis_server, tmp_path):
    started = Processes(redis_url=redis_server.url, tmp_path=tmp_path)
    yield started
    started.stop_all()


def started_job_ids(redis_conn, queue: str = "pipe:normal") -> list:
    return StartedJobRegistry(name=queue, connection=redis_conn,
                              serializer=JSONSerializer).get_job_ids(cleanup=False)


def test_tasks_whose_jobs_left_redis_are_pending_again_without_an_attempt(fed, redis_conn):
    campaign = fed(records=3)
    assert states(campaign) == {"queued": 3}
    redis_conn.flushdb()  # as a Redis that restarted empty
    report = tasks_reconcile(connection=redis_conn)
    assert report.lost == 3
    assert states(campaign) == {"pending": 3}
    assert set(campaign.tasks.values_list("attempts", flat=True)) == {0}
    assert queues_feed(connection=redis_conn, window=100).queued == 3


def test_jobs_still_in_redis_are_left_alone(fed, redis_conn):
    campaign = fed(records=3)
    report = tasks_reconcile(connection=redis_conn)
    assert (report.lost, report.changed) == (0, False)
    assert states(campaign) == {"queued": 3}


def test_missing_jobs_are_not_looked_for_when_told_not_to(fed, redis_conn):
    campaign = fed(records=2)
    redis_conn.flushdb()
    assert tasks_reconcile(connection=redis_conn, check_missing=False).lost == 0
    assert states(campaign) == {"queued": 2}


def test_a_started_job_marks_its_task_running_with_the_worker_name(fed, redis_conn, processes):
    campaign = fed(records=1, seconds=30)
    worker = processes.worker("pipe:normal", name="w-run")
    wait_for(lambda: started_job_ids(redis_conn), timeout=20, what="the job to start",
             processes=(worker,))
    report = tasks_reconcile(connection=redis_conn)
    task = campaign.tasks.get()
    assert (report.running, task.state, task.worker) == (1, "running", "w-run")

    worker.signal(signal.SIGTERM)  # the worker gives the job back to its queue
    assert worker.wait(20) == 0
    report = tasks_reconcile(connection=redis_conn)
    task.refresh_from_db()
    assert (report.requeued, task.state, task.worker, task.attempts) == (1, "queued", "", 0)


def test_a_job_whose_worker_died_is_retried_with_worker_lost(fed, redis_conn, processes):
    campaign = fed(records=1, seconds=30)
    worker = processes.worker("pipe:normal", name="w-lost")
    wait_for(lambda: started_job_ids(redis_conn), timeout=20, what="the job to start",
             processes=(worker,))
    tasks_reconcile(connection=redis_conn)
    worker.signal(signal.SIGKILL)
    worker.wait()
    # Still "started" until its heartbeat deadline: nothing changes yet.
    assert tasks_reconcile(connection=redis_conn).abandoned == 0
    assert age_started_registries(redis_conn) == 1
    report = tasks_reconcile(connection=redis_conn)
    task = campaign.tasks.get()
    assert (report.abandoned, task.state, task.attempts, task.error_class) == (
        1, "pending", 1, "WorkerLost")
    assert task.error_message == ("worker w-lost stopped heartbeating (killed or pre-empted) "
                                  "while running the task")
    # Marked failed in Redis and out of the started registry, so the feeder queues it afresh.
    assert redis_conn.hget(Job.key_for(task.job_id), "status") == b"failed"
    assert started_job_ids(redis_conn) == []
    assert queues_feed(connection=redis_conn, window=100).queued == 1
    assert refresh(task).delivery == 2


def test_a_lost_worker_on_the_last_attempt_fails_the_task(fed, redis_conn, processes):
    campaign = fed(records=1, seconds=30, max_attempts=1)
    worker = processes.worker("pipe:normal", name="w-last")
    wait_for(lambda: started_job_ids(redis_conn), timeout=20, what="the job to start",
             processes=(worker,))
    worker.signal(signal.SIGKILL)
    worker.wait()
    age_started_registries(redis_conn)
    report = tasks_reconcile(connection=redis_conn)
    assert (report.failed, states(campaign)) == (1, {"failed": 1})
    assert list(campaign.task_minutes.values_list("done", "failed")) == [(0, 1)]
    # Nothing succeeded: the campaign ends failed, and rq's copy of the job is gone.
    assert Campaign.objects.get(pk=campaign.pk).state == "failed"
    assert report.line() == "reconciled: 1 failed for good"
    assert not redis_conn.exists(Job.key_for(campaign.tasks.get().job_id))
