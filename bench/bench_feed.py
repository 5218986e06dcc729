"""Feeder rate: `campaign_submit` (the ledger) then `queues_feed` with a window as large as the
campaign and no budget (every job in Redis), on SQLite or PostgreSQL.

    .venv/bin/python bench/bench_feed.py [--database sqlite|postgres] [--records 50000]
                                         [--runs 3] [--profile]

Starts its own redis-server (tests/servers.py) and a fresh database: SQLite in a temporary
directory, or a database `htportal_bench_feed_<pid>` on the PostgreSQL of --postgres-url
(default postgres://postgres@127.0.0.1:5432/postgres; dropped at the end). Records have ~1 kB
inputs (bench/_harness.py). Each run submits a new campaign over the dataset and feeds it with
queues_feed(window=records); jobs/s is records / feed seconds. --profile runs the feed of one
more run under cProfile and prints the 25 functions of most own time.
"""
from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._harness import noop_campaign, record_id, record_input_json, records_insert  # noqa: E402
from tests import servers  # noqa: E402

TARGET_JOBS_S = 20_000
INSERT_BATCH = 50_000


def database_start(kind: str, postgres_url: str) -> tuple:
    """(DATABASE_URL, cleanup) for a fresh database of `kind`."""
    if kind == "sqlite":
        directory = Path(tempfile.mkdtemp(prefix="htportal-bench-feed-"))
        return f"sqlite:///{directory / 'htportal.sqlite3'}", lambda: None
    import psycopg
    name = f"htportal_bench_feed_{os.getpid()}"
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        from django.db import connections
        connections.close_all()
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return postgres_url.rsplit("/", 1)[0] + f"/{name}", drop


def dataset_make(name: str, count: int):
    import random

    from campaigns.models import Dataset
    dataset = Dataset.objects.create(name=name)
    rng = random.Random(1)
    for start in range(0, count, INSERT_BATCH):
        records_insert(dataset_id=dataset.pk, rows=[
            (record_id(number), record_input_json(rng, number))
            for number in range(start, min(count, start + INSERT_BATCH))])
    Dataset.objects.filter(pk=dataset.pk).update(record_count=count)
    return dataset


def feed_once(dataset, conn, records: int, run: int, profile: bool = False) -> tuple:
    """(submit seconds, feed seconds) of one campaign over the dataset."""
    from campaigns.models import Campaign, Task
    from campaigns.services.feeding import queues_feed
    from campaigns.services.submission import campaign_submit

    conn.flushdb()
    Task.objects.all().delete()
    Campaign.objects.all().delete()
    campaign = noop_campaign(f"feed-{run}", dataset, queue="feed")
    started = time.perf_counter()
    report = campaign_submit(campaign=campaign)
    submitted = time.perf_counter()
    profiler = cProfile.Profile() if profile else None
    if profiler:
        profiler.enable()
    fed = queues_feed(connection=conn, window=records, queues=["feed"])
    ended = time.perf_counter()
    if profiler:
        profiler.disable()
        print(f"\nprofile of one feed ({ended - submitted:.2f} s under cProfile), by own time:")
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    if report.added != records or fed.queued != records:
        raise SystemExit(f"run {run}: added {report.added:,}, queued {fed.queued:,}")
    if conn.llen("rq:queue:feed:normal") != records:
        raise SystemExit(f"run {run}: the RQ queue does not hold {records:,} jobs")
    return submitted - started, ended - submitted


def explain_feed_query(dataset, records: int) -> None:
    """EXPLAIN ANALYZE of the feeder's batch query with the (campaign, state, id) index and
    without it (dropped for the second plan, then made again), on a campaign nine tenths done
    (every tenth task pending) beside a second campaign of the same size."""
    from django.db import connection

    from campaigns.models import Campaign, Task
    from campaigns.services.submission import campaign_submit
    Task.objects.all().delete()
    Campaign.objects.all().delete()
    campaign = noop_campaign("explain", dataset, queue="explain")
    campaign_submit(campaign=campaign)
    campaign_submit(campaign=noop_campaign("explain-other", dataset, queue="explain"))
    first = Task.objects.filter(campaign=campaign).order_by("pk").values_list("pk", flat=True)[0]
    Task.objects.filter(campaign=campaign).exclude(pk__in=range(first, first + records, 10)) \
        .update(state=Task.State.DONE)
    query = (Task.objects.filter(campaign=campaign, state=Task.State.PENDING, pk__gt=first)
             .order_by("pk").values_list("pk", "record_id", "job_id", "delivery")[:5000])
    sql, params = query.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE campaigns_task")
        for position, label in enumerate(("with task_campaign_state_id", "without it")):
            cursor.execute(f"EXPLAIN ANALYZE {sql}", params)
            print(f"\nEXPLAIN ANALYZE of the feeder's batch query ({label}):")
            print("\n".join(f"  {row[0]}" for row in cursor.fetchall()))
            if position == 0:
                cursor.execute("DROP INDEX task_campaign_state_id")
        cursor.execute("CREATE INDEX task_campaign_state_id ON campaigns_task "
                       "(campaign_id, state, id)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--postgres-url", default="postgres://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--explain", action="store_true",
                        help="PostgreSQL: EXPLAIN ANALYZE the feeder's query, with and without "
                             "the (campaign, state, id) index")
    args = parser.parse_args()
    url, cleanup = database_start(args.database, args.postgres_url)
    redis = servers.start_redis()
    os.environ.update({"DJANGO_SETTINGS_MODULE": "htportal.settings", "DATABASE_URL": url,
                       "REDIS_URL": redis.url, "HTPORTAL_LOG_LEVEL": "WARNING",
                       "HTPORTAL_VAR_DIR": tempfile.mkdtemp(prefix="htportal-bench-var-")})
    try:
        import django
        from django.core.management import call_command
        django.setup()
        call_command("migrate", verbosity=0)
        from redis import Redis
        conn = Redis.from_url(redis.url)
        dataset = dataset_make("feed", args.records)
        submits, feeds = [], []
        for run in range(args.runs):
            load = os.getloadavg()[0]
            submit_s, feed_s = feed_once(dataset, conn, args.records, run)
            submits.append(submit_s)
            feeds.append(feed_s)
            print(f"  run {run + 1}: submit {submit_s:.2f} s, feed {feed_s:.2f} s "
                  f"({args.records / feed_s:,.0f} jobs/s), load average {load:.2f}", flush=True)
        if args.explain and args.database == "postgres":
            explain_feed_query(dataset, args.records)
        if args.profile:
            feed_once(dataset, conn, args.records, args.runs, profile=True)
        feed = statistics.median(feeds)
        submit = statistics.median(submits)
        print(f"\nfeed: {args.records:,} records of ~1 kB input on {args.database}; median of "
              f"{args.runs} runs; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        print(f"{'':<40}{'seconds':>9}{'min-max':>13}{'per s':>10}")
        print(f"{'campaign_submit (ledger rows)':<40}{submit:>9.2f}"
              f"{f'{min(submits):.2f}-{max(submits):.2f}':>13}{args.records / submit:>10,.0f}")
        print(f"{'queues_feed, window = campaign (jobs)':<40}{feed:>9.2f}"
              f"{f'{min(feeds):.2f}-{max(feeds):.2f}':>13}{args.records / feed:>10,.0f}")
        print(f"{f'target jobs/s >= {TARGET_JOBS_S:,}':<62}"
              f"{'met' if args.records / feed >= TARGET_JOBS_S else 'NOT met':>10}")
    finally:
        redis.stop()
        cleanup()


if __name__ == "__main__":
    main()
