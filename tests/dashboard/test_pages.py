"""The dashboard's pages, partials and buttons, with the test client, a real Redis and SQLite."""
from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.db import connection as db_connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from rq import Queue, Worker

from campaigns.dashboard import display, selectors
from campaigns.models import Campaign, Record, Task
from campaigns.services.rollups import task_minutes_rebuild
from campaigns.status import campaign_status
from workers.models import ScalerEvent, WorkerPool

pytestmark = pytest.mark.django_db

MIXED = {"done": 6, "failed": 2, "running": 1, "queued": 3, "pending": 8}


def make_records(campaign: Campaign, record_ids) -> None:
    Record.objects.bulk_create(Record(dataset=campaign.dataset, record_id=record_id,
                                      input={"elements": ["He"], "coordinates": [[0, 0, 0]]})
                               for record_id in record_ids)


def page_urls(campaign: Campaign, task: Task) -> list[str]:
    return [reverse("dashboard:campaigns"), reverse("dashboard:campaigns-partial"),
            reverse("dashboard:campaign", args=[campaign.pk]),
            reverse("dashboard:campaign-status", args=[campaign.pk]),
            reverse("dashboard:campaign-series", args=[campaign.pk]),
            reverse("dashboard:task", args=[campaign.pk, task.pk]),
            reverse("dashboard:workers"), reverse("dashboard:workers-partial")]


# -- logins and who sees what --------------------------------------------------------------

def test_it_sends_anonymous_visitors_to_the_dashboard_login(client, make_ledger, owner):
    campaign = make_ledger("mine", owner, {"failed": 1})
    for url in page_urls(campaign, campaign.tasks.get()):
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"] == f"/dashboard/login/?next={url}"


def test_the_site_root_leads_to_the_dashboard(client):
    assert client.get("/")["Location"] == "/dashboard/"


def test_a_user_sees_only_their_own_campaigns(owner_client, make_ledger, make_user, owner,
                                              portal_redis):
    make_ledger("mine", owner)
    theirs = make_ledger("theirs", make_user("tom"))
    body = owner_client.get(reverse("dashboard:campaigns")).content.decode()
    assert "mine" in body and "theirs" not in body
    assert owner_client.get(reverse("dashboard:campaign", args=[theirs.pk])).status_code == 404
    response = owner_client.post(reverse("dashboard:campaign-action", args=[theirs.pk, "pause"]))
    assert response.status_code == 404
    assert Campaign.objects.get(pk=theirs.pk).state == "running"


def test_staff_see_every_campaign(client, make_ledger, make_user, owner, portal_redis):
    make_ledger("mine", owner)
    make_ledger("theirs", make_user("tom"))
    client.force_login(make_user("sam", staff=True))
    body = client.get(reverse("dashboard:campaigns")).content.decode()
    assert "mine" in body and "theirs" in body


# -- the campaigns page --------------------------------------------------------------------

def test_it_shows_each_campaign_with_a_stacked_progress_bar(owner_client, make_ledger, owner,
                                                            portal_redis):
    make_ledger("mixed", owner, MIXED)
    body = owner_client.get(reverse("dashboard:campaigns")).content.decode()
    # 20 tasks: done 6 = 30 %, failed 2 = 10 %, running 1 = 5 %, queued 3 = 15 %.
    for state, width in (("done", "30.000%"), ("failed", "10.000%"), ("running", "5.000%"),
                         ("queued", "15.000%")):
        assert f'class="seg seg-{state}" data-width="{width}"' in body
    for label in ("done 6", "failed 2", "running 1", "queued 3", "pending 8", "40 %"):
        assert label in body
    # 8 finished in the last 10 minutes: 0.8/min; 12 remaining at that rate: 15 minutes.
    assert "0.8/min" in body and ">15m<" in body


