"""Reconcile's writes are conditional on what it read: a result the collector wrote, a cancel,
or a new delivery meanwhile is never undone. And a task lost with Redis is put back a bounded
number of times."""
from __future__ import annotations

import pytest
from rq.job import Job

from campaigns import rq_layout
from campaigns.models import Campaign
from campaigns.services import reconciling
from campaigns.services.collecting import results_collect
from campaigns.services.feeding import queues_feed
from campaigns.services.lifecycle import campaign_cancel
from campaigns.services.reconciling import tasks_reconcile
from tests.pipeline.collect_helpers import (campaign_submitted, ok, push, refresh, states,
                                            taken_by)

OLD = "2026-01-01T00:00:00.000000Z"


@pytest.fixture
def fed(make_campaign, redis_conn):
    def make(**kwargs) -> Campaign:
        campaign = campaign_submitted(make_campaign, **kwargs)
        queues_feed(connection=redis_conn, window=100)
        return campaign
    return make


def between_read_and_write(monkeypatch, event) -> None:
    """Run `event` right after reconcile has read the jobs, before it writes the ledger."""
    read = rq_layout.job_fields

    def reading(*args, **kwargs):
        rows = read(*args, **kwargs)
        event()
        return rows
    monkeypatch.setattr(reconciling.rq_layout, "job_fields", reading)


def test_a_result_collected_meanwhile_is_not_overwritten(fed, redis_conn, monkeypatch):
    campaign = fed(records=2, max_attempts=1)
    late, other = campaign.tasks.order_by("pk")
    for task in (late, other):  # both ended long ago in rq, no result seen yet
        redis_conn.hset(Job.key_for(task.job_id), mapping={"status": "finished",
                                                           "ended_at": OLD})
    taken_by(redis_conn, (late, other))
    envelope = {**ok(late), "attempt": reconciling.rq_layout.job_attempts(
        redis_conn, [late.job_id])[0]}
    between_read_and_write(monkeypatch, lambda: (push(redis_conn, envelope),
                                                 results_collect(connection=redis_conn)))
    report = tasks_reconcile(connection=redis_conn, grace_s=0)
    late, other = refresh(late), refresh(other)
    assert (late.state, late.attempts, late.error_class) == ("done", 1, "")
    assert (other.state, other.error_class) == ("failed", "JobFailedWithoutResult")
    assert report.failed == 1
    # One done and one failed counted, once each; the campaign ends done with a failure.
    minutes = list(campaign.task_minutes.values_list("done", "failed"))
    assert (sum(m[0] for m in minutes), sum(m[1] for m in minutes)) == (1, 1)
    assert Campaign.objects.get(pk=campaign.pk).state == "done"


def test_a_cancel_meanwhile_is_not_undone(fed, redis_conn, monkeypatch):
    campaign = fed(records=3)
    redis_conn.delete(*(Job.key_for(task.job_id) for task in campaign.tasks.all()))
    between_read_and_write(monkeypatch, lambda: campaign_cancel(
        campaign=Campaign.objects.get(pk=campaign.pk), connection=redis_conn))
    report = tasks_reconcile(connection=redis_conn)
    assert report.lost == 0
    assert states(campaign) == {"cancelled": 3}
    assert set(campaign.tasks.values_list("lost", flat=True)) == {0}


def test_a_new_delivery_meanwhile_is_left_alone(fed, redis_conn, monkeypatch):
    campaign = fed(records=1)
    task = campaign.tasks.get()
    redis_conn.delete(Job.key_for(task.job_id))

    def refed():  # the job came back to pending and a feeder queued delivery 2
        campaign.tasks.update(state="pending")
        queues_feed(connection=redis_conn, window=100)
    between_read_and_write(monkeypatch, refed)
    assert tasks_reconcile(connection=redis_conn).lost == 0
    task = refresh(task)
    assert (task.state, task.delivery, task.lost) == ("queued", 2, 0)


