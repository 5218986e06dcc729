"""Faults that must lose nothing, each with the real Redis, real worker processes and a real
`manage.py collect` process on the test database."""
from __future__ import annotations

import random
import signal
import sqlite3
import time

import pytest
from django.conf import settings

from campaigns.models import Campaign, Record, Task
from campaigns.pipeline_keys import RESULTS_KEY
from campaigns.services.definitions import campaign_definition_parse, campaign_import
from campaigns.services.feeding import queues_feed
from campaigns.services.submission import campaign_submit
from campaigns.services.kept_files import kept_file_open
from tests.pipeline.collect_helpers import (REPO, Processes, age_started_registries,
                                            campaign_submitted, envelope, ok, push, results_of,
                                            states, taken_by,
                                            wait_for)
from tests.pipeline.conftest import WATER

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def processes(redis_server, redis_conn, tmp_path):
    started = Processes(redis_url=redis_server.url, tmp_path=tmp_path)
    yield started
    started.stop_all()


@pytest.fixture
def submitted(make_campaign):
    """submitted(records, seconds=None, **fields): a running campaign, its tasks pending (the
    collector's feeder queues them); `seconds` makes it a sleep campaign."""
    def make(**kwargs) -> Campaign:
        return campaign_submitted(make_campaign, **kwargs)
    return make


def campaign_done(campaign: Campaign) -> bool:
    return Campaign.objects.get(pk=campaign.pk).state == "done"


def collector_with_all_queued(processes: Processes, campaign: Campaign):
    collector = processes.collector()
    count = campaign.tasks.count()
    wait_for(lambda: states(campaign) == {"queued": count}, timeout=30,
             what="the tasks to be queued", processes=(collector,))
    return collector


def test_a_worker_killed_mid_task_has_its_task_run_again_and_written_once(
        submitted, processes, redis_conn):
    campaign = submitted(records=2, seconds=3)
    collector = processes.collector()
    first = processes.worker("pipe:normal", name="w-killed")
    running = wait_for(lambda: campaign.tasks.filter(state="running", worker="w-killed").first(),
                       timeout=30, what="a task running on w-killed",
                       processes=(collector, first))
    first.signal(signal.SIGKILL)
    first.wait()
    # rq keeps the job "started" until the worker's heartbeat deadline (60 s on): skip the wait.
    assert age_started_registries(redis_conn) == 1
    second = processes.worker("pipe:normal", name="w-second")
    wait_for(lambda: campaign_done(campaign), timeout=60, what="the campaign to finish",
             processes=(collector, second))
    lost = Task.objects.get(pk=running.pk)
    assert (lost.state, lost.attempts, lost.error_class) == ("done", 2, "WorkerLost")
    assert states(campaign) == {"done": 2}
    assert results_of(campaign) == {"mol-000000": {"a": {}}, "mol-000001": {"a": {}}}
    assert redis_conn.llen(RESULTS_KEY) == 0


def test_a_collector_killed_mid_batch_loses_nothing_and_writes_nothing_twice(
        submitted, processes, redis_conn):
    campaign = submitted(records=3000)
    queues_feed(connection=redis_conn, window=3000)  # as the collector would: attempt ids and all
    taken_by(redis_conn, Task.objects.filter(campaign=campaign))
    tasks = list(campaign.tasks.all())
    assert {task.delivery for task in tasks} == {1}
    push(redis_conn, *[ok(task) for task in tasks])
    for round_ in range(3):
        collector = processes.collector("--batch", "100", log_name=f"collector-{round_}.log")
        before = redis_conn.llen(RESULTS_KEY)
        wait_for(lambda: redis_conn.llen(RESULTS_KEY) < before, timeout=60,
                 what="a batch to be trimmed", every=0.02, processes=(collector,))
        time.sleep(random.uniform(0.0, 0.1))  # somewhere inside a following batch
        collector.signal(signal.SIGKILL)
        collector.wait()
    assert redis_conn.llen(RESULTS_KEY) > 0, "the kills came too late to test anything"
    last = processes.collector("--batch", "500", log_name="collector-last.log")
    wait_for(lambda: campaign_done(campaign), timeout=120, what="the campaign to finish",
             processes=(last,))
    # The batch commits, then is trimmed: the list empties a moment after the campaign is done.
    wait_for(lambda: redis_conn.llen(RESULTS_KEY) == 0, timeout=10, what="the last trim",
             processes=(last,))
    assert states(campaign) == {"done": 3000}
    # A task done is never taken again: one attempt each, whatever was delivered twice.
    assert set(campaign.tasks.values_list("attempts", flat=True)) == {1}
    written = results_of(campaign)
    assert len(written) == 3000
    assert all(value == {"a": {"energy": {"value": -5.07, "unit": "Eh"}}}
               for value in written.values())


def test_a_redis_restart_that_loses_everything_still_completes_the_campaign(
        submitted, processes, redis_conn, redis_server):
    campaign = submitted(records=12, seconds=0.3)
    collector = processes.collector()
    worker = processes.worker("pipe:normal", name="w-restart")
    wait_for(lambda: campaign.tasks.filter(state="done").count() >= 3, timeout=60,
             what="some tasks done", processes=(collector, worker))
    redis_server.restart_empty()
    wait_for(lambda: campaign_done(campaign), timeout=120, what="the campaign to finish",
             processes=(collector, worker))
    assert states(campaign) == {"done": 12}
    assert all(value == {"a": {}} for value in results_of(campaign).values())
    assert set(campaign.tasks.values_list("attempts", flat=True)) == {1}
    assert "lost with Redis (pending again)" in collector.log()