def test_the_rows_refresh_every_five_seconds(owner_client, make_ledger, owner, portal_redis):
    make_ledger("mixed", owner, MIXED)
    body = owner_client.get(reverse("dashboard:campaigns")).content.decode()
    assert f'hx-get="{reverse("dashboard:campaigns-partial")}"' in body
    assert 'hx-trigger="every 5s"' in body
    partial = owner_client.get(reverse("dashboard:campaigns-partial")).content.decode()
    assert "<html" not in partial and "pending 8" in partial


def test_it_serves_htmx_and_the_chart_library_itself(owner_client, make_ledger, owner,
                                                     portal_redis):
    campaign = make_ledger("mixed", owner, MIXED)
    body = owner_client.get(reverse("dashboard:campaign", args=[campaign.pk])).content.decode()
    assert "/static/vendor/htmx/htmx.min.js" in body
    assert "/static/vendor/uplot/uPlot.iife.min.js" in body
    assert "//cdn" not in body and "https://" not in body


# -- one campaign --------------------------------------------------------------------------

def test_the_campaign_page_shows_counts_failures_workers_and_buttons(owner_client, make_ledger,
                                                                     owner, portal_redis):
    campaign = make_ledger("mixed", owner, MIXED)
    Worker(["dash:high", "dash:normal", "dash:low"], connection=portal_redis,
           name="node7.12.abc").register_birth()
    body = owner_client.get(reverse("dashboard:campaign", args=[campaign.pk])).content.decode()
    assert '<td class="num count-pending">8</td>' in body
    assert "<strong>ProgramFailed</strong> × 2: xtb: exit code 2" in body
    assert "... abnormal termination of xtb (run 1)" in body  # the latest failure's tail
    assert "node7.12.abc" in body and "1 worker;" in body
    for action in ("launch", "pause", "resume", "cancel", "resubmit"):
        assert reverse("dashboard:campaign-action", args=[campaign.pk, action]) in body
    assert body.count("csrfmiddlewaretoken") >= 5


def test_a_failure_has_a_details_page(owner_client, make_ledger, owner):
    campaign = make_ledger("mixed", owner, {"failed": 1})
    task = campaign.tasks.get()
    body = owner_client.get(reverse("dashboard:task", args=[campaign.pk, task.pk])
                            ).content.decode()
    assert '<dd id="task-error-class">ProgramFailed</dd>' in body
    assert "xtb: exit code 1" in body and "abnormal termination of xtb (run 0)" in body
    assert "1 of 3" in body and "node7.12.abc" in body
    other = make_ledger("other", owner, {"failed": 1})
    wrong = reverse("dashboard:task", args=[campaign.pk, other.tasks.get().pk])
    assert owner_client.get(wrong).status_code == 404


def test_the_series_counts_done_and_failed_tasks_per_minute_in_one_query(make_ledger, owner):
    campaign = make_ledger("mixed", owner, MIXED)
    now = timezone.now().replace(second=30)
    Task.objects.filter(campaign=campaign, state="done", record_id__lte="done-0001").update(
        finished_at=now - timedelta(minutes=5))
    Task.objects.filter(campaign=campaign, state="done", record_id="done-0005").update(
        finished_at=now - timedelta(hours=3))
    task_minutes_rebuild(campaign_ids=[campaign.pk])
    with CaptureQueriesContext(db_connection) as queries:
        series = selectors.campaign_series(campaign=campaign, span="hour", now=now)
    assert len(queries) == 1 and '"campaigns_taskminute"' in queries[0]["sql"]
    assert len(series.minutes) == 60 and series.minutes[-1] % 60 == 0
    assert sum(series.done) == 5 and sum(series.failed) == 2  # the 3-hour-old one is out
    assert series.done[-6] == 2  # five minutes before `now`
    since_start = selectors.campaign_series(campaign=campaign, span="start", now=now)
    assert sum(since_start.done) == 6 and len(since_start.minutes) == 181


