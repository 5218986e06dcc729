"""htportal beside Parsl (HighThroughputExecutor) and plain RQ (SimpleWorker) on the same work,
in one run, with 2 workers each.

    .venv/bin/pip install -r requirements-bench.txt      # parsl
    .venv/bin/python bench/bench_peers.py [--xtb-tasks 99] [--noop-tasks 20000]

xtb     the demo molecules (data/demo, 99) as GFN2-xTB --grad single points, from submit to
        every result durable. htportal: the demo campaign (examples/xtb_gfn2.yaml) launched,
        2 workers and `manage.py collect`, until every task is done in SQLite. Parsl: a
        python_app running the same xtb command in a fresh directory per task; each result
        is written to a SQLite table as its future completes (one commit at the end). Plain
        RQ: 2 SimpleWorkers running the same function; results stay in Redis. Also htportal's
        per-task overhead beyond xtb's own run time.
noop    N no-op tasks with ~1 kB inputs (bench/_harness.py), results durable: htportal as
        above; Parsl writing each result to SQLite, a commit per 500; plain RQ, no database.

Start-up (processes started until 2 workers are connected or registered) is measured on its
own; the table gives tasks/s with it and without it. Starts its own redis-server and SQLite
database (bench/_harness.py); Parsl's run directory is a temporary directory.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._harness import Portal, noop_campaign, portal_start, record_inputs  # noqa: E402
from bench.bench_pipeline import collector_argv, start, stop, worker_argv  # noqa: E402

WORKERS = 2
COMMIT_EVERY = 500
STARTUP_TIMEOUT_S = 120.0
RQ_WORKER = (
    "import sys\n"
    "from redis import Redis\n"
    "from rq.serializers import JSONSerializer\n"
    "from rq.worker import SimpleWorker\n"
    "SimpleWorker([sys.argv[2]], connection=Redis.from_url(sys.argv[1]), name=sys.argv[3],"
    " serializer=JSONSerializer).work(burst=False, with_scheduler=False)\n"
)


@dataclass
class Row:
    label: str
    tasks: int
    startup_s: float
    run_s: float
    load: float  # 1-minute load average when the run ended
    note: str = ""

    @property
    def rate(self) -> float:
        return self.tasks / self.run_s

    @property
    def rate_with_startup(self) -> float:
        return self.tasks / (self.run_s + self.startup_s)


def load_average() -> float:
    return os.getloadavg()[0]


def wait_for(done: Callable[[], bool], *, timeout: float, what: str,
             poll: float = 0.2) -> float:
    """Poll until done(); the monotonic time it was seen; SystemExit after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise SystemExit(f"{what}: not after {timeout:.0f} s; stopped waiting")
        time.sleep(poll)
    return time.monotonic()


# --- htportal ---------------------------------------------------------------------------------

def htportal_run(portal: Portal, campaign, *, tasks: int, label: str, timeout: float,
                 limit: Optional[int] = None) -> Row:
    """Collector and 2 workers up, then campaign_launch until `tasks` are done in SQLite."""
    from campaigns.locks import COLLECTOR_LOCK_KEY
    from campaigns.models import Task
    from campaigns.services.feeding import live_workers_count
    from campaigns.services.lifecycle import campaign_launch

    conn = portal.connection()
    env = portal.env()
    name = campaign.queue
    logs = [portal.directory / f"{name}-collector.log"] + [
        portal.directory / f"{name}-worker-{i}.log" for i in range(WORKERS)]
    began = time.monotonic()
    # --max-idle longer than any run: a worker never leaves while the feeder is behind.
    processes = [start(collector_argv(), env, logs[0])] + [
        start(worker_argv(portal, name, f"{name}-w{i}", idle=int(timeout) + 600), env, logs[1 + i])
        for i in range(WORKERS)]
    try:
        # Up: the workers registered and the collector at its loop (holding its lock).
        up = wait_for(lambda: live_workers_count(connection=conn, queue=name) >= WORKERS
                      and conn.exists(COLLECTOR_LOCK_KEY),
                      timeout=STARTUP_TIMEOUT_S, what=f"{label}: workers and collector up")
        submitted = time.monotonic()
        campaign_launch(campaign=campaign, connection=conn, limit=limit)
        finished = Task.objects.filter(campaign=campaign, state__in=("done", "failed"))

        def all_done() -> bool:
            if any(p.poll() is not None for p in processes):
                raise SystemExit(f"{label}: a process left early; see {portal.directory}")
            return finished.count() >= tasks
        ended = wait_for(all_done, timeout=timeout, what=f"{label}: {tasks:,} tasks done")
    finally:
        for process in processes:
            stop(process)
    failed = Task.objects.filter(campaign=campaign, state="failed").count()
    if failed:
        raise SystemExit(f"{label}: {failed} tasks failed; see {portal.directory}")
    return Row(label, tasks, up - began, ended - submitted, load_average(),
               "until done in SQLite")


