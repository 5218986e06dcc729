"""Jobs that rq ends without an envelope ever reaching the portal (the reply failed, the
worker had nowhere to send it): with real worker processes, every task still reaches a
terminal state, as a failed attempt with the reason."""
from __future__ import annotations

import pytest
from rq.job import Job
from rq.serializers import JSONSerializer

from campaigns.models import Campaign, Task
from campaigns.services.feeding import queues_feed, rq_job_data
from campaigns.services.reconciling import tasks_reconcile
from campaigns.status import campaign_status
from tests.pipeline.collect_helpers import (Processes, campaign_submitted, refresh, states,
                                            wait_for)

pytestmark = pytest.mark.django_db(transaction=True)
NOT_A_LIST = "htportal:test:not-a-list"


@pytest.fixture
def processes(redis_server, redis_conn, tmp_path):
    started = Processes(redis_url=redis_server.url, tmp_path=tmp_path)
    yield started
    started.stop_all()


def reply_to(redis_conn, task: Task, where) -> None:
    """Rewrite the queued job so that its worker replies to `where` (None: nowhere)."""
    job = Job.fetch(task.job_id, connection=redis_conn, serializer=JSONSerializer)
    kwargs = {**job.kwargs, "reply_to": where}
    redis_conn.hset(Job.key_for(task.job_id), "data",
                    rq_job_data(function=job.func_name, kwargs=kwargs))


def sabotaged(make_campaign, redis_conn, *, records: int, max_attempts: int):
    """A fed campaign whose first job finishes without replying and whose second job fails
    in rq because its reply cannot be pushed (WRONGTYPE): no envelope from either."""
    campaign = campaign_submitted(make_campaign, records=records, max_attempts=max_attempts)
    queues_feed(connection=redis_conn, window=100)
    redis_conn.set(NOT_A_LIST, "a string, not a list")
    silent, failing = list(campaign.tasks.order_by("pk"))[:2]
    reply_to(redis_conn, silent, None)
    reply_to(redis_conn, failing, NOT_A_LIST)
    return campaign, silent, failing


def test_jobs_that_ended_without_a_result_are_retried_and_the_campaign_finishes(
        make_campaign, processes, redis_conn, monkeypatch, settings):
    monkeypatch.setenv("HTPORTAL_RECONCILE_GRACE_S", "2")
    # This process fed the jobs: the collector must know their attempt ids as ours.
    monkeypatch.setenv("HTPORTAL_SECRET_KEY", settings.SECRET_KEY)
    campaign, silent, failing = sabotaged(make_campaign, redis_conn, records=3, max_attempts=2)
    worker = processes.worker("pipe:normal", name="w-silent")
    collector = processes.collector()
    wait_for(lambda: Campaign.objects.get(pk=campaign.pk).state == "done", timeout=90,
             what="the campaign to finish", processes=(collector, worker))
    assert states(campaign) == {"done": 3}
    silent, failing = refresh(silent), refresh(failing)
    assert (silent.attempts, silent.delivery, silent.error_class, silent.error_message) == (
        2, 2, "JobFailedWithoutResult",
        "rq marked the job finished and no result reached the portal within 2 s")
    assert (failing.attempts, failing.delivery, failing.error_class) == (
        2, 2, "JobFailedWithoutResult"), failing.error_message
    assert failing.error_message.startswith("rq marked the job failed (")
    assert "WRONGTYPE" in failing.error_message
    assert collector.popen.poll() is None


def test_a_campaign_whose_every_job_ended_without_a_result_ends_failed(
        make_campaign, processes, redis_conn):
    campaign, silent, failing = sabotaged(make_campaign, redis_conn, records=2, max_attempts=1)
    worker = processes.worker("pipe:normal", name="w-silent")
    wait_for(lambda: {redis_conn.hget(Job.key_for(t.job_id), "status")
                      for t in (silent, failing)} == {b"finished", b"failed"},
             timeout=30, what="both jobs to end", processes=(worker,))
    # Within the grace period nothing changes: a result may still be on its way.
    assert tasks_reconcile(connection=redis_conn, grace_s=600).changed is False
    report = tasks_reconcile(connection=redis_conn, grace_s=0)
    assert report.failed == 2
    assert states(campaign) == {"failed": 2}
    assert list(campaign.task_minutes.values_list("done", "failed")) == [(0, 2)]
    assert Campaign.objects.get(pk=campaign.pk).state == "failed"
    lines = campaign_status(campaign=Campaign.objects.get(pk=campaign.pk),
                            connection=redis_conn).lines()
    assert lines[0] == "noop_demo (failed: 2 of 2 tasks failed, queue pipe:normal)"
    # rq's copies are gone with the tasks: nothing of them waits 7 days in Redis.
    assert not redis_conn.exists(Job.key_for(silent.job_id), Job.key_for(failing.job_id))
