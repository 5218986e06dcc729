"""Dashboard page times over a large task ledger in SQLite.

    .venv/bin/python bench/bench_dashboard.py [--tasks 1000000] [--runs 7] [--keep DIR]

Builds a fresh SQLite database (migrations, then Task rows inserted with executemany in
transactions of 50,000) holding four campaigns: a running one with most of the tasks, a
finished one, a running docking one and a fresh one still pending; done and failed tasks
finished over the last six hours, counted into the per-minute rollup (TaskMinute) as the
migration's backfill does. Starts its own redis-server (tests/servers.py) with a few
registered workers. Then GETs each dashboard page with the test client as a staff user
(`--runs` times, after one warm-up) and prints the median and max per page.
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

INSERT_BATCH = 50_000
BUDGET_MS = 300
# name: (share of the tasks, campaign state, {task state: share of the campaign's tasks})
CAMPAIGNS = {
    "dft-wb97mv": (0.60, "running", {"done": 0.55, "failed": 0.03, "running": 0.002,
                                     "queued": 0.005, "pending": 0.413}),
    "xtb-screen": (0.25, "done", {"done": 0.97, "failed": 0.03}),
    "vina-dock": (0.10, "running", {"done": 0.30, "failed": 0.01, "running": 0.002,
                                    "queued": 0.005, "pending": 0.683}),
    "orca-fresh": (0.05, "running", {"pending": 1.0}),
}
ERRORS = [("ProgramFailed", "orca: exit code 1 (SCF not converged)"),
          ("ProgramTimeout", "orca: still running after 3600 s"),
          ("ParserError", "orca.total_energy: no FINAL SINGLE POINT ENERGY in stdout"),
          ("WorkerLost", "worker node17 stopped heartbeating")]
SPREAD_S = 6 * 3600


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--keep", type=Path, help="build the database in DIR and keep it")
    args = parser.parse_args()

    directory = args.keep or Path(tempfile.mkdtemp(prefix="htportal-bench-dashboard-"))
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob("bench.sqlite3*"):
        old.unlink()  # always a fresh database
    from tests import servers
    redis_server = servers.start_redis()
    os.environ.update({
        "HTPORTAL_VAR_DIR": str(directory), "REDIS_URL": redis_server.url,
        "DATABASE_URL": f"sqlite:///{directory / 'bench.sqlite3'}",
        "DJANGO_SETTINGS_MODULE": "htportal.settings", "HTPORTAL_LOG_LEVEL": "WARNING",
    })
    import django
    django.setup()
    try:
        user, campaigns = build(tasks=args.tasks)
        workers_register(redis_server.url)
        print_table(time_pages(user=user, campaigns=campaigns, runs=args.runs), args.tasks)
    finally:
        redis_server.stop()


def build(*, tasks: int):
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection, transaction

    from campaigns.models import ArgSet, Campaign, Dataset, Task
    from campaigns.services.rollups import task_minutes_rebuild

    started = time.perf_counter()
    call_command("migrate", verbosity=0)
    user = get_user_model().objects.create_superuser(username="bench", password="bench-pw")
    dataset = Dataset.objects.create(name="bench")
    campaigns = []
    for name, (share, state, _) in CAMPAIGNS.items():
        campaign = Campaign.objects.create(name=name, dataset=dataset, function="noop",
                                           output_key="out", queue=name.split("-")[0],
                                           state=state, owner=user)
        ArgSet.objects.create(campaign=campaign, name="a", parameters={})
        campaigns.append(campaign)
    columns = ["campaign_id", "record_id", "job_id", "state", "attempts", "error_class",
               "error_message", "output_tail", "worker", "wall_s", "cpu_s", "created_at",
               "queued_at", "finished_at", "updated_at",
               # later ledger columns, at what a delivered task holds
               "delivery", "host", "worker_faults", "lost"]
    sql = (f"INSERT INTO {Task._meta.db_table} ({', '.join(columns)}) "
           f"VALUES ({', '.join(['%s'] * len(columns))})")
    rows = ((*row, 1, "", 0, 0) for row in task_rows(campaigns=campaigns, tasks=tasks))
    inserted = 0
    while batch := [row for _, row in zip(range(INSERT_BATCH), rows)]:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.executemany(sql, batch)
        inserted += len(batch)
    rollup_started = time.perf_counter()
    minutes = task_minutes_rebuild()  # the collector's per-minute rollup, as the migration fills it
    rollup_s = time.perf_counter() - rollup_started
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    print(f"built a ledger of {inserted:,} tasks in {time.perf_counter() - started:.1f}s "
          f"({connection.settings_dict['NAME']}), its rollup of {minutes:,} minutes in "
          f"{rollup_s:.1f}s")
    return user, campaigns


def task_rows(*, campaigns, tasks: int):
    """Task rows as tuples, states in the shares of CAMPAIGNS, shuffled within each campaign."""
    rng = random.Random(42)
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    stamp = now.strftime("%Y-%m-%d %H:%M:%S.%f")
    for campaign, (share, _, states) in zip(campaigns, CAMPAIGNS.values()):
        count = int(tasks * share)
        pool = [state for state, part in states.items() for _ in range(round(count * part))]
        pool = (pool + ["pending"] * count)[:count]
        rng.shuffle(pool)
        for number, state in enumerate(pool):
            record_id = f"r{number:08d}"
            finished = queued = None
            error = ("", "", "")
            if state in ("done", "failed"):
                finished = (now - timedelta(seconds=rng.random() * SPREAD_S)).strftime(
                    "%Y-%m-%d %H:%M:%S.%f")
                queued = finished
            if state == "failed":
                error_class, message = ERRORS[number % len(ERRORS)]
                error = (error_class, message, f"... last lines of output of {record_id}\n" * 5)
            yield (campaign.pk, record_id, f"c{campaign.pk}-v1-{number:024x}", state,
                   1 if state != "pending" else 0, *error, "node1.1.abc" if finished else "",
                   None, None, stamp, queued, finished, stamp)


def workers_register(url: str) -> None:
    from redis import Redis
    from rq import Worker

    connection = Redis.from_url(url)
    for number in range(8):
        queue = ("dft", "vina")[number % 2]
        Worker([f"{queue}:high", f"{queue}:normal", f"{queue}:low"], connection=connection,
               name=f"node{number}.{1000 + number}.bench").register_birth()


def time_pages(*, user, campaigns, runs: int) -> list[tuple[str, list[float]]]:
    from django.test import Client
    from django.urls import reverse

    from campaigns.models import Task

    client = Client(HTTP_HOST="localhost")
    client.force_login(user)
    big = campaigns[0]
    failed = Task.objects.filter(campaign=big, state="failed").values_list("pk", flat=True)[0]
    pages = [
        ("campaigns", reverse("dashboard:campaigns")),
        ("campaigns rows (htmx)", reverse("dashboard:campaigns-partial")),
        (f"campaign {big.name}", reverse("dashboard:campaign", args=[big.pk])),
        ("campaign, since start", reverse("dashboard:campaign", args=[big.pk]) + "?span=start"),
        ("campaign status (htmx)", reverse("dashboard:campaign-status", args=[big.pk])),
        ("campaign series (htmx)", reverse("dashboard:campaign-series", args=[big.pk])),
        ("failure details", reverse("dashboard:task", args=[big.pk, failed])),
        ("workers", reverse("dashboard:workers")),
    ]
    timings = []
    for label, url in pages:
        response = client.get(url)  # warm-up
        assert response.status_code == 200, (url, response.status_code)
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            client.get(url)
            times.append((time.perf_counter() - started) * 1000)
        timings.append((f"{label} ({url})", times))
    return timings


def print_table(timings: list[tuple[str, list[float]]], tasks: int) -> None:
    width = max(len(label) for label, _ in timings)
    print(f"\ndashboard pages over {tasks:,} tasks in SQLite ({len(timings[0][1])} runs each)")
    print(f"{'page':<{width}}  {'median ms':>9}  {'max ms':>7}  budget {BUDGET_MS} ms")
    for label, times in timings:
        verdict = "ok" if max(times) < BUDGET_MS else "SLOW"
        print(f"{label:<{width}}  {statistics.median(times):>9.1f}  {max(times):>7.1f}  {verdict}")


if __name__ == "__main__":
    main()