# --- Parsl ------------------------------------------------------------------------------------

class Parsl:
    """A HighThroughputExecutor of 2 workers on this machine (RECIPES.md section 6)."""

    def __init__(self, run_dir: Path) -> None:
        bindir = str(Path(sys.executable).parent)  # interchange.py, process_worker_pool.py
        os.environ["PATH"] = f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"
        os.environ["PYTHONPATH"] = f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
        import parsl
        from parsl.config import Config
        from parsl.executors import HighThroughputExecutor
        from parsl.providers import LocalProvider
        self.parsl = parsl
        self.executor = HighThroughputExecutor(
            label="htex", max_workers_per_node=WORKERS, address="127.0.0.1",
            provider=LocalProvider(init_blocks=1, min_blocks=1, max_blocks=1))
        began = time.monotonic()
        logging.getLogger("parsl").propagate = False  # its own parsl.log in run_dir
        self.dfk = parsl.load(Config(executors=[self.executor], strategy="none",
                                     run_dir=str(run_dir)))
        up = wait_for(lambda: sum(m.get("worker_count", 0) for m in
                                  self.executor.connected_managers()) >= WORKERS,
                      timeout=STARTUP_TIMEOUT_S, what="parsl: workers connected")
        self.startup_s = up - began

    def run(self, function: Callable, records: List[dict], *, label: str, database: Path,
            timeout: float) -> Tuple[Row, List[dict]]:
        """Submit one app per record; write each result to SQLite as it completes."""
        from parsl import python_app
        app = python_app(function, executors=["htex"])
        db = sqlite3.connect(database)
        db.execute("CREATE TABLE IF NOT EXISTS results (id TEXT PRIMARY KEY, result TEXT)")
        db.execute("DELETE FROM results")
        db.commit()
        results = []
        submitted = time.monotonic()
        futures = [app(record) for record in records]
        for number, future in enumerate(as_completed(futures, timeout=timeout), start=1):
            result = future.result()
            results.append(result)
            db.execute("INSERT INTO results VALUES (?, ?)", (result["id"], json.dumps(result)))
            if number % COMMIT_EVERY == 0:
                db.commit()
        db.commit()
        ended = time.monotonic()
        written = db.execute("SELECT count(*) FROM results").fetchone()[0]
        db.close()
        if written != len(records):
            raise SystemExit(f"{label}: {written} of {len(records)} results in SQLite")
        return (Row(label, len(records), self.startup_s, ended - submitted, load_average(),
                    f"each result to SQLite, commit per {COMMIT_EVERY}"), results)

    def stop(self) -> None:
        self.dfk.cleanup()


# --- plain RQ ---------------------------------------------------------------------------------

def rq_run(portal: Portal, function: str, records: List[dict], *, queue: str, label: str,
           timeout: float) -> Tuple[Row, List[dict]]:
    """2 SimpleWorkers registered, then enqueue_many of one job per record until all finished."""
    from rq import Queue, Worker
    from rq.job import Job
    from rq.serializers import JSONSerializer

    conn = portal.connection()
    rq_queue = Queue(queue, connection=conn, serializer=JSONSerializer)
    began = time.monotonic()
    workers = [start([sys.executable, "-c", RQ_WORKER, portal.url, queue, f"{queue}-{i}"],
                     portal.env(), portal.directory / f"{queue}-rq-{i}.log")
               for i in range(WORKERS)]
    try:
        up = wait_for(lambda: Worker.count(queue=rq_queue) >= WORKERS,
                      timeout=STARTUP_TIMEOUT_S, what=f"{label}: workers registered")
        submitted = time.monotonic()
        job_ids = []
        for first in range(0, len(records), COMMIT_EVERY):
            job_ids += [job.id for job in rq_queue.enqueue_many([
                Queue.prepare_data(function, args=[record], result_ttl=3600)
                for record in records[first:first + COMMIT_EVERY]])]

        def all_finished() -> bool:
            if any(w.poll() is not None for w in workers):
                raise SystemExit(f"{label}: a worker left early; see {portal.directory}")
            return (rq_queue.finished_job_registry.count
                    + rq_queue.failed_job_registry.count) >= len(records)
        ended = wait_for(all_finished, timeout=timeout, what=f"{label}: jobs finished")
    finally:
        for worker in workers:
            stop(worker)
    if rq_queue.failed_job_registry.count:
        raise SystemExit(f"{label}: {rq_queue.failed_job_registry.count} jobs failed")
    results = [job.return_value() for job in
               Job.fetch_many(job_ids, connection=conn, serializer=JSONSerializer)]
    return (Row(label, len(records), up - began, ended - submitted, load_average(),
                "results in Redis, no database"), results)


