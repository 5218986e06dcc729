"""Pause, resume, cancel and launch: state transitions, what they do to Redis, the admin doors."""
from __future__ import annotations

import pytest
from django.contrib.messages import get_messages
from django.urls import reverse
from rq.job import Job

from campaigns.errors import ApplicationError
from campaigns.models import Campaign
from campaigns.services.feeding import queues_feed
from campaigns.services.lifecycle import (campaign_cancel, campaign_launch, campaign_pause,
                                          campaign_resume)
from tests.pipeline.conftest import first_job_ids, queued_ids, rq_queue, task_states


@pytest.fixture
def launched(make_campaign, redis_conn, settings):
    """A running noop campaign of 10 records with a window of 4 jobs in Redis."""
    settings.FEED_WINDOW = 4
    campaign = make_campaign(name="xtb_demo", records=10)
    campaign_launch(campaign=campaign, connection=redis_conn)
    assert len(queued_ids(redis_conn)) == 4
    return campaign


def state_of(campaign: Campaign) -> str:
    campaign.refresh_from_db(fields=["state"])
    return campaign.state


@pytest.mark.parametrize("action, state, message", [
    (campaign_pause, "draft", "campaign xtb_demo is draft: only a running campaign can be paused"),
    (campaign_resume, "running",
     "campaign xtb_demo is running: only a paused campaign can be resumed"),
    (campaign_cancel, "done",
     "campaign xtb_demo is done: only a running or paused campaign can be cancelled"),
    (campaign_launch, "cancelled",
     "campaign xtb_demo is cancelled: only a campaign that is draft, running, done, failed can "
     "be submitted (import its definition again as a new campaign)"),
])
def test_a_refused_transition_says_what_is_allowed(make_campaign, redis_conn, action, state,
                                                   message):
    campaign = make_campaign(name="xtb_demo", state=state)
    kwargs = {} if action is campaign_pause else {"connection": redis_conn}
    with pytest.raises(ApplicationError) as refused:
        action(campaign=campaign, **kwargs)
    assert str(refused.value) == message
    assert state_of(campaign) == state


def test_pausing_stops_feeding_and_leaves_queued_jobs(launched, redis_conn):
    campaign_pause(campaign=launched)
    assert state_of(launched) == "paused"
    redis_conn.lpop(rq_queue(redis_conn).key)  # a worker took one
    assert queues_feed(connection=redis_conn, window=4).queued == 0
    assert queued_ids(redis_conn) == first_job_ids(launched, 4)[1:]


def test_resuming_feeds_the_pending_tasks_where_it_stopped(launched, redis_conn):
    campaign_pause(campaign=launched)
    for _ in range(4):
        redis_conn.lpop(rq_queue(redis_conn).key)
    assert campaign_resume(campaign=launched, connection=redis_conn) == 4
    assert state_of(launched) == "running"
    assert queued_ids(redis_conn) == first_job_ids(launched, 8)[4:]
    assert task_states(launched) == {"queued": 8, "pending": 2}


def test_a_second_pause_is_refused(launched):
    campaign_pause(campaign=launched)
    with pytest.raises(ApplicationError, match="is paused: only a running campaign can be paused"):
        campaign_pause(campaign=launched)


def test_cancelling_removes_waiting_jobs_and_cancels_tasks(launched, redis_conn):
    started = redis_conn.lpop(rq_queue(redis_conn).key).decode()  # a worker is running this one
    report = campaign_cancel(campaign=launched, connection=redis_conn)
    assert (report.removed_jobs, report.cancelled_tasks) == (3, 10)
    assert state_of(launched) == "cancelled"
    assert queued_ids(redis_conn) == []
    assert [redis_conn.exists(Job.key_for(job_id)) for job_id in first_job_ids(launched, 4)] == [
        1, 0, 0, 0]
    assert first_job_ids(launched, 1) == [started]
    assert task_states(launched) == {"cancelled": 10}
    assert queues_feed(connection=redis_conn, window=4).queued == 0


def test_cancel_leaves_other_campaigns_jobs_alone(launched, make_campaign, redis_conn):
    other = make_campaign(name="other", records=2, priority="high")
    campaign_launch(campaign=other, connection=redis_conn)  # the window is full: nothing yet
    assert queues_feed(connection=redis_conn, window=6).by_queue == {"pipe:high": 2}
    campaign_cancel(campaign=launched, connection=redis_conn)
    assert queued_ids(redis_conn, "pipe:normal") == []
    assert queued_ids(redis_conn, "pipe:high") == first_job_ids(other, 2)
    assert task_states(other) == {"queued": 2}


def test_a_paused_campaign_can_be_cancelled(launched, redis_conn):
    campaign_pause(campaign=launched)
    assert campaign_cancel(campaign=launched, connection=redis_conn).removed_jobs == 4


def test_launch_on_a_redis_that_does_not_answer_keeps_the_ledger(make_campaign, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    campaign = make_campaign(name="xtb_demo", records=2)
    with pytest.raises(ApplicationError, match=(
            r"^campaign xtb_demo: Redis did not answer \(.*\); its tasks are in the ledger and "
            r"the feeder will queue them when Redis answers$")):
        campaign_launch(campaign=campaign)
    assert (state_of(campaign), task_states(campaign)) == ("running", {"pending": 2})


def admin_action(client, action: str, *campaigns: Campaign) -> list[str]:
    response = client.post(reverse("admin:campaigns_campaign_changelist"),
                           {"action": action, "_selected_action": [c.pk for c in campaigns]},
                           follow=True)
    assert response.status_code == 200
    return [str(message) for message in get_messages(response.wsgi_request)]


def test_the_admin_actions_launch_pause_resume_and_cancel(admin_client, make_campaign,
                                                          portal_redis, settings):
    settings.FEED_WINDOW = 3
    campaign = make_campaign(name="xtb_demo", records=5)
    assert admin_action(admin_client, "launch", campaign) == [
        "xtb_demo: 5 tasks added (0 selected records already had one), 3 jobs queued; "
        "campaign running"]
    assert len(queued_ids(portal_redis)) == 3
    assert admin_action(admin_client, "pause", campaign) == [
        "xtb_demo: paused; jobs already in Redis still run"]
    assert admin_action(admin_client, "pause", campaign) == [
        "campaign xtb_demo is paused: only a running campaign can be paused"]
    portal_redis.lpop(rq_queue(portal_redis).key)
    assert admin_action(admin_client, "resume", campaign) == [
        "xtb_demo: running again, 1 jobs queued"]
    assert admin_action(admin_client, "cancel", campaign) == [
        "xtb_demo: cancelled 5 tasks, removed 3 waiting jobs from Redis"]
    assert (state_of(campaign), queued_ids(portal_redis)) == ("cancelled", [])
