"""A worker killed with kill -9 mid-task, in real time: a real worker process, a real
`manage.py collect` process, and rq's own heartbeat deadline (1 s heartbeat + 60 s), not an aged
registry. rq's execution hash expires with that deadline while its entry in the job's
execution registry lives 60 s longer: deleting the job through rq then raised
`ValueError: Execution ... not found in Redis` inside reconcile and killed the collector."""
from __future__ import annotations

import signal

import pytest

from campaigns.models import Campaign, Task
from tests.pipeline.collect_helpers import Processes, campaign_submitted, states, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def processes(redis_server, redis_conn, tmp_path):
    started = Processes(redis_url=redis_server.url, tmp_path=tmp_path)
    yield started
    started.stop_all()


def test_it_survives_a_worker_killed_mid_task_and_runs_the_task_again(
        make_campaign, processes, redis_conn, monkeypatch):
    monkeypatch.setenv("HTPORTAL_RECONCILE_GRACE_S", "3")  # for the collector process
    # rq's heartbeat deadline is the last beat + job timeout + 60 s: a short timeout keeps the
    # test near a minute.
    campaign = campaign_submitted(make_campaign, records=1, seconds=3, max_attempts=3,
                                  job_timeout=5)
    collector = processes.collector()
    first = processes.worker("pipe:normal", name="w-kill9")
    running = wait_for(lambda: campaign.tasks.filter(state="running", worker="w-kill9").first(),
                       timeout=30, what="the task running on w-kill9",
                       processes=(collector, first))
    first.signal(signal.SIGKILL)
    first.wait()
    lost = wait_for(lambda: Task.objects.filter(pk=running.pk, error_class="WorkerLost").first()
                    or collector.popen.poll() is not None, timeout=150,
                    what="the task to be lost with its worker", every=1,
                    processes=(collector,))
    assert collector.popen.poll() is None, collector.log()
    assert (lost.attempts, lost.state in ("pending", "queued")) == (1, True)
    second = processes.worker("pipe:normal", name="w-second")
    wait_for(lambda: Campaign.objects.get(pk=campaign.pk).state == "done", timeout=60,
             what="the campaign to finish", processes=(collector, second))
    task = Task.objects.get(pk=running.pk)
    assert (task.state, task.attempts, task.error_class) == ("done", 2, "WorkerLost")
    assert states(campaign) == {"done": 1}
    assert collector.popen.poll() is None
    assert "Traceback" not in collector.log()
