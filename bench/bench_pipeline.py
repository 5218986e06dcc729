"""Pipeline benchmarks: submit rate, end to end rate and durable lag, Redis memory; each beside
plain RQ doing the same work on the same redis-server in the same run.

    .venv/bin/python bench/bench_pipeline.py {submit,e2e,memory,all} [--quick] [sizes...]

Starts its own redis-server (tests/servers.py) and a fresh SQLite database (bench/_harness.py).
Records have ~1 kB inputs (24 atoms, random coordinates) and are inserted with executemany.

submit  `campaign_submit` (the ledger) then `queues_feed` with a window as large as the
        campaign (the Redis jobs), against `Queue.enqueue_many` of the same job arguments
        (record id and input, spec key, reply_to; JSON serializer; Queue.prepare_data), both
        in batches of 5,000. Median of --runs runs.
e2e     N no-op tasks: `manage.py collect` and two `python -m workers.runtime.worker --max-idle
        3` processes against a campaign launched with the default window, until every task is
        `done` in SQLite; again with a window of 5,000. Against two plain rq SimpleWorker
        processes (burst, JSON serializer) running `builtins.dict(**same arguments)`, no
        database. Durable lag per task: the end of the collector batch that committed it (the
        time of its "collected N results" log line, written after the commit and the trim)
        minus the worker's end of the job (rq's `ended_at`, set right after the reply push;
        also from the result document's `finished_at`, which has whole seconds only).
memory  a campaign over all records of a large dataset, submitted, then fed by the collector
        with its default window while two workers (--max-tasks half of --drain each, --max-idle
        60: a turn of the collector over a 1M-task ledger outlasts 3 s) drain --drain tasks;
        Redis INFO used_memory sampled every 0.5 s throughout. Plain RQ: --rq-jobs jobs of the
        same payloads enqueued with enqueue_many, extrapolated linearly to the campaign's size.
"""
from __future__ import annotations

import argparse
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Dict, List, Optional, Tuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._harness import Portal, Ticker, noop_campaign, portal_start, record_inputs  # noqa: E402

BATCH = 5000
MEMORY_BOUND_MB = 64
DURABLE_TARGET_S = 2.0
E2E_WIDE_WINDOW = 5000
PLAIN_RQ_WORKER = (
    "import sys\n"
    "from redis import Redis\n"
    "from rq.serializers import JSONSerializer\n"
    "from rq.worker import SimpleWorker\n"
    "SimpleWorker([sys.argv[2]], connection=Redis.from_url(sys.argv[1]),"
    " serializer=JSONSerializer).work(burst=True)\n"
)
# "2026-11-26 10:00:00,123 INFO campaigns.loops: collector NAME: collected 500 results (500 done"
COLLECTED_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO campaigns\.loops: "
                            r"collector \S+: collected (\d+) results \((\d+) done")
SIZES = {  # full, --quick
    "submit_records": (50_000, 10_000),
    "e2e_tasks": (20_000, 4_000),
    "memory_records": (1_000_000, 100_000),
    "drain": (20_000, 5_000),
    "rq_jobs": (100_000, 20_000),
}


# --- small helpers ----------------------------------------------------------------------------

def chunks(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start:start + size]


def job_kwargs(record_id: str, data: dict, spec_key: str) -> dict:
    from campaigns.pipeline_keys import RESULTS_KEY
    return {"record": {"id": record_id, "input": data}, "spec_key": spec_key,
            "reply_to": RESULTS_KEY}


def rq_enqueue(conn, queue_name: str, function: str, payloads: List[Tuple[str, dict]],
               spec_key: str) -> None:
    """Plain RQ: prepare_data + enqueue_many of the payloads, 5,000 jobs a call."""
    from rq import Queue
    from rq.serializers import JSONSerializer
    queue = Queue(queue_name, connection=conn, serializer=JSONSerializer)
    for part in chunks(payloads, BATCH):
        queue.enqueue_many([Queue.prepare_data(function, kwargs=job_kwargs(rid, data, spec_key))
                            for rid, data in part])


