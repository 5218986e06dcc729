"""campaign_status: counts, rates, ETA, workers, failures, Redis memory; and the command."""
from __future__ import annotations

import io
import json
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.db import connection as db_connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from redis import Redis
from rq import Worker

from campaigns.models import Task
from campaigns.services.submission import campaign_submit
from campaigns.status import campaign_status
from tests import servers


@pytest.fixture
def busy_campaign(make_campaign):
    """20 tasks: 12 done (6 in the last minute, 6 more in the last ten), 3 failed, 5 pending."""
    campaign = make_campaign(name="busy", records=20)
    campaign_submit(campaign=campaign)
    now = timezone.now()
    tasks = list(campaign.tasks.order_by("pk"))
    for number, task in enumerate(tasks[:12]):
        task.state = "done"
        task.finished_at = now - timedelta(seconds=30 if number < 6 else 300)
    for task, (error_class, message) in zip(tasks[12:15], [
            ("ProgramFailed", "xtb: exit code 1"), ("ProgramFailed", "xtb: exit code 2"),
            ("WorkerLost", "worker w1 stopped heartbeating")]):
        task.state, task.error_class, task.error_message = "failed", error_class, message
        task.finished_at = now - timedelta(hours=2)
    Task.objects.bulk_update(tasks, ["state", "finished_at", "error_class", "error_message"])
    return campaign


def test_it_counts_rates_eta_and_failures(busy_campaign, redis_conn):
    status = campaign_status(campaign=busy_campaign, connection=redis_conn)
    assert status.counts == {"pending": 5, "queued": 0, "running": 0, "done": 12, "failed": 3,
                             "cancelled": 0}
    assert (status.total, status.remaining) == (20, 5)
    assert status.rate_1m == pytest.approx(6 / 60)
    assert status.rate_10m == pytest.approx(12 / 600)
    assert status.eta_s == pytest.approx(5 / (12 / 600))
    assert [(f.error_class, f.count, f.example) for f in status.failures] == [
        ("ProgramFailed", 2, "xtb: exit code 2"),
        ("WorkerLost", 1, "worker w1 stopped heartbeating")]
    assert status.redis_used_memory > 0
    assert status.workers == []


def test_it_lists_the_live_workers_of_the_campaign_queue(busy_campaign, redis_conn):
    Worker(["pipe:high", "pipe:normal", "pipe:low"], connection=redis_conn,
           name="node17.1.abc").register_birth()
    Worker(["other:normal"], connection=redis_conn, name="node18.1.def").register_birth()
    status = campaign_status(campaign=busy_campaign, connection=redis_conn)
    assert [(w.name, w.job_id) for w in status.workers] == [("node17.1.abc", None)]


def test_it_reads_aggregates_not_tasks(make_campaign, redis_conn):
    counted = []
    for records in (5, 200):
        campaign = make_campaign(name=f"c{records}", records=records)
        campaign_submit(campaign=campaign)
        with CaptureQueriesContext(db_connection) as queries:
            campaign_status(campaign=campaign, connection=redis_conn)
        counted.append(len(queries))
    # Counts and failures, and the pools (why nothing is running: no worker on the queue).
    assert counted[0] == counted[1] <= 4


def test_a_silent_redis_leaves_workers_unknown(busy_campaign):
    silent = Redis(port=servers.free_port(), socket_connect_timeout=0.5)
    status = campaign_status(campaign=busy_campaign, connection=silent)
    assert status.workers is None and status.redis_used_memory is None
    assert status.redis_error.startswith("Redis unreachable")
    assert status.counts["done"] == 12


def test_the_command_prints_each_campaign(busy_campaign, portal_redis):
    out = io.StringIO()
    call_command("campaign_status", stdout=out)
    lines = out.getvalue().splitlines()
    assert lines[:4] == [
        "busy (running, queue pipe:normal)",
        "  tasks: 20 (pending 5, done 12, failed 3)",
        "  rate: 0.10/s last minute, 0.02/s last 10 minutes; eta 4m",
        "  workers: 0",
    ]
    assert lines[4] == "  failed: ProgramFailed x2, e.g. 'xtb: exit code 2'"
    assert lines[6].startswith("  redis memory: ") and lines[6].endswith(" MiB used")
    assert lines[7].startswith("  not running: no enabled worker pool serves queue 'pipe'")
    assert lines[-1].startswith("  cost: ") and "core-hours" in lines[-1]


def test_the_command_says_what_a_campaign_cost(busy_campaign, portal_redis):
    from campaigns.models import Task
    done = list(busy_campaign.tasks.filter(state="done")[:2])
    failed = busy_campaign.tasks.filter(state="failed").first()
    busy_campaign.tasks.update(cpu_s=None)
    Task.objects.filter(pk__in=[t.pk for t in done]).update(cpu_s=3600.0)
    Task.objects.filter(pk=failed.pk).update(cpu_s=1800.0)
    out = io.StringIO()
    call_command("campaign_status", "busy", stdout=out)
    assert out.getvalue().splitlines()[-1] == (
        "  cost: 2.50 core-hours (0.50 on failed tasks; the last attempt of each task)")
    out = io.StringIO()
    call_command("campaign_status", "busy", "--json", stdout=out)
    cost = json.loads(out.getvalue())["cost"]
    assert (cost["core_hours"], cost["failed_core_hours"], cost["failed_tasks"]) == (2.5, 0.5, 1)


def test_the_command_prints_json(busy_campaign, portal_redis):
    out = io.StringIO()
    call_command("campaign_status", "busy", "--json", stdout=out)
    data = json.loads(out.getvalue())
    assert (data["name"], data["counts"]["done"], data["remaining"]) == ("busy", 12, 5)
    assert data["failures"][0] == {"error_class": "ProgramFailed", "count": 2,
                                   "example": "xtb: exit code 2"}


def test_the_command_names_the_known_campaigns_for_an_unknown_one(busy_campaign, portal_redis):
    with pytest.raises(CommandError, match=r"no campaign named 'nope' \(known: busy\)"):
        call_command("campaign_status", "nope")


@pytest.mark.parametrize("state, failed, text, badge", [
    ("done", 0, "done", "done"),
    ("done", 3, "done with 3 failed of 20", "done-failures"),
    ("failed", 20, "failed: 20 of 20 tasks failed", "failed"),
    ("running", 3, "running", "running"),
])
def test_a_finished_campaign_s_state_says_its_failures(make_campaign, redis_conn, state, failed,
                                                       text, badge):
    from django.template.loader import render_to_string

    from campaigns.dashboard import display
    campaign = make_campaign(name="ends", records=20)
    campaign_submit(campaign=campaign)
    campaign.tasks.update(state="done")
    for task in campaign.tasks.order_by("pk")[:failed]:
        Task.objects.filter(pk=task.pk).update(state="failed", error_class="ProgramFailed")
    campaign.__class__.objects.filter(pk=campaign.pk).update(state=state)
    campaign.refresh_from_db()
    status = campaign_status(campaign=campaign, connection=redis_conn)
    assert (status.state_text, status.badge) == (text, badge)
    assert status.lines()[0] == f"ends ({text}, queue pipe:normal)"
    progress = display.progress(status)
    html = render_to_string("dashboard/partials/campaign_rows.html",
                            {"rows": [{"campaign": campaign, "status": status,
                                       "progress": progress}]})
    assert f'<span class="state state-{badge}">{text}</span>' in html
    assert status.as_dict()["state_text"] == text
