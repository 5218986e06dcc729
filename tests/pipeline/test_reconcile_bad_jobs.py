"""Malformed rq job hashes: reconcile reads only the fields it needs, and a bad one becomes that
task's outcome, never an exception out of reconcile."""
from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.utils import timezone
from rq.job import Job

from campaigns import rq_layout
from campaigns.models import Campaign
from campaigns.services.feeding import queues_feed
from campaigns.services.reconciling import tasks_reconcile
from tests.pipeline.collect_helpers import campaign_submitted, refresh, states


@pytest.fixture
def fed(make_campaign, redis_conn):
    def make(**kwargs) -> Campaign:
        campaign = campaign_submitted(make_campaign, **kwargs)
        queues_feed(connection=redis_conn, window=100)
        return campaign
    return make


def start(redis_conn, job_id: str, *, worker: str, deadline: float) -> None:
    """What a worker that took the job writes: started status, its name, a registry entry."""
    redis_conn.hset(Job.key_for(job_id), mapping={"status": "started", "worker_name": worker})
    redis_conn.zadd(rq_layout.started_registry_key("pipe:normal"), {f"{job_id}:e1": deadline})


def test_a_corrupted_created_at_does_not_stop_reconcile(fed, redis_conn):
    campaign = fed(records=2)
    first, second = campaign.tasks.order_by("pk")
    start(redis_conn, first.job_id, worker="w-1", deadline=time.time() + 300)
    # rq's Job.fetch (the old reconcile's fetch_many) raised on this: a ValueError.
    redis_conn.hset(Job.key_for(first.job_id), "created_at", "not a time")
    redis_conn.hset(Job.key_for(second.job_id), "created_at", b"\xff\xfe")
    with pytest.raises(ValueError):
        Job.fetch(first.job_id, connection=redis_conn)
    report = tasks_reconcile(connection=redis_conn)
    assert report.running == 1
    assert (refresh(first).state, refresh(first).worker) == ("running", "w-1")
    assert refresh(second).state == "queued"


def test_an_unknown_status_fails_that_task_alone_with_bad_job(fed, redis_conn):
    campaign = fed(records=3, max_attempts=2)
    bad, binary, good = campaign.tasks.order_by("pk")
    redis_conn.hset(Job.key_for(bad.job_id), "status", "exploded")
    redis_conn.hset(Job.key_for(binary.job_id), "status", b"\xff")
    report = tasks_reconcile(connection=redis_conn)
    bad, binary = refresh(bad), refresh(binary)
    assert (bad.state, bad.attempts, bad.error_class) == ("pending", 1, "BadJob")
    assert bad.error_message.startswith(
        f"job rq:job:{bad.job_id} has status 'exploded', not one rq writes (canceled, created")
    assert (binary.state, binary.error_class) == ("pending", "BadJob")
    assert refresh(good).state == "queued"
    assert report.ended == 2
    # The bad hashes are gone, and the feeder queues fresh jobs of the next delivery.
    assert not redis_conn.exists(Job.key_for(bad.job_id))
    assert queues_feed(connection=redis_conn, window=100).queued == 2
    assert redis_conn.hget(Job.key_for(bad.job_id), "status") == b"queued"
    assert (refresh(bad).delivery, refresh(binary).delivery) == (2, 2)


def test_an_ended_job_whose_data_is_garbage_fails_with_bad_job(fed, redis_conn):
    campaign = fed(records=1, max_attempts=1)
    task = campaign.tasks.get()
    redis_conn.hset(Job.key_for(task.job_id), mapping={
        "status": "failed", "ended_at": "2026-01-01T00:00:00.000000Z", "data": b"\x00junk"})
    report = tasks_reconcile(connection=redis_conn, grace_s=0)
    task = refresh(task)
    assert (task.state, task.error_class, report.failed) == ("failed", "BadJob", 1)
    assert task.error_message == (f"job rq:job:{task.job_id}: its data is not rq's zlib'd JSON "
                                  "(Error -3 while decompressing data: incorrect header check)")
    assert Campaign.objects.get(pk=campaign.pk).state == "failed"
    assert not redis_conn.exists(Job.key_for(task.job_id))