def epoch(value) -> Optional[float]:
    """rq's timestamp (bytes, UTC) as seconds since the epoch."""
    from rq.utils import utcparse
    if not value:
        return None
    when = utcparse(value.decode() if isinstance(value, bytes) else value)
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp()


def job_times(conn, job_ids: List[str]) -> Dict[str, Tuple[Optional[float], Optional[float]]]:
    """job id -> (started_at, ended_at) from rq's job hashes."""
    times = {}
    for part in chunks(job_ids, BATCH):
        with conn.pipeline(transaction=False) as pipe:
            for job_id in part:
                pipe.hmget(f"rq:job:{job_id}", "started_at", "ended_at")
            for job_id, (started, ended) in zip(part, pipe.execute()):
                times[job_id] = (epoch(started), epoch(ended))
    return times


def quantile(values: List[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def start(argv: List[str], env: dict, log: Path) -> subprocess.Popen:
    with open(log, "ab") as handle:
        return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT)


def stop(process: subprocess.Popen, timeout: float = 30) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def worker_argv(portal: Portal, queue: str, name: str, *extra: str, idle: int = 3) -> List[str]:
    return [sys.executable, "-m", "workers.runtime.worker", "--redis-url", portal.url,
            "--max-idle", str(idle), "--name", name, *extra, queue]


def collector_argv() -> List[str]:
    return [sys.executable, "manage.py", "collect", "--name", "bench-collector"]


def done_count(campaign) -> int:
    from campaigns.models import Task
    return Task.objects.filter(campaign=campaign, state=Task.State.DONE).count()


def wait_done(campaign, total: int, *, timeout: float, processes: List[subprocess.Popen],
              what: str, logs: List[Path]) -> None:
    """Poll the ledger until `total` tasks are done; give up (showing the logs' tails) at the
    timeout, or when the workers have exited and nothing moved for 15 s."""
    ticker = Ticker(what, total)
    deadline = time.monotonic() + timeout
    last, moved = -1, time.monotonic()
    while (done := done_count(campaign)) < total:
        if done != last:
            last, moved = done, time.monotonic()
        workers_gone = all(p.poll() is not None for p in processes[1:])
        if time.monotonic() > deadline or (workers_gone and time.monotonic() - moved > 15):
            tails = "\n".join(f"--- {log.name}\n" + "\n".join(
                log.read_text(errors="replace").splitlines()[-8:]) for log in logs if log.exists())
            raise SystemExit(f"{what}: only {done:,}/{total:,} done; stopped waiting\n{tails}")
        ticker.update(done)
        time.sleep(1.0)


# --- 1. submit --------------------------------------------------------------------------------

def _campaigns_delete(pks: List[int]) -> None:
    from campaigns.models import Campaign, Task
    Task.objects.filter(campaign_id__in=pks).delete()
    Campaign.objects.filter(pk__in=pks).delete()
    pks.clear()


def bench_submit(portal: Portal, *, records: int, runs: int) -> None:
    from campaigns.services.feeding import queues_feed
    from campaigns.services.submission import campaign_submit

    print(f"\n[submit] {records:,} records of ~1 kB input, {runs} runs each", flush=True)
    dataset = portal.dataset("submit", records)
    payloads = list(record_inputs(dataset))
    conn = portal.connection()
    ledger, feed, total, plain = [], [], [], []
    campaigns: List[int] = []
    for run in range(runs):
        conn.flushdb()
        # The earlier runs' campaigns go, else this feed would look at them too.
        _campaigns_delete(campaigns)
        campaign = noop_campaign(f"submit-{run}", dataset, queue="submit")
        started = time.perf_counter()
        report = campaign_submit(campaign=campaign)
        submitted = time.perf_counter()
        fed = queues_feed(connection=conn, window=records, queues=["submit"])
        ended = time.perf_counter()
        if report.added != records or fed.queued != records:
            raise SystemExit(f"submit run {run}: added {report.added}, queued {fed.queued}")
        campaigns.append(campaign.pk)
        ledger.append(submitted - started)
        feed.append(ended - submitted)
        total.append(ended - started)
        print(f"  htportal run {run + 1}: submit {submitted - started:.2f} s + feed "
              f"{ended - submitted:.2f} s", flush=True)
    for run in range(runs):
        conn.flushdb()
        started = time.perf_counter()
        rq_enqueue(conn, "submit:normal", "noop", payloads, "htportal:spec:1:1")
        plain.append(time.perf_counter() - started)
        if conn.llen("rq:queue:submit:normal") != records:
            raise SystemExit("plain rq: not every job was queued")
        print(f"  plain rq run {run + 1}: enqueue_many {plain[-1]:.2f} s", flush=True)
    conn.flushdb()
    # Their queued tasks have no job in Redis any more: the collector of the next bench would
    # reconcile them all back to pending.
    _campaigns_delete(campaigns)

    def row(label: str, seconds: List[float], rate: bool = True) -> None:
        median = statistics.median(seconds)
        spread = f"{min(seconds):.2f}-{max(seconds):.2f}"
        print(f"{label:<44}{median:>9.2f}{spread:>13}"
              + (f"{records / median:>12,.0f}" if rate else f"{'':>12}"))

    print(f"\nsubmit: {records:,} records of ~1 kB input; median of {runs} runs")
    print(f"{'':<44}{'seconds':>9}{'min-max':>13}{'records/s':>12}")
    row("htportal campaign_submit (ledger rows)", ledger)
    row("htportal queues_feed, window = campaign", feed)
    row("htportal submit + feed (selected, ledgered, queued)", total)
    row("plain rq prepare_data + enqueue_many", plain)
    ratio = statistics.median(plain) / statistics.median(total)
    print(f"{'ratio htportal / plain rq (target >= 1.00)':<66}{ratio:>12.2f}")


# --- 2. end to end ----------------------------------------------------------------------------

def collector_batches(log: Path) -> List[Tuple[float, int]]:
    """(epoch time of the line, done) of each collected batch in the collector's log (UTC)."""
    batches = []
    for line in log.read_text(errors="replace").splitlines():
        match = COLLECTED_LINE.match(line)
        if match:
            when = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").replace(
                tzinfo=timezone.utc)
            batches.append((when.timestamp(), int(match.group(3))))
    return batches