# --- the benches ------------------------------------------------------------------------------

def xtb_campaign(*, dataset):
    from campaigns.services.definitions import campaign_definition_parse, campaign_import
    path = ROOT / "examples" / "xtb_gfn2.yaml"
    definition = campaign_definition_parse(text=path.read_text(), source=path.name,
                                           base_dir=path.parent)
    return campaign_import(definition=definition, dataset_name=dataset.name)


def bench_xtb(portal: Portal, parsl: Parsl, *, tasks: int) -> Tuple[List[Row], List[str]]:
    from campaigns.models import Task
    from campaigns.services.records import demo_load

    print(f"\n[xtb] {tasks} GFN2 --grad single points of data/demo, {WORKERS} workers",
          flush=True)
    dataset, _ = demo_load()
    records = [{"id": rid, "input": data} for rid, data in record_inputs(dataset, limit=tasks)]
    campaign = xtb_campaign(dataset=dataset)
    htportal = htportal_run(portal, campaign, tasks=tasks, limit=tasks, timeout=1800,
                            label="htportal (submit, workers, collector)")
    print(f"  {htportal.label}: {htportal.run_s:.1f} s", flush=True)
    from bench._peer_tasks import xtb_grad
    parsl_row, parsl_results = parsl.run(xtb_grad, records, label="Parsl HTEX python_app",
                                         database=portal.directory / "parsl-xtb.sqlite3",
                                         timeout=1800)
    parsl_row.note = "each result to SQLite, one commit"
    print(f"  {parsl_row.label}: {parsl_row.run_s:.1f} s", flush=True)
    rq_row, rq_results = rq_run(portal, "bench._peer_tasks.xtb_grad", records, queue="peer-xtb",
                                label="plain RQ SimpleWorker", timeout=1800)
    print(f"  {rq_row.label}: {rq_row.run_s:.1f} s", flush=True)
    for name, results in (("parsl", parsl_results), ("rq", rq_results)):
        bad = [r["id"] for r in results if r["returncode"] != 0 or not r["energy"]]
        if bad:
            raise SystemExit(f"{name}: xtb failed on {', '.join(bad[:5])}")

    # Overhead beyond xtb's own run time: the worker's wall_s of a task (scratch, input, xtb,
    # parsing) minus xtb's time on the same molecule in the peers' runs (their mean).
    program: Dict[str, List[float]] = {}
    for result in parsl_results + rq_results:
        program.setdefault(result["id"], []).append(result["xtb_s"])
    xtb_s = {rid: statistics.mean(times) for rid, times in program.items()}
    walls = dict(Task.objects.filter(campaign=campaign, state="done")
                 .values_list("record_id", "wall_s"))
    per_task = [walls[rid] - xtb_s[rid] for rid in walls if walls[rid] is not None]
    total_program = sum(xtb_s[rid] for rid in walls)
    notes = [
        f"xtb's own run time per task (median over molecules, Parsl and RQ runs): "
        f"{statistics.median(xtb_s.values()):.3f} s; sum {total_program:.1f} s",
        f"htportal overhead per task beyond xtb: median(wall_s - xtb) = "
        f"{statistics.median(per_task) * 1000:.0f} ms (p90 "
        f"{sorted(per_task)[int(0.9 * (len(per_task) - 1))] * 1000:.0f} ms)",
        f"htportal submit->durable minus sum(xtb)/{WORKERS}: "
        f"{htportal.run_s - total_program / WORKERS:.1f} s over {tasks} tasks = "
        f"{(htportal.run_s - total_program / WORKERS) / tasks * 1000:.0f} ms per task",
    ]
    return [htportal, parsl_row, rq_row], notes


