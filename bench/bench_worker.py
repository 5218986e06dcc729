"""No-op task rate of htportal's worker beside plain RQ's SimpleWorker, and the bundle's size.

    .venv/bin/python bench/bench_worker.py [--jobs 2000]

Starts its own redis-server (tests/servers.py). For each row it enqueues N jobs, starts the
worker processes, and takes the rate from the jobs' own timestamps (first started_at to last
ended_at), so process start-up is not counted. htportal's job is `noop` through the whole
runtime (registry, execute, a scratch directory per task, the result document); plain RQ's is
`builtins.len([])` with the same JSON serializer, in rq's SimpleWorker, burst mode.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from redis import Redis  # noqa: E402
from rq import Queue  # noqa: E402
from rq.serializers import JSONSerializer  # noqa: E402
from rq.utils import utcparse  # noqa: E402

from tests import servers  # noqa: E402

NOOP_SPEC = {"function": "noop", "arg_sets": [{"name": "a", "parameters": {}}]}
PLAIN_RQ_WORKER = (
    "import sys\n"
    "from redis import Redis\n"
    "from rq.serializers import JSONSerializer\n"
    "from rq.worker import SimpleWorker\n"
    "SimpleWorker(['bench'], connection=Redis.from_url(sys.argv[1]),"
    " serializer=JSONSerializer).work(burst=True)\n"
)


def enqueue(conn: Redis, count: int, htportal: bool) -> list:
    queue = Queue("bench", connection=conn, serializer=JSONSerializer)
    if htportal:
        data = [Queue.prepare_data("noop", kwargs={"record": {"id": f"r{i}"}, "spec": NOOP_SPEC})
                for i in range(count)]
    else:
        data = [Queue.prepare_data("builtins.len", args=[[]]) for _ in range(count)]
    jobs = []
    for start in range(0, count, 500):
        jobs += queue.enqueue_many(data[start:start + 500])
    return [job.id for job in jobs]


def worker_argv(url: str, htportal: bool, index: int) -> list:
    if htportal:
        return [sys.executable, "-m", "workers.runtime.worker", "--redis-url", url,
                "--max-idle", "1", "--name", f"bench-{index}", "bench"]
    return [sys.executable, "-c", PLAIN_RQ_WORKER, url]


def rate(conn: Redis, job_ids: list) -> float:
    """Jobs per second from the first start to the last end, all jobs finished."""
    with conn.pipeline() as pipe:
        for job_id in job_ids:
            pipe.hmget(f"rq:job:{job_id}", "status", "started_at", "ended_at")
        rows = pipe.execute()
    statuses = {row[0] for row in rows}
    if statuses != {b"finished"}:
        raise SystemExit(f"not every job finished: {statuses}")
    first = min(utcparse(row[1].decode()) for row in rows)
    last = max(utcparse(row[2].decode()) for row in rows)
    return len(job_ids) / (last - first).total_seconds()


def measure(conn: Redis, url: str, count: int, processes: int, htportal: bool) -> float:
    conn.flushdb()
    job_ids = enqueue(conn, count, htportal)
    workers = [subprocess.Popen(worker_argv(url, htportal, i), cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
               for i in range(processes)]
    for worker in workers:
        if worker.wait(timeout=600) != 0:
            raise SystemExit(f"a worker exited with {worker.returncode}")
    return rate(conn, job_ids)


def bundle_size() -> int:
    from workers.bundle import build_bundle

    with tempfile.TemporaryDirectory() as tmp:
        return build_bundle(Path(tmp) / "htportal-worker.pyz").size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000, help="jobs per row (default 2000)")
    args = parser.parse_args()
    server = servers.start_redis()
    conn = Redis.from_url(server.url)
    try:
        version = conn.info("server")["redis_version"]
        print(f"bench_worker: {args.jobs} no-op jobs per row, redis-server {version}, "
              f"Python {sys.version.split()[0]}")
        print(f"{'bundle size':<34}{bundle_size() / 1e6:>10.2f} MB")
        print(f"{'worker':<26}{'procs':>8}{'tasks/s':>10}")
        for label, htportal in (("htportal worker", True), ("plain rq SimpleWorker", False)):
            for processes in (1, 2):
                started = time.monotonic()
                value = measure(conn, server.url, args.jobs, processes, htportal)
                print(f"{label:<26}{processes:>8}{value:>10.0f}"
                      f"   ({time.monotonic() - started:.1f} s wall with start-up)", flush=True)
    finally:
        conn.close()
        server.stop()


if __name__ == "__main__":
    main()