def test_an_old_delivery_s_job_sends_the_task_back_without_an_attempt(fed, redis_conn):
    """A feeder that died between the ledger (delivery 2) and Redis left delivery 1's ended
    job: not this delivery's failure."""
    campaign = fed(records=1)
    task = campaign.tasks.get()
    redis_conn.hset(Job.key_for(task.job_id), mapping={"status": "failed", "ended_at": OLD})
    campaign.tasks.update(delivery=2)
    report = tasks_reconcile(connection=redis_conn, grace_s=0)
    task = refresh(task)
    assert (report.stale, task.state, task.attempts, task.error_class) == (1, "pending", 0, "")


def test_a_task_lost_with_redis_too_often_fails_with_lost_in_redis(fed, redis_conn):
    campaign = fed(records=1)
    task = campaign.tasks.get()
    for loss in (1, 2):
        redis_conn.flushdb()
        assert tasks_reconcile(connection=redis_conn, lost_limit=2).lost == 1
        assert (refresh(task).state, refresh(task).lost, refresh(task).attempts) == (
            "pending", loss, 0)
        assert queues_feed(connection=redis_conn, window=100).queued == 1
    redis_conn.flushdb()
    report = tasks_reconcile(connection=redis_conn, lost_limit=2)
    task = refresh(task)
    assert (report.lost_failed, task.state, task.lost, task.error_class) == (
        1, "failed", 3, "LostInRedis")
    assert task.error_message == ("its job vanished from Redis 3 times while out (a restart "
                                  "that lost everything?); the limit is 2")
    assert Campaign.objects.get(pk=campaign.pk).state == "failed"
    assert report.line() == "reconciled: 1 lost with Redis too often (failed)"


def test_a_running_task_of_a_cancelled_campaign_whose_worker_died_is_cancelled(fed, redis_conn):
    campaign = fed(records=1)
    task = campaign.tasks.get()
    redis_conn.hset(Job.key_for(task.job_id), mapping={"status": "started",
                                                       "worker_name": "w-gone"})
    redis_conn.zadd(rq_layout.started_registry_key("pipe:normal"), {f"{task.job_id}:e1": 1})
    campaign.tasks.update(state="running")
    Campaign.objects.filter(pk=campaign.pk).update(state="cancelled")
    tasks_reconcile(connection=redis_conn)
    task = refresh(task)
    assert (task.state, task.attempts, task.error_class) == ("cancelled", 1, "WorkerLost")
    assert redis_conn.hget(Job.key_for(task.job_id), "status") == b"failed"
    assert redis_conn.zcard(rq_layout.started_registry_key("pipe:normal")) == 0


def test_a_job_rq_itself_failed_as_abandoned_is_lost_with_its_worker_at_once(fed, redis_conn):
    """A worker's own maintenance runs rq's StartedJobRegistry.cleanup, which fails a job whose
    heartbeat deadline passed: its worker is long gone, so no grace is waited."""
    from rq.executions import Execution
    from rq.registry import StartedJobRegistry
    from rq.serializers import JSONSerializer

    campaign = fed(records=1)
    task = campaign.tasks.get()
    job = Job.fetch(task.job_id, connection=redis_conn, serializer=JSONSerializer)
    with redis_conn.pipeline() as pipe:
        Execution.create(job, ttl=90, pipeline=pipe)
        job.set_status("started", pipeline=pipe)
        pipe.execute()
    redis_conn.zadd(rq_layout.started_registry_key("pipe:normal"),
                    {member: 1 for member in redis_conn.zrange(
                        rq_layout.started_registry_key("pipe:normal"), 0, -1)})
    StartedJobRegistry("pipe:normal", connection=redis_conn,
                       serializer=JSONSerializer).cleanup()
    assert redis_conn.hget(Job.key_for(task.job_id), "status") == b"failed"
    report = tasks_reconcile(connection=redis_conn)  # the default grace of 60 s
    task = refresh(task)
    assert (report.abandoned, task.state, task.attempts, task.error_class) == (
        1, "pending", 1, "WorkerLost")
    assert task.error_message == ("rq failed the job as abandoned (its worker stopped "
                                  "heartbeating) and no result came")