def test_the_series_partial_carries_json_for_the_chart(owner_client, make_ledger, owner):
    campaign = make_ledger("mixed", owner, MIXED)
    url = reverse("dashboard:campaign-series", args=[campaign.pk])
    body = owner_client.get(url + "?span=start").content.decode()
    head = '<script id="series-data" type="application/json">'
    assert body.startswith(head)
    series = json.loads(body[len(head):body.index("</script>")])
    assert series["span"] == "start" and sum(series["failed"]) == 2 and sum(series["done"]) == 6
    assert '"span": "hour"' in owner_client.get(url + "?span=bogus").content.decode()


def test_pages_cost_the_same_number_of_queries_whatever_the_tasks(owner_client, make_ledger,
                                                                  owner, portal_redis):
    small = make_ledger("small", owner, {"done": 2, "failed": 1, "pending": 1})
    large = make_ledger("large", owner, {"done": 200, "failed": 50, "pending": 100})

    def queries(campaign: Campaign) -> int:
        with CaptureQueriesContext(db_connection) as captured:
            owner_client.get(reverse("dashboard:campaign", args=[campaign.pk]))
        return len(captured)

    assert queries(small) == queries(large)


# -- the buttons ---------------------------------------------------------------------------

def test_pause_and_resume_call_the_life_cycle_services(owner_client, make_ledger, owner,
                                                       portal_redis):
    campaign = make_ledger("mixed", owner, {"pending": 3})
    make_records(campaign, campaign.tasks.values_list("record_id", flat=True))
    pause = reverse("dashboard:campaign-action", args=[campaign.pk, "pause"])
    response = owner_client.post(pause, follow=True)
    assert response.redirect_chain == [(reverse("dashboard:campaign", args=[campaign.pk]), 302)]
    assert "mixed: paused; jobs already in Redis still run" in response.content.decode()
    assert Campaign.objects.get(pk=campaign.pk).state == "paused"
    again = owner_client.post(pause, follow=True).content.decode()
    assert "campaign mixed is paused: only a running campaign can be paused" in again
    resume = reverse("dashboard:campaign-action", args=[campaign.pk, "resume"])
    body = owner_client.post(resume, follow=True).content.decode()
    assert "mixed: running again, 3 jobs queued" in body
    assert Queue("dash:normal", connection=portal_redis).count == 3


def test_launch_submits_and_feeds_a_draft(owner_client, make_ledger, owner, portal_redis):
    campaign = make_ledger("fresh", owner, state="draft")
    make_records(campaign, [f"m{number}" for number in range(4)])
    body = owner_client.post(reverse("dashboard:campaign-action", args=[campaign.pk, "launch"]),
                             follow=True).content.decode()
    assert "fresh: 4 tasks added (0 selected records already had one), 4 jobs queued" in body
    assert Campaign.objects.get(pk=campaign.pk).state == "running"


def test_cancel_cancels_pending_tasks(owner_client, make_ledger, owner, portal_redis):
    campaign = make_ledger("doomed", owner, {"pending": 2, "done": 1})
    body = owner_client.post(reverse("dashboard:campaign-action", args=[campaign.pk, "cancel"]),
                             follow=True).content.decode()
    assert "doomed: cancelled 2 tasks" in body
    assert campaign.tasks.filter(state="cancelled").count() == 2


def test_resubmit_puts_failed_tasks_back_to_pending(owner_client, make_ledger, owner):
    campaign = make_ledger("flaky", owner, {"failed": 2, "done": 1}, state="done")
    body = owner_client.post(reverse("dashboard:campaign-action",
                                     args=[campaign.pk, "resubmit"]), follow=True).content.decode()
    assert "flaky: 2 failed tasks back to pending" in body
    assert campaign.tasks.filter(state="pending", attempts=0).count() == 2
    # The series is a history of completions: the failures stay in it.
    assert sum(selectors.campaign_series(campaign=campaign, span="start").failed) == 2
    assert Campaign.objects.get(pk=campaign.pk).state == "running"