def durable_times(tasks: List[tuple], log: Path) -> Tuple[Dict[str, float], str]:
    """job id -> when its batch was committed, and how that was found.

    Every task of one batch has the same updated_at (the collector's clock before the write);
    the batches in updated_at order are the log's "collected" lines in order.
    """
    groups: Dict[datetime, List[str]] = {}
    for job_id, _, updated_at in tasks:
        groups.setdefault(updated_at, []).append(job_id)
    ordered = [groups[key] for key in sorted(groups)]
    batches = [batch for batch in collector_batches(log) if batch[1] > 0]
    if [len(group) for group in ordered] == [done for _, done in batches]:
        return ({job_id: when for group, (when, _) in zip(ordered, batches) for job_id in group},
                "collector log line after each commit")
    # Fallback: the collector's clock just before the batch's writes (commit a little later).
    return ({job_id: updated_at.timestamp() for job_id, _, updated_at in tasks},
            "Task.updated_at (before the commit: log lines did not match the batches)")


def htportal_e2e(portal: Portal, dataset, *, tasks: int, window: Optional[int],
                 label: str) -> dict:
    from campaigns.models import Task
    from campaigns.services.feeding import queues_feed
    from campaigns.services.submission import campaign_submit

    conn = portal.connection()
    conn.flushdb()
    queue = f"e2e{window or 0}"
    campaign = noop_campaign(queue, dataset, queue=queue)
    campaign_submit(campaign=campaign)
    # As campaign_launch does (it takes settings.FEED_WINDOW): the first window, at once.
    queues_feed(connection=conn, window=window, queues=[queue])
    env = portal.env(**({"HTPORTAL_FEED_WINDOW": str(window)} if window else {}))
    log = portal.directory / f"collector-{queue}.log"
    logs = [log] + [portal.directory / f"worker-{queue}-{i}.log" for i in range(2)]
    began = time.time()
    processes = [start(collector_argv(), env, log)] + [
        start(worker_argv(portal, queue, f"{queue}-w{i}"), env, logs[1 + i]) for i in range(2)]
    try:
        wait_done(campaign, tasks, timeout=max(300.0, tasks / 20), processes=processes,
                  what=f"{label}: done", logs=logs)
    finally:
        stop(processes[0])
        for worker in processes[1:]:
            try:
                worker.wait(30)  # --max-idle 3
            except subprocess.TimeoutExpired:
                stop(worker)
    # The collector deletes rq's job hashes once their tasks are committed, so the worker's
    # times come from the result document: Task.finished_at is its finished_at (ms), and its
    # start is finished_at - wall_s.
    rows = list(Task.objects.filter(campaign=campaign, state=Task.State.DONE)
                .values_list("job_id", "finished_at", "updated_at", "wall_s"))
    durable, how = durable_times([row[:3] for row in rows], log)
    lag_document = [durable[job_id] - finished.timestamp() for job_id, finished, _, _ in rows]
    last = max(durable.values())
    first_start = min(finished.timestamp() - (wall or 0) for _, finished, _, wall in rows)
    return {"label": label, "wall": last - began, "from_start": last - first_start,
            "lag_document": lag_document, "how": how,
            "batches": len(collector_batches(log))}