def bench_noop(portal: Portal, parsl: Parsl, *, tasks: int) -> List[Row]:
    print(f"\n[noop] {tasks:,} no-op tasks (~1 kB inputs), {WORKERS} workers", flush=True)
    dataset = portal.dataset("peers-noop", tasks, quiet=True)
    records = [{"id": rid, "input": data} for rid, data in record_inputs(dataset)]
    campaign = noop_campaign("peers-noop", dataset, queue="peers-noop")
    htportal = htportal_run(portal, campaign, tasks=tasks, timeout=max(600, tasks / 10),
                            label="htportal (submit, workers, collector)")
    print(f"  {htportal.label}: {htportal.run_s:.1f} s", flush=True)
    from bench._peer_tasks import noop
    parsl_row, _ = parsl.run(noop, records, label="Parsl HTEX python_app",
                             database=portal.directory / "parsl-noop.sqlite3",
                             timeout=max(600, tasks / 10))
    print(f"  {parsl_row.label}: {parsl_row.run_s:.1f} s", flush=True)
    rq_row, _ = rq_run(portal, "bench._peer_tasks.noop", records, queue="peer-noop",
                       label="plain RQ SimpleWorker", timeout=max(600, tasks / 10))
    print(f"  {rq_row.label}: {rq_row.run_s:.1f} s", flush=True)
    return [htportal, parsl_row, rq_row]


def table(title: str, rows: List[Row]) -> None:
    print(f"\n{title}")
    print(f"{'':<40}{'tasks/s':>9}{'run s':>8}{'start-up s':>12}{'tasks/s':>9}{'load':>6}  ")
    print(f"{'':<40}{'(run)':>9}{'':>8}{'':>12}{'(+start)':>9}{'':>6}  ")
    for row in rows:
        print(f"{row.label:<40}{row.rate:>9,.1f}{row.run_s:>8.1f}{row.startup_s:>12.1f}"
              f"{row.rate_with_startup:>9,.1f}{row.load:>6.2f}  {row.note}")
    htportal = rows[0]
    for peer in rows[1:]:
        print(f"ratio htportal / {peer.label}: {htportal.rate / peer.rate:.2f} "
              f"(with start-up {htportal.rate_with_startup / peer.rate_with_startup:.2f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--xtb-tasks", type=int, default=99, help="demo molecules (at most 99)")
    parser.add_argument("--noop-tasks", type=int, default=20_000)
    parser.add_argument("--keep", action="store_true", help="keep the database and logs")
    args = parser.parse_args()
    began = time.monotonic()
    portal = portal_start()
    parsl = None
    try:
        import parsl as parsl_module
        import rq
        conn = portal.connection()
        print(f"bench_peers: redis-server {conn.info('server')['redis_version']}, rq "
              f"{rq.__version__}, parsl {parsl_module.__version__}, Python "
              f"{sys.version.split()[0]}, xtb {_xtb_version()}, {os.cpu_count()} cores, "
              f"load average {load_average():.2f}", flush=True)
        parsl = Parsl(Path(tempfile.mkdtemp(prefix="htportal-bench-parsl-")))
        print(f"  parsl: {WORKERS} workers connected {parsl.startup_s:.1f} s after load",
              flush=True)
        xtb_rows, notes = bench_xtb(portal, parsl, tasks=min(args.xtb_tasks, 99))
        noop_rows = bench_noop(portal, parsl, tasks=args.noop_tasks)
    finally:
        if parsl is not None:
            parsl.stop()
        portal.stop(keep=args.keep)
    table(f"xtb: {min(args.xtb_tasks, 99)} GFN2 --grad single points (data/demo), "
          f"{WORKERS} workers, submit to every result durable", xtb_rows)
    for note in notes:
        print(f"  {note}")
    table(f"noop: {args.noop_tasks:,} no-op tasks (~1 kB inputs), {WORKERS} workers, submit "
          "to every result durable", noop_rows)
    print("\n(start-up: processes started until 2 workers were connected or registered, and "
          "htportal's collector was at its loop; "
          "tasks/s (+start) counts it in. load: 1-minute load average at the end of the run)")
    if args.keep:
        print(f"kept: {portal.directory}")
    print(f"(total {time.monotonic() - began:.0f} s)")


def _xtb_version() -> str:
    try:
        done = subprocess.run(["xtb", "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    line = next((line for line in done.stdout.splitlines() if "version" in line), "")
    return line.split("version", 1)[1].split()[0] if "version" in line else "?"


if __name__ == "__main__":
    main()