def test_actions_take_post_only_and_known_names(owner_client, make_ledger, owner):
    campaign = make_ledger("mixed", owner)
    url = reverse("dashboard:campaign-action", args=[campaign.pk, "pause"])
    assert owner_client.get(url).status_code == 405
    bogus = reverse("dashboard:campaign-action", args=[campaign.pk, "explode"])
    assert owner_client.post(bogus).status_code == 404
    assert Campaign.objects.get(pk=campaign.pk).state == "running"


def test_actions_need_the_csrf_token(make_ledger, owner):
    from django.test import Client
    campaign = make_ledger("mixed", owner)
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)
    url = reverse("dashboard:campaign-action", args=[campaign.pk, "pause"])
    assert client.post(url).status_code == 403
    assert Campaign.objects.get(pk=campaign.pk).state == "running"


# -- workers and pools ---------------------------------------------------------------------

@pytest.fixture
def staff_client(client, make_user):
    client.force_login(make_user("sam", staff=True))
    return client


def test_the_workers_page_is_for_staff_only(owner_client, portal_redis):
    assert owner_client.get(reverse("dashboard:workers")).status_code == 404
    assert owner_client.get(reverse("dashboard:workers-partial")).status_code == 404


def test_the_workers_page_groups_live_workers_by_pool_and_host(staff_client, portal_redis):
    owner_client = staff_client
    WorkerPool.objects.create(name="here", kind="local", queues="dash xtb")
    worker = Worker(["dash:high", "dash:normal", "dash:low"], connection=portal_redis,
                    name="node7.12.abc")
    worker.register_birth()
    portal_redis.hset(worker.key, mapping={"successful_job_count": 41, "current_job": "c1-v1-x"})
    Worker(["solo:normal"], connection=portal_redis, name="node8.1.def").register_birth()
    ScalerEvent.objects.create(pool=WorkerPool.objects.get(), kind="submit",
                               message="submitted 2 workers (backlog 40)")
    body = owner_client.get(reverse("dashboard:workers")).content.decode()
    host = worker.hostname
    assert f"here on {host} · 1 worker, 1 busy" in body
    assert f"no pool (solo) on {host}" in body
    assert "dash:high dash:normal dash:low" in body and ">41<" in body and "c1-v1-x" in body
    assert "submitted 2 workers (backlog 40)" in body
    assert "(no bound: maxmemory is not set)" in body


def test_it_shows_redis_memory_against_its_bound(staff_client, portal_redis):
    owner_client = staff_client
    portal_redis.config_set("maxmemory", 100 * 2**20)
    try:
        body = owner_client.get(reverse("dashboard:workers-partial")).content.decode()
    finally:
        portal_redis.config_set("maxmemory", 0)
    assert "of 100.0 MiB (maxmemory, policy" in body


def test_it_says_when_redis_does_not_answer(owner_client, settings, make_ledger, owner):
    from tests.servers import free_port
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    campaign = make_ledger("mixed", owner, MIXED)
    owner.is_staff = True  # the workers page is staff's
    owner.save()
    assert "Redis unreachable" in owner_client.get(reverse("dashboard:workers")).content.decode()
    body = owner_client.get(reverse("dashboard:campaign", args=[campaign.pk])).content.decode()
    assert "Redis unreachable" in body and "pending 8" in body


# -- display -------------------------------------------------------------------------------

def test_progress_never_rounds_up_to_a_premature_hundred(make_ledger, owner, redis_conn):
    campaign = make_ledger("almost", owner, {"done": 199, "pending": 1})
    progress = display.progress(campaign_status(campaign=campaign, connection=redis_conn))
    assert progress.percent == 99
    assert display.rate_text(0) == "-" and display.rate_text(2.345) == "2.3/s"
    assert display.bytes_text(3 * 2**20) == "3.0 MiB" and display.bytes_text(None) == "unknown"
