"""The per-minute rollup of completions: increments, the recount from the ledger (the migration's
backfill), and the dashboard's series read from it, on SQLite and PostgreSQL."""
from __future__ import annotations

import random
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from campaigns.dashboard.selectors import campaign_series
from campaigns.models import Campaign, Dataset, Task, TaskMinute
from campaigns.services.rollups import task_minutes_add, task_minutes_rebuild, transitions_of

ALIASES = ["default", "postgres"]
NOW = datetime(2026, 11, 26, 10, 30, 20, tzinfo=timezone.utc)
BEFORE, AFTER = ("campaigns", "0005_dashboard_indexes"), ("campaigns", "0006_task_minute")


def campaign_on(alias: str, name: str = "roll") -> Campaign:
    dataset, _ = Dataset.objects.using(alias).get_or_create(name="roll-data")
    return Campaign.objects.using(alias).create(name=name, dataset=dataset, function="noop",
                                                output_key="out")


def task(campaign: Campaign, number: int, state: str, finished_at: datetime | None) -> Task:
    return Task(campaign=campaign, record_id=f"r{number:05d}", job_id=f"c{campaign.pk}-{number}",
                state=state, finished_at=finished_at)


def rows(alias: str, campaign: Campaign) -> list[tuple[str, int, int]]:
    return [(f"{minute:%H:%M}", done, failed) for minute, done, failed in
            TaskMinute.objects.using(alias).filter(campaign_id=campaign.pk).order_by("minute")
            .values_list("minute", "done", "failed")]


def series_of_tasks(tasks: list[Task], span: str, now: datetime) -> dict:
    """The series as the dashboard computed it from Task rows before the rollup."""
    counts = Counter((int(t.finished_at.timestamp()) // 60 * 60, t.state) for t in tasks
                     if t.state in ("done", "failed"))
    last = int(now.timestamp()) // 60 * 60
    first = last - 59 * 60 if span == "hour" else min(minute for minute, _ in counts)
    minutes = list(range(first, last + 60, 60))
    return {"span": span, "minutes": minutes, "done": [counts[(m, "done")] for m in minutes],
            "failed": [counts[(m, "failed")] for m in minutes]}


@pytest.mark.django_db(databases=ALIASES)
@pytest.mark.parametrize("alias", ALIASES)
def test_it_adds_to_the_minutes_already_there(alias):
    campaign = campaign_on(alias)
    at = datetime(2026, 11, 26, 10, 5, 59, 999999, tzinfo=timezone.utc)
    assert task_minutes_add(transitions=[(campaign.pk, at, "done"), (campaign.pk, at, "failed"),
                                         (campaign.pk, at, "pending")], using=alias) == 1
    task_minutes_add(transitions=[(campaign.pk, at.replace(second=0, microsecond=0), "done"),
                                  (campaign.pk, at + timedelta(microseconds=1), "failed")],
                     using=alias)
    assert rows(alias, campaign) == [("10:05", 2, 1), ("10:06", 0, 1)]


@pytest.mark.django_db(databases=ALIASES)
@pytest.mark.parametrize("alias", ALIASES)
def test_the_backfill_counts_done_and_failed_tasks_per_minute(alias):
    campaign, other = campaign_on(alias), campaign_on(alias, "other")
    at = datetime(2026, 11, 26, 9, 59, 0, tzinfo=timezone.utc)
    Task.objects.using(alias).bulk_create([
        task(campaign, 0, "done", at), task(campaign, 1, "done", at + timedelta(seconds=59.5)),
        task(campaign, 2, "failed", at + timedelta(seconds=30)),
        task(campaign, 3, "done", at + timedelta(minutes=2)),
        task(campaign, 4, "cancelled", at), task(campaign, 5, "pending", None),
        task(campaign, 6, "done", None),  # never finished: nothing to count it in
        task(other, 0, "failed", at)])
    TaskMinute.objects.using(alias).create(campaign=campaign, minute=at, done=99)  # stale
    assert task_minutes_rebuild(campaign_ids=[campaign.pk], using=alias) == 2
    assert rows(alias, campaign) == [("09:59", 2, 1), ("10:01", 1, 0)]
    assert rows(alias, other) == []  # not asked for
    assert task_minutes_rebuild(using=alias) == 3  # every campaign; the same counts again
    assert rows(alias, campaign) == [("09:59", 2, 1), ("10:01", 1, 0)]
    assert rows(alias, other) == [("09:59", 0, 1)]


@pytest.mark.django_db(databases=ALIASES)
@pytest.mark.parametrize("alias", ALIASES)
def test_the_series_from_the_rollup_is_the_series_of_the_ledger(alias):
    rng = random.Random(7)
    campaign = campaign_on(alias)
    tasks = []
    for number in range(3000):
        state = rng.choice(["done"] * 6 + ["failed"] * 2 + ["pending", "running", "cancelled"])
        finished = (NOW - timedelta(seconds=rng.choice([rng.uniform(0, 3 * 3600),
                                                        rng.randrange(0, 3 * 3600, 60)]))
                    if state in ("done", "failed", "cancelled") else None)
        tasks.append(task(campaign, number, state, finished))
    Task.objects.using(alias).bulk_create(tasks)
    # Counted batch by batch as the collector does, so that batches meet in the same minutes.
    for start in range(0, len(tasks), 250):
        task_minutes_add(transitions=transitions_of(tasks[start:start + 250]), using=alias)
    incremental = rows(alias, campaign)
    campaign = Campaign.objects.using(alias).get(pk=campaign.pk)
    for span in ("hour", "start"):
        series = campaign_series(campaign=campaign, span=span, now=NOW).as_dict()
        assert series == series_of_tasks(tasks, span, NOW), span
    assert sum(done for _, done, _ in incremental) == sum(t.state == "done" for t in tasks)
    task_minutes_rebuild(campaign_ids=[campaign.pk], using=alias)
    assert rows(alias, campaign) == incremental


@pytest.mark.django_db(transaction=True)
def test_the_migration_backfills_the_ledgers_already_there():
    executor = MigrationExecutor(connection)
    executor.migrate([BEFORE])
    try:
        apps = executor.loader.project_state([BEFORE]).apps
        dataset = apps.get_model("campaigns", "Dataset").objects.create(name="old")
        campaign = apps.get_model("campaigns", "Campaign").objects.create(
            name="old", dataset=dataset, function="noop", output_key="out")
        at = datetime(2026, 11, 26, 8, 0, 30, tzinfo=timezone.utc)
        apps.get_model("campaigns", "Task").objects.bulk_create(
            apps.get_model("campaigns", "Task")(campaign=campaign, record_id=f"r{n}",
                                                job_id=f"old-{n}", state=state, finished_at=at)
            for n, state in enumerate(["done", "done", "failed", "cancelled"]))
        MigrationExecutor(connection).migrate([AFTER])
        assert rows("default", campaign) == [("08:00", 2, 1)]
    finally:
        # Back to the latest schema: later transactional tests (the browser's) use this
        # database, and stopping at AFTER left it without the columns of later migrations.
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())