def test_a_malformed_result_fails_its_task_and_the_loop_goes_on(submitted, processes,
                                                                redis_conn):
    campaign = submitted(records=3, max_attempts=1)
    queues_feed(connection=redis_conn, window=3)
    bad = campaign.tasks.order_by("record_id").first()
    taken_by(redis_conn, [bad])
    push(redis_conn, envelope(bad, result={"record_id": bad.record_id, "status": "maybe"}))
    collector = processes.collector()
    wait_for(lambda: Task.objects.get(pk=bad.pk).state == "failed", timeout=30,
             what="the bad result's task to fail", processes=(collector,))
    worker = processes.worker("pipe:normal", name="w-bad")
    wait_for(lambda: campaign_done(campaign), timeout=60, what="the campaign to finish",
             processes=(collector, worker))
    bad.refresh_from_db()
    assert (bad.error_class, bad.error_message) == (
        "BadResult", "status 'maybe' is neither 'ok' nor 'failed'")
    assert states(campaign) == {"done": 2, "failed": 1}
    collector.signal(signal.SIGTERM)
    assert collector.wait(30) == 0
    log = collector.log()
    assert ": SIGTERM, finishing batch" in log
    assert log.rstrip().endswith("Done.")


def test_a_record_deleted_while_its_task_is_queued_fails_with_record_missing(
        submitted, processes, redis_conn):
    campaign = submitted(records=3)
    collector = collector_with_all_queued(processes, campaign)
    Record.objects.filter(dataset=campaign.dataset, record_id="mol-000001").delete()
    worker = processes.worker("pipe:normal", name="w-missing")
    wait_for(lambda: campaign_done(campaign), timeout=60, what="the campaign to finish",
             processes=(collector, worker))
    gone = campaign.tasks.get(record_id="mol-000001")
    assert (gone.state, gone.error_class) == ("failed", "RecordMissing")
    assert states(campaign) == {"done": 2, "failed": 1}


def test_a_database_briefly_locked_keeps_results_in_redis_until_it_is_back(
        submitted, processes, redis_conn):
    campaign = submitted(records=4)
    collector = collector_with_all_queued(processes, campaign)
    holder = sqlite3.connect(settings.DATABASES["default"]["NAME"], isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        worker = processes.worker("pipe:normal", name="w-locked")
        wait_for(lambda: redis_conn.llen(RESULTS_KEY) == 4, timeout=30,
                 what="the results to wait in Redis", processes=(collector, worker))
        # Longer than SQLite's 5 s busy timeout, so the collector sees "database is locked".
        wait_for(lambda: "database unavailable" in collector.log(), timeout=30,
                 what="the collector to notice", processes=(collector,))
        assert redis_conn.llen(RESULTS_KEY) == 4
        assert holder.execute("SELECT count(*) FROM campaigns_task WHERE state = 'done'"
                              ).fetchone() == (0,)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    wait_for(lambda: campaign_done(campaign), timeout=60, what="the campaign to finish",
             processes=(collector,))
    assert states(campaign) == {"done": 4}
    assert redis_conn.llen(RESULTS_KEY) == 0


def test_a_second_collector_waits_for_the_first(submitted, processes):
    submitted(records=1)
    first = processes.collector()
    wait_for(lambda: "collecting batches" in first.log(), timeout=30, what="the first collector",
             processes=(first,))
    second = processes.collector(log_name="collector-second.log")
    wait_for(lambda: "is running (lock htportal:collector-lock); waiting for it to stop"
             in second.log(), timeout=30, what="the second collector to wait",
             processes=(second,))
    second.signal(signal.SIGTERM)
    assert second.wait(30) == 0


def test_an_xtb_task_runs_end_to_end_through_worker_and_collector(
        db, processes, redis_conn, settings):
    from campaigns.models import Dataset
    dataset = Dataset.objects.create(name="demo")
    Record.objects.create(dataset=dataset, record_id="water", input=WATER)
    text = (REPO / "examples" / "xtb_gfn2.yaml").read_text()
    definition = campaign_definition_parse(text=text, source="xtb_gfn2.yaml")
    campaign = campaign_import(definition=definition, dataset_name="demo")
    campaign_submit(campaign=campaign)
    collector = processes.collector()
    worker = processes.worker("xtb:high", "xtb:normal", "xtb:low", name="w-xtb")
    wait_for(lambda: campaign_done(campaign), timeout=120, what="the xtb campaign to finish",
             processes=(collector, worker))
    result = Record.objects.get(dataset=dataset, record_id="water").results["xtb"]["gfn2"]
    assert result["energy"]["unit"] == "Eh"
    assert result["energy"]["value"] == pytest.approx(-5.07, abs=0.01)
    assert len(result["gradient"]["value"]) == 3
    task = campaign.tasks.get()
    assert (task.state, task.attempts, task.worker != "") == ("done", 1, True)
    assert task.cpu_s is not None and task.wall_s > 0
    with kept_file_open(campaign=campaign.name, record_id="water", name="water_gfn2.out") as kept:
        assert b"TOTAL ENERGY" in kept.read()
