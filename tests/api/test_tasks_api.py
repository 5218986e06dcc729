"""A campaign's life through the API (real Redis): launch, pause, resume, cancel, resubmit;
its status and its tasks."""
from __future__ import annotations

import pytest
from django.utils import timezone

from campaigns.models import Campaign, Task
from campaigns.status import campaign_status
from tests.api.portal_jobs import run_job
from tests.pipeline.conftest import queued_ids, task_states

pytestmark = pytest.mark.django_db


@pytest.fixture
def launch(api, portal_redis, django_capture_on_commit_callbacks):
    """launch(name, **body) -> the launch's background job once a worker has run it."""
    def run(name: str, **body) -> dict:
        return run_job(api, django_capture_on_commit_callbacks, portal_redis,
                       lambda: api.post(f"/api/campaigns/{name}/launch/", body or None,
                                        format="json"))
    return run


@pytest.fixture
def launched(launch, owned_campaign, settings):
    """A running noop campaign of 10 records, launched through the API, 4 jobs in Redis."""
    settings.FEED_WINDOW = 4
    campaign = owned_campaign(name="xtb_demo", records=10)
    job = launch("xtb_demo")
    assert (job["state"], job["kind"]) == ("done", "campaign_launch"), job
    assert job["report"] == {"campaign": "xtb_demo", "selected": 10, "added": 10,
                             "already": 0, "queued": 4, "dry_run": False, "state": "running"}
    assert job["message"] == ("xtb_demo: 10 tasks added (0 selected records already had one), "
                              "4 jobs queued; campaign running")
    return campaign


def state_of(campaign: Campaign) -> str:
    campaign.refresh_from_db(fields=["state"])
    return campaign.state


def test_launch_adds_tasks_and_queues_a_window(launched, portal_redis):
    assert state_of(launched) == "running"
    assert task_states(launched) == {"queued": 4, "pending": 6}
    assert queued_ids(portal_redis) == list(
        launched.tasks.filter(state="queued").order_by("pk").values_list("job_id", flat=True))


def test_a_dry_run_launch_writes_nothing(launch, owned_campaign):
    campaign = owned_campaign(name="xtb_demo", records=3)
    report = launch("xtb_demo", dry_run=True, limit=2)["report"]
    assert (report["added"], report["dry_run"]) == (2, True)
    assert (state_of(campaign), campaign.tasks.count()) == ("draft", 0)


def test_pause_then_resume_feeds_again(api, launched, portal_redis):
    paused = api.post("/api/campaigns/xtb_demo/pause/")
    assert paused.json() == {"campaign": "xtb_demo", "state": "paused"}
    assert state_of(launched) == "paused"
    for _ in range(4):
        portal_redis.lpop("rq:queue:pipe:normal")
    resumed = api.post("/api/campaigns/xtb_demo/resume/")
    assert resumed.json() == {"campaign": "xtb_demo", "state": "running", "queued": 4}
    assert task_states(launched) == {"queued": 8, "pending": 2}


def test_cancel_takes_jobs_out_of_redis(api, launched, portal_redis):
    response = api.post("/api/campaigns/xtb_demo/cancel/")
    assert response.json() == {"campaign": "xtb_demo", "state": "cancelled", "removed_jobs": 4,
                               "cancelled_tasks": 10}
    assert queued_ids(portal_redis) == []
    assert task_states(launched) == {"cancelled": 10}


@pytest.mark.parametrize("action, message", [
    ("pause", "campaign xtb_demo is draft: only a running campaign can be paused"),
    ("resume", "campaign xtb_demo is draft: only a paused campaign can be resumed"),
    ("cancel", "campaign xtb_demo is draft: only a running or paused campaign can be cancelled"),
    ("resubmit-failed", "campaign xtb_demo is draft: only a running, paused, done, failed "
                        "campaign can resubmit its failed tasks"),
])
def test_a_refused_action_is_a_400_with_the_services_message(api, owned_campaign, portal_redis,
                                                             action, message):
    campaign = owned_campaign(name="xtb_demo")
    response = api.post(f"/api/campaigns/xtb_demo/{action}/")
    assert (response.status_code, response.json()) == (400, {"error": message})
    assert state_of(campaign) == "draft"