def plain_rq_e2e(portal: Portal, payloads: List[Tuple[str, dict]]) -> dict:
    conn = portal.connection()
    conn.flushdb()
    rq_enqueue(conn, "e2e-rq", "builtins.dict", payloads, "htportal:spec:1:1")
    began = time.time()
    workers = [start([sys.executable, "-c", PLAIN_RQ_WORKER, portal.url, "e2e-rq"],
                     portal.env(), portal.directory / f"rq-worker-{i}.log") for i in range(2)]
    for worker in workers:
        if worker.wait(600) != 0:
            raise SystemExit(f"a plain rq worker exited with {worker.returncode}")
    job_ids = [m.decode() for m in conn.zrange("rq:finished:e2e-rq", 0, -1)]
    if len(job_ids) != len(payloads):
        raise SystemExit(f"plain rq: {len(job_ids)} of {len(payloads)} jobs finished")
    times = job_times(conn, job_ids)
    last = max(ended for _, ended in times.values())
    return {"label": "plain rq SimpleWorker, no database", "wall": last - began,
            "from_start": last - min(started for started, _ in times.values())}


def bench_e2e(portal: Portal, *, tasks: int) -> None:
    from django.conf import settings

    print(f"\n[e2e] {tasks:,} no-op tasks, 2 worker processes", flush=True)
    dataset = portal.dataset("e2e", tasks)
    payloads = list(record_inputs(dataset))
    results = [
        htportal_e2e(portal, dataset, tasks=tasks, window=None,
                     label=f"htportal, default window ({settings.FEED_MIN_WINDOW})"),
        htportal_e2e(portal, dataset, tasks=tasks, window=E2E_WIDE_WINDOW,
                     label=f"htportal, HTPORTAL_FEED_WINDOW={E2E_WIDE_WINDOW}"),
    ]
    plain = plain_rq_e2e(portal, payloads)
    print(f"\nend to end: {tasks:,} no-op tasks (~1 kB inputs), 2 worker processes; htportal "
          "until every task is done in SQLite")
    print(f"{'':<44}{'tasks/s':>9}{'tasks/s':>13}{'wall s':>9}")
    print(f"{'':<44}{'(wall)':>9}{'(1st start)':>13}")
    for result in results + [plain]:
        print(f"{result['label']:<44}{tasks / result['wall']:>9,.0f}"
              f"{tasks / result['from_start']:>13,.0f}{result['wall']:>9.1f}")
    for result in results:
        print(f"ratio {result['label']} / plain rq (target >= 1.00): "
              f"wall {plain['wall'] / result['wall']:.2f}, "
              f"from 1st start {plain['from_start'] / result['from_start']:.2f}")
    print(f"\ndurable lag per task, seconds (target p99 <= {DURABLE_TARGET_S:.0f} s)")
    print(f"{'':<58}{'p50':>7}{'p99':>7}{'max':>7}")
    for result in results:
        for key, what in (("lag_document", "from the result's finished_at"),):
            lags = result[key]
            print(f"{result['label'][10:] + ', ' + what:<58}{quantile(lags, 0.5):>7.2f}"
                  f"{quantile(lags, 0.99):>7.2f}{max(lags):>7.2f}")
    for result in results:
        print(f"({result['label']}: {result['batches']} batches; committed at: {result['how']})")


