"""Campaign state changes made against what the database says, not what a caller read: the
collector ends campaigns while people submit, launch and cancel them."""
from __future__ import annotations

import time

import pytest
from rq.job import Job

from campaigns.errors import ApplicationError
from campaigns.models import Campaign, Task
from campaigns.services.feeding import queues_feed
from campaigns.services.lifecycle import campaign_cancel, campaign_launch, campaigns_finish
from campaigns.services.submission import campaign_submit
from tests.pipeline.conftest import queued_ids, task_states


def state_of(campaign: Campaign) -> str:
    return Campaign.objects.values_list("state", flat=True).get(pk=campaign.pk)


def test_a_submit_to_a_campaign_the_collector_just_ended_runs_it_again(make_campaign,
                                                                       redis_conn):
    campaign = make_campaign(records=3)
    campaign_submit(campaign=campaign, limit=2)
    assert campaign.state == "running"  # what the caller holds from here on
    campaign.tasks.update(state="done")
    assert campaigns_finish(campaign_ids={campaign.pk}) == ["noop_demo"]  # the collector
    report = campaign_launch(campaign=campaign, connection=redis_conn)
    assert (report.added, report.state, state_of(campaign)) == (1, "running", "running")
    assert report.queued == 1 and task_states(campaign) == {"done": 2, "queued": 1}


def test_a_campaign_ends_done_with_failures_or_failed_when_nothing_succeeded(make_campaign):
    some = make_campaign(name="some", records=3)
    none = make_campaign(name="none", records=2)
    empty = make_campaign(name="empty", records=0)
    for campaign in (some, none):
        campaign_submit(campaign=campaign)
    Campaign.objects.filter(pk=empty.pk).update(state="running")
    some.tasks.filter(record_id="mol-000000").update(state="done")
    some.tasks.exclude(record_id="mol-000000").update(state="failed")
    none.tasks.update(state="failed")
    assert sorted(campaigns_finish(campaign_ids={some.pk, none.pk, empty.pk})) == [
        "empty", "none", "some"]
    assert (state_of(some), state_of(none), state_of(empty)) == ("done", "failed", "done")


def test_a_campaign_with_an_unfinished_task_or_that_was_cancelled_is_not_ended(make_campaign):
    running = make_campaign(name="running", records=2)
    cancelled = make_campaign(name="cancelled", records=1)
    for campaign in (running, cancelled):
        campaign_submit(campaign=campaign)
    running.tasks.filter(record_id="mol-000000").update(state="done")
    cancelled.tasks.update(state="cancelled")
    Campaign.objects.filter(pk=cancelled.pk).update(state="cancelled")
    assert campaigns_finish(campaign_ids={running.pk, cancelled.pk}) == []
    assert (state_of(running), state_of(cancelled)) == ("running", "cancelled")


def test_cancel_refuses_on_the_database_s_state_not_the_caller_s(make_campaign, redis_conn):
    campaign = make_campaign(records=1)
    campaign_submit(campaign=campaign)
    Campaign.objects.filter(pk=campaign.pk).update(state="done")  # the collector ended it
    with pytest.raises(ApplicationError, match="is done: only a running or paused campaign can be "
                                        "cancelled"):
        campaign_cancel(campaign=campaign, connection=redis_conn)
    assert state_of(campaign) == "done"


def test_cancel_takes_only_its_jobs_off_a_shared_list_in_one_pass(make_campaign, redis_conn):
    mine = make_campaign(name="mine", records=6000)
    other = make_campaign(name="other", records=3)
    campaign_submit(campaign=mine)
    campaign_submit(campaign=other)
    queues_feed(connection=redis_conn, window=10000)
    # Interleave: other's jobs sit between mine in the one list.
    key = "rq:queue:pipe:normal"
    ids = queued_ids(redis_conn)
    others = [i for i in ids if i.startswith(f"c{other.pk}-")]
    mixed = [i for i in ids if not i.startswith(f"c{other.pk}-")]
    mixed[10:10] = others[:1]
    mixed[3000:3000] = others[1:]
    redis_conn.delete(key)
    redis_conn.rpush(key, *mixed)
    started = time.monotonic()
    report = campaign_cancel(campaign=mine, connection=redis_conn)
    elapsed = time.monotonic() - started
    assert (report.removed_jobs, report.cancelled_tasks) == (6000, 6000)
    assert queued_ids(redis_conn) == others  # in their order
    assert [redis_conn.exists(Job.key_for(i)) for i in others] == [1, 1, 1]
    assert not any(redis_conn.exists(Job.key_for(i)) for i in mixed[:5])
    assert task_states(other) == {"queued": 3}
    assert elapsed < 5, f"cancel of 6,000 waiting jobs took {elapsed:.1f} s"
    assert Task.objects.filter(campaign=mine).exclude(state="cancelled").count() == 0


def test_a_result_that_arrives_after_a_cancel_is_not_written(make_campaign, redis_conn):
    from campaigns.services.collecting import results_collect
    from tests.pipeline.collect_helpers import ok, push, results_of

    campaign = make_campaign(records=2)
    campaign_launch(campaign=campaign, connection=redis_conn)
    running = campaign.tasks.order_by("pk").first()
    campaign.tasks.filter(pk=running.pk).update(state="running", worker="w-1")
    campaign_cancel(campaign=campaign, connection=redis_conn)
    assert task_states(campaign) == {"cancelled": 2}
    push(redis_conn, ok(running))  # its worker finished after the cancel
    report = results_collect(connection=redis_conn)
    assert (report.taken, report.done, report.skipped) == (1, 0, 1)
    assert results_of(campaign) == {"mol-000000": None, "mol-000001": None}
    assert (state_of(campaign), task_states(campaign)) == ("cancelled", {"cancelled": 2})


def test_resubmitting_a_failed_campaign_runs_it_again_with_its_losses_reset(make_campaign):
    from campaigns.services.resubmit import campaign_resubmit_failed

    campaign = make_campaign(records=1)
    campaign_submit(campaign=campaign)
    campaign.tasks.update(state="failed", attempts=0, lost=6, error_class="LostInRedis")
    campaigns_finish(campaign_ids={campaign.pk})
    stale = Campaign.objects.get(pk=campaign.pk)
    Campaign.objects.filter(pk=campaign.pk).update(state="failed")
    stale.state = "running"  # what a page read before the campaign failed
    assert campaign_resubmit_failed(campaign=stale) == 1
    assert state_of(campaign) == "running"
    assert list(campaign.tasks.values_list("state", "lost")) == [("pending", 0)]


@pytest.mark.django_db(databases=["default", "postgres"])
@pytest.mark.parametrize("alias", ["default", "postgres"])
def test_the_end_is_one_statement_on_sqlite_and_postgresql(alias):
    from campaigns.models import Dataset

    dataset = Dataset.objects.using(alias).create(name="ends")
    ended = {}
    for name, task_states_ in (("ok", ["done", "failed"]), ("bad", ["failed", "failed"]),
                               ("busy", ["done", "pending"])):
        campaign = Campaign.objects.using(alias).create(
            name=name, dataset=dataset, function="noop", output_key="out", state="running")
        Task.objects.using(alias).bulk_create(
            Task(campaign=campaign, record_id=f"r{n}", job_id=f"{name}-{n}", state=state)
            for n, state in enumerate(task_states_))
        ended[name] = campaign.pk
    assert sorted(campaigns_finish(campaign_ids=set(ended.values()), using=alias)) == [
        "bad", "ok"]
    assert dict(Campaign.objects.using(alias).values_list("name", "state")) == {
        "ok": "done", "bad": "failed", "busy": "running"}
