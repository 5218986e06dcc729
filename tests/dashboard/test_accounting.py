"""CPU-hour accounting from the ledger: exact numbers on a planted ledger, on SQLite and
PostgreSQL, who sees which costs, and bounded queries."""
from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.db import connection as db_connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from campaigns.dashboard import accounting
from campaigns.models import ArgSet, Campaign, Dataset, Task

pytestmark = pytest.mark.django_db


def plant(campaign: Campaign, *, using: str = "default") -> None:
    """3 tasks of 3600 s CPU: two done on node1 (today, yesterday), one failed on node2
    (ProgramFailed, today); a pending one without CPU; a done one of 1800 s whose host is only
    in Task.worker (written by an older collector)."""
    now = timezone.now()
    rows = [("t1", "done", "node1", "", 3600.0, now, ""),
            ("t2", "done", "node1", "", 3600.0, now - timedelta(days=1), ""),
            ("t3", "failed", "node2", "", 3600.0, now, "ProgramFailed"),
            ("t4", "pending", "", "", None, None, ""),
            ("t5", "done", "", "old-node", 1800.0, now - timedelta(days=1), "")]
    Task.objects.using(using).bulk_create(
        Task(campaign=campaign, record_id=record_id, job_id=f"{campaign.pk}-{record_id}",
             state=state, host=host, worker=worker, cpu_s=cpu, finished_at=finished,
             error_class=error, attempts=1)
        for record_id, state, host, worker, cpu, finished, error in rows)


def test_campaign_cost_is_exact_on_a_planted_ledger(make_ledger, owner):
    campaign = make_ledger("cost", owner)
    plant(campaign)
    assert accounting.campaign_cost(campaign=campaign) == {
        "core_hours": 3.5, "tasks_with_cpu": 4, "failed_core_hours": 1.0, "failed_tasks": 1,
        "failures_by_error_class": {"ProgramFailed": 1.0}}


@pytest.mark.django_db(databases=["default", "postgres"])
def test_the_numbers_are_the_same_on_postgresql(django_user_model):
    user = django_user_model.objects.db_manager("postgres").create_user(username="pat")
    dataset = Dataset.objects.using("postgres").create(name="pg-data")
    campaign = Campaign.objects.using("postgres").create(
        name="pg-cost", dataset=dataset, function="noop", output_key="out", owner=user)
    plant(campaign, using="postgres")
    tasks = Task.objects.using("postgres").filter(campaign=campaign)
    report = accounting._accounting(tasks, names={campaign.pk: campaign}, days=3)
    assert report.total.core_hours == 3.5 and report.total.failed_core_hours == 1.0
    assert [(row.name, row.core_hours) for row in report.hosts] == [
        ("node1", 2.0), ("node2", 1.0), ("old-node", 0.5)]
    assert [(hours, failed) for _, hours, failed in report.days] == [
        (0.0, 0.0), (1.5, 0.0), (2.0, 1.0)]


def test_accounting_splits_by_campaign_host_user_and_day(make_ledger, make_user, owner):
    mine = make_ledger("mine", owner)
    plant(mine)
    theirs = make_ledger("theirs", make_user("tom"))
    Task.objects.create(campaign=theirs, record_id="x", job_id="theirs-x", state="done",
                        host="node9", cpu_s=7200.0, finished_at=timezone.now())
    staff = make_user("sam", staff=True)
    report = accounting.accounting_visible(user=staff, days=7)
    assert report.total.core_hours == 5.5 and report.total.tasks == 5
    assert report.total.failed_core_hours == 1.0 and report.total.failed_tasks == 1
    assert [(row.name, row.core_hours, row.failed_core_hours) for row in report.campaigns] == [
        ("mine", 3.5, 1.0), ("theirs", 2.0, 0.0)]
    assert [(row.name, row.core_hours) for row in report.users] == [("olga", 3.5), ("tom", 2.0)]
    assert [(row.name, row.core_hours, row.tasks) for row in report.hosts] == [
        ("node1", 2.0, 2), ("node9", 2.0, 1), ("node2", 1.0, 1), ("old-node", 0.5, 1)]
    assert [(row.name, row.failed_tasks, row.core_hours) for row in report.failures] == [
        ("ProgramFailed", 1, 1.0)]
    assert len(report.days) == 7
    assert [(hours, failed) for _, hours, failed in report.days[-2:]] == [(1.5, 0.0),
                                                                          (4.0, 1.0)]
    assert report.days[-1][0] == timezone.now().date()
    # A user sees only their own campaigns' costs.
    own = accounting.accounting_visible(user=owner, days=7)
    assert own.total.core_hours == 3.5 and [row.name for row in own.campaigns] == ["mine"]
    assert "node9" not in [row.name for row in own.hosts]


def test_the_accounting_page_shows_the_totals_and_the_chart_data(owner_client, make_ledger,
                                                                 owner):
    plant(make_ledger("mine", owner))
    body = owner_client.get(reverse("dashboard:accounting") + "?days=3").content.decode()
    assert "Total <strong>3.50</strong> core-hours over 4 tasks" in body
    assert '<strong id="total-failed-core-hours">1.00</strong>' in body
    assert "Pools are not recorded on the ledger" in body
    head = '<script id="accounting-data" type="application/json">'
    start = body.index(head) + len(head)
    series = json.loads(body[start:body.index("</script>", start)])
    assert series["core_hours"] == [0.0, 1.5, 2.0] and series["failed_core_hours"] == [0, 0, 1]
    assert series["days"][1] - series["days"][0] == 86400
    assert 'id="accounting-chart"' in body and "/static/vendor/uplot/uPlot.iife.min.js" in body


def test_the_campaign_section_shows_its_cost_and_failures(owner_client, make_ledger, owner):
    campaign = make_ledger("mine", owner)
    plant(campaign)
    body = owner_client.get(reverse("dashboard:campaign-accounting", args=["mine"])
                            ).content.decode()
    assert "<strong>3.50</strong> core-hours over 4 tasks with CPU time" in body
    assert '<strong id="campaign-failed-core-hours">1.00</strong> core-hours (1 task)' in body
    assert "<td>ProgramFailed</td><td class=\"num\">1</td><td class=\"num\">1.00</td>" in body
    assert "<td>node1</td><td class=\"num\">2</td><td class=\"num\">2.00</td>" in body


def test_accounting_costs_the_same_queries_for_a_small_or_large_ledger(owner_client,
                                                                        make_ledger, owner):
    small = make_ledger("small", owner, {"done": 2, "failed": 1})
    large = make_ledger("large", owner, {"done": 300, "failed": 40})
    large.tasks.update(cpu_s=10.0, host="n1")

    def queries(url: str) -> int:
        with CaptureQueriesContext(db_connection) as captured:
            assert owner_client.get(url).status_code == 200
        return len(captured)

    small_url = reverse("dashboard:campaign-accounting", args=[small.name])
    large_url = reverse("dashboard:campaign-accounting", args=[large.name])
    assert queries(small_url) == queries(large_url)
    before = queries(reverse("dashboard:accounting"))
    make_ledger("more", owner, {"done": 50})
    assert queries(reverse("dashboard:accounting")) == before