def test_resubmit_failed_puts_failed_tasks_back_and_runs_the_campaign_again(api, launched,
                                                                           portal_redis):
    tasks = list(launched.tasks.order_by("pk"))
    Task.objects.filter(pk__in=[t.pk for t in tasks[:3]]).update(
        state="failed", attempts=3, error_class="ProgramFailed", finished_at=timezone.now())
    Task.objects.filter(pk__in=[t.pk for t in tasks[3:]]).update(state="done")
    Campaign.objects.filter(pk=launched.pk).update(state="done")
    response = api.post("/api/campaigns/xtb_demo/resubmit-failed/")
    assert response.json() == {"campaign": "xtb_demo", "state": "running", "resubmitted": 3}
    assert state_of(launched) == "running"
    again = launched.tasks.filter(pk__in=[t.pk for t in tasks[:3]])
    assert set(again.values_list("state", "attempts", "finished_at")) == {("pending", 0, None)}
    assert api.post("/api/campaigns/xtb_demo/resubmit-failed/").json()["resubmitted"] == 0


def test_status_has_the_selectors_numbers(api, launched, portal_redis):
    launched.tasks.filter(state="pending").update(state="failed", error_class="ProgramFailed",
                                                  error_message="xtb exited with 1")
    body = api.get("/api/campaigns/xtb_demo/status/").json()
    launched.refresh_from_db()
    expected = campaign_status(campaign=launched, connection=portal_redis).as_dict()
    body.pop("redis_used_memory"), expected.pop("redis_used_memory")  # Redis moves meanwhile
    assert body == expected
    assert (body["counts"]["queued"], body["counts"]["failed"], body["total"]) == (4, 6, 10)
    assert body["failures"] == [{"error_class": "ProgramFailed", "count": 6,
                                 "example": "xtb exited with 1"}]


@pytest.fixture
def mixed_tasks(launched):
    tasks = list(launched.tasks.order_by("pk"))
    Task.objects.filter(pk__in=[t.pk for t in tasks[:2]]).update(
        state="failed", attempts=2, error_class="ProgramTimeout", error_message="timed out",
        output_tail="...last lines")
    Task.objects.filter(pk=tasks[2].pk).update(state="failed", attempts=1,
                                               error_class="BadResult", error_message="bad")
    return tasks


def test_tasks_filter_by_state_and_error_class(api, mixed_tasks):
    failed = api.get("/api/campaigns/xtb_demo/tasks/?state=failed").json()["results"]
    assert [t["record_id"] for t in failed] == [t.record_id for t in mixed_tasks[:3]]
    first = failed[0]
    assert (first["attempts"], first["error_class"], first["error_message"],
            first["output_tail"]) == (2, "ProgramTimeout", "timed out", "...last lines")
    timeouts = api.get("/api/campaigns/xtb_demo/tasks/?state=failed&error_class=ProgramTimeout")
    assert len(timeouts.json()["results"]) == 2
    queued = api.get("/api/campaigns/xtb_demo/tasks/?state=queued").json()["results"]
    assert len(queued) == 1


def test_tasks_come_a_page_at_a_time(api, mixed_tasks):
    first = api.get("/api/campaigns/xtb_demo/tasks/?limit=4").json()
    assert [t["id"] for t in first["results"]] == [t.pk for t in mixed_tasks[:4]]
    second = api.get(first["next"]).json()
    assert [t["id"] for t in second["results"]] == [t.pk for t in mixed_tasks[4:8]]
    third = api.get(second["next"]).json()
    assert ([t["id"] for t in third["results"]], third["next"]) == (
        [t.pk for t in mixed_tasks[8:]], None)


@pytest.mark.parametrize("query, message", [
    ("?state=broken", "unknown task state 'broken' (known: pending, queued, running, done, "
                      "failed, cancelled)"),
    ("?limit=0", "limit must be a whole number from 1 to 1000 (got '0')"),
    ("?after=x", "after must be an id (a whole number), got 'x'"),
])
def test_bad_task_queries_are_400(api, launched, query, message):
    response = api.get(f"/api/campaigns/xtb_demo/tasks/{query}")
    assert (response.status_code, response.json()) == (400, {"error": message})