def test_a_started_job_with_no_times_and_no_registry_entry_fails_with_bad_job(fed, redis_conn):
    campaign = fed(records=1)
    task = campaign.tasks.get()
    redis_conn.hset(Job.key_for(task.job_id), mapping={"status": "started",
                                                       "last_heartbeat": "yesterday"})
    # A worker writes the status a moment before the times: not bad yet.
    assert tasks_reconcile(connection=redis_conn).changed is False
    campaign.tasks.update(queued_at=timezone.now() - timedelta(seconds=300 + 60 + 61))
    tasks_reconcile(connection=redis_conn)
    task = refresh(task)
    assert (task.state, task.attempts, task.error_class) == ("pending", 1, "BadJob")
    assert states(campaign) == {"pending": 1}


def test_a_started_job_whose_heartbeat_is_long_past_without_a_registry_entry_is_lost(
        fed, redis_conn):
    campaign = fed(records=1)
    task = campaign.tasks.get()
    redis_conn.hset(Job.key_for(task.job_id), mapping={
        "status": "started", "worker_name": "w-old", "timeout": "300",
        "last_heartbeat": "2026-01-01T00:00:00.000000Z"})
    report = tasks_reconcile(connection=redis_conn)
    task = refresh(task)
    assert (report.abandoned, task.state, task.error_class) == (1, "pending", "WorkerLost")
    # Not in flight any more: the feeder queues the next delivery instead of waiting on it.
    assert redis_conn.hget(Job.key_for(task.job_id), "status") == b"failed"
    assert queues_feed(connection=redis_conn, window=100).queued == 1
    assert refresh(task).delivery == 2


@pytest.mark.django_db(transaction=True)
def test_the_collector_survives_malformed_job_hashes_and_finishes_the_campaign(
        make_campaign, redis_server, redis_conn, tmp_path, monkeypatch, settings):
    from tests.pipeline.collect_helpers import Processes, wait_for

    monkeypatch.setenv("HTPORTAL_SECRET_KEY", settings.SECRET_KEY)  # we feed, it checks
    campaign = campaign_submitted(make_campaign, records=3, max_attempts=2)
    queues_feed(connection=redis_conn, window=100)
    corrupted, bad = list(campaign.tasks.order_by("pk"))[:2]
    redis_conn.hset(Job.key_for(corrupted.job_id), "created_at", "not a time")
    start(redis_conn, corrupted.job_id, worker="w-ghost", deadline=time.time() + 300)
    redis_conn.hset(Job.key_for(bad.job_id), "status", "exploded")
    processes = Processes(redis_url=redis_server.url, tmp_path=tmp_path)
    try:
        collector = processes.collector()
        wait_for(lambda: refresh(bad).error_class == "BadJob", timeout=30,
                 what="the bad job's task to fail its attempt", processes=(collector,))
        wait_for(lambda: refresh(corrupted).state == "running", timeout=30,
                 what="the corrupted job's task to be seen running", processes=(collector,))
        assert collector.popen.poll() is None
        # rq's own worker dies on that created_at (it parses the whole hash): the corrupted
        # job goes, reconcile puts its task back, and a real worker runs everything.
        redis_conn.delete(rq_layout.started_registry_key("pipe:normal"),
                          Job.key_for(corrupted.job_id))
        wait_for(lambda: refresh(corrupted).lost == 1, timeout=30,
                 what="the vanished job's task to be put back", processes=(collector,))
        worker = processes.worker("pipe:normal", name="w-real")
        wait_for(lambda: Campaign.objects.get(pk=campaign.pk).state == "done", timeout=60,
                 what="the campaign to finish", processes=(collector, worker))
        assert states(campaign) == {"done": 3}
        assert (refresh(bad).attempts, refresh(bad).error_class) == (2, "BadJob")
        assert collector.popen.poll() is None and "Traceback" not in collector.log()
    finally:
        processes.stop_all()


def test_a_hash_without_a_status_is_a_vanished_job_not_a_bad_one(fed, redis_conn):
    """After a Redis restart a worker's heartbeat HSETs last_heartbeat into the job key it no
    longer finds (and deletes it a moment later): no attempt must count for that."""
    campaign = fed(records=1)
    task = campaign.tasks.get()
    redis_conn.delete(Job.key_for(task.job_id))
    redis_conn.hset(Job.key_for(task.job_id), "last_heartbeat", "2026-12-01T10:00:00.000000Z")
    report = tasks_reconcile(connection=redis_conn)
    task = refresh(task)
    assert (report.lost, task.state, task.attempts, task.lost, task.error_class) == (
        1, "pending", 0, 1, "")