# --- 3. memory --------------------------------------------------------------------------------

class MemorySampler(threading.Thread):
    """Redis INFO used_memory every `every` seconds, with the phase it was taken in."""

    def __init__(self, portal: Portal, every: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.conn = portal.connection()
        self.every = every
        self.phase = "idle"
        self.samples: List[Tuple[float, str, int]] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            self.samples.append((time.monotonic(), self.phase,
                                 self.conn.info("memory")["used_memory"]))
            self.stopping.wait(self.every)

    def of(self, phase: str) -> List[int]:
        return [used for _, p, used in self.samples if p == phase]


def bench_memory(portal: Portal, *, records: int, drain: int, rq_jobs: int) -> None:
    from campaigns.models import Task
    from campaigns.pipeline_keys import RESULTS_KEY
    from campaigns.services.lifecycle import campaign_launch

    print(f"\n[memory] campaign of {records:,} records; {drain:,} tasks drained", flush=True)
    started = time.monotonic()
    dataset = portal.dataset("memory", records)
    inserted = time.monotonic() - started
    conn = portal.connection()
    conn.flushdb()
    sampler = MemorySampler(portal)
    sampler.start()
    time.sleep(2.0)
    idle = statistics.median(sampler.of("idle"))
    sampler.phase = "submit"
    campaign = noop_campaign("memory", dataset, queue="mem")
    started = time.monotonic()
    report = campaign_launch(campaign=campaign, connection=conn)
    submitted = time.monotonic() - started
    print(f"  submitted {report.added:,} tasks in {submitted:.1f} s, {report.queued:,} queued",
          flush=True)
    sampler.phase = "drain"
    env = portal.env()
    logs = [portal.directory / "collector-mem.log"] + [
        portal.directory / f"worker-mem-{i}.log" for i in range(2)]
    processes = [start(collector_argv(), env, logs[0])] + [
        # --max-idle 60, not 3: with a large ledger the collector's turn (feed + batch) takes
        # longer than 3 s, and workers that left would end the drain early.
        start(worker_argv(portal, "mem", f"mem-w{i}", "--max-tasks", str(drain // 2), idle=60),
              env, logs[1 + i]) for i in range(2)]
    started = time.monotonic()
    try:
        wait_done(campaign, drain // 2 * 2, timeout=max(300.0, drain / 20),
                  processes=processes, what="memory: done", logs=logs)
        for worker in processes[1:]:
            worker.wait(30)
        deadline = time.monotonic() + 30
        while conn.llen(RESULTS_KEY) and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        for process in processes:
            stop(process)
        if sys.exc_info()[0] is not None:
            sampler.stopping.set()
    drained = time.monotonic() - started
    sampler.phase = "after"
    time.sleep(2.0)
    sampler.stopping.set()
    sampler.join()
    during = sampler.of("submit") + sampler.of("drain")
    peak = max(during) - idle
    end = statistics.median(sampler.of("after")) - idle
    done = Task.objects.filter(campaign=campaign, state=Task.State.DONE).count()
    keys = conn.dbsize()
    finished_jobs = conn.zcard("rq:finished:mem:normal")
    sample_job = conn.zrange("rq:finished:mem:normal", 0, 0)
    per_job = per_result = None
    if sample_job:
        job_id = sample_job[0].decode()
        per_job = conn.memory_usage(f"rq:job:{job_id}")
        per_result = conn.memory_usage(f"rq:results:{job_id}")

    # Plain RQ: every job of the campaign in Redis at once, as enqueue_many leaves them.
    conn.flushdb()
    time.sleep(1.0)
    rq_idle = conn.info("memory")["used_memory"]
    payloads = list(record_inputs(dataset, limit=rq_jobs))
    started = time.monotonic()
    rq_enqueue(conn, "mem-rq", "noop", payloads, "htportal:spec:1:1")
    enqueued = time.monotonic() - started
    rq_used = conn.info("memory")["used_memory"] - rq_idle
    conn.flushdb()
    scale = records / len(payloads)
    mb = 1024 * 1024

    print(f"\nmemory: campaign of {records:,} records (~1 kB inputs), inserted in "
          f"{inserted:.1f} s, submitted in {submitted:.1f} s; the collector fed it with the "
          f"default window while 2 workers drained {done:,} tasks in {drained:.1f} s; "
          f"used_memory every 0.5 s ({len(sampler.samples)} samples)")
    print(f"{'':<62}{'MB':>10}")
    print(f"{'redis idle (used_memory)':<62}{idle / mb:>10.2f}")
    print(f"{'htportal peak above idle (submit + feed + drain)':<62}{peak / mb:>10.2f}")
    print(f"{'  bound':<62}{MEMORY_BOUND_MB:>10.2f}   "
          + ("within" if peak <= MEMORY_BOUND_MB * mb else
             f"OVER by {(peak - MEMORY_BOUND_MB * mb) / mb:.2f} MB"))
    print(f"{'htportal above idle after the drain':<62}{end / mb:>10.2f}")
    print(f"{f'plain rq, {len(payloads):,} jobs enqueued (measured)':<62}{rq_used / mb:>10.2f}"
          f"   ({rq_used / len(payloads):,.0f} B/job, {enqueued:.1f} s)")
    label = (f"plain rq, {records:,} jobs ("
             + ("measured)" if scale == 1 else f"extrapolated linearly x{scale:g})"))
    print(f"{label:<62}{rq_used * scale / mb:>10.2f}")
    print(f"(after the drain: {keys:,} keys in Redis, {finished_jobs:,} finished job hashes kept "
          f"{'' if per_job is None else f'at {per_job:,} B each'}"
          f"{'' if per_result is None else f' + rq result {per_result:,} B'})")


# --- main -------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("submit", "e2e", "memory", "all"))
    parser.add_argument("--quick", action="store_true", help="smaller sizes (about a fifth)")
    parser.add_argument("--submit-records", type=int)
    parser.add_argument("--runs", type=int, default=3, help="submit runs each (default 3)")
    parser.add_argument("--e2e-tasks", type=int)
    parser.add_argument("--memory-records", type=int)
    parser.add_argument("--drain", type=int, help="tasks the memory bench drains")
    parser.add_argument("--rq-jobs", type=int, help="plain rq jobs the memory bench enqueues")
    parser.add_argument("--keep", action="store_true",
                        help="keep the database and the processes' logs (path printed)")
    args = parser.parse_args()
    size = {name: getattr(args, name) or values[1 if args.quick else 0]
            for name, values in SIZES.items()}
    began = time.monotonic()
    portal = portal_start()
    try:
        conn = portal.connection()
        import rq
        print(f"bench_pipeline: redis-server {conn.info('server')['redis_version']}, rq "
              f"{rq.__version__}, Python {sys.version.split()[0]}, SQLite in {portal.directory}",
              flush=True)
        if args.what in ("submit", "all"):
            bench_submit(portal, records=size["submit_records"], runs=args.runs)
        if args.what in ("e2e", "all"):
            bench_e2e(portal, tasks=size["e2e_tasks"])
        if args.what in ("memory", "all"):
            bench_memory(portal, records=size["memory_records"], drain=size["drain"],
                         rq_jobs=size["rq_jobs"])
    finally:
        portal.stop(keep=args.keep)
    if args.keep:
        print(f"kept: {portal.directory}")
    print(f"\n(total {time.monotonic() - began:.0f} s)")


if __name__ == "__main__":
    main()
