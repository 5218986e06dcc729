"""Chaos: a campaign of short tasks through real workers and the real collector while workers,
the collector, Redis and the database are hit and poison and forged envelopes arrive.

    .venv/bin/python bench/bench_chaos.py [--tasks 20000] [--workers 4] [--seconds 120]
        [--db sqlite|postgres] [--seed 1] [--no-baseline] [--quick] [--task-seconds 0.02]
        [--worker-kills 12] [--collector-kills 6] [--redis-restarts 2] [--db-locks 2]
        [--lock-seconds 20] [--poison-rounds 2] [--stall 150] [--only TEXT...] [--keep]

One throwaway portal (bench/_harness.py: private redis-server, fresh migrated database), a
dataset of N records and a `sleep` campaign (one arg set `a`, --task-seconds; 0 runs `noop`)
launched with campaign_launch. `--workers` htportal worker processes and `manage.py collect`
run it to the end. A supervisor restarts the collector 1 s after any exit (as the Procfile's
supervisor would) and a scaler keeps `--workers` workers alive, each new one under a new name.

With --baseline (the default; --no-baseline skips it) the same campaign over its own dataset
runs first with no chaos, for the rate to compare with.

The chaos loop (seeded RNG, --seed) spreads these faults at random times over --seconds:
- SIGKILL a random worker (--worker-kills) or the collector (--collector-kills);
- restart Redis empty: the bench's redis-server stopped and started on the same port with no
  persistence; workers and the collector must reconnect by themselves (--redis-restarts);
- hold the database for --lock-seconds from another process: `BEGIN EXCLUSIVE` on SQLite,
  `LOCK TABLE campaigns_task IN ACCESS EXCLUSIVE MODE` on PostgreSQL (--db-locks);
- push onto htportal:results, --poison-rounds times each: poison envelopes for an unfinished
  task, carrying its current attempt id (so only the payload is wrong): not JSON, nested
  100,000 deep, NaN/Infinity values, a 1e400 number, finished_at 0001-01-01T00:00:00+23:59,
  cpu_s 10**400, a gzip-bomb kept file (200 MB of zeros, declared size 10); an envelope for
  an unknown job id; and forged ones: a real job with a wrong attempt id, with a worker name
  no worker has, with another record's id in the document, and a replayed old failure (the
  signed attempt id of the delivery before a task's current one; when no task has been
  delivered twice yet, a done task's own last attempt id, else delivery 0's, never issued;
  scheduled in the second half, when tasks have been delivered again). Every value a poison
  or forged envelope would write carries the key "chaos", so a record holding one is found
  afterwards. Envelopes of ours that a Redis restart wipes before the collector read them are
  pushed again, to new targets, after the restart.
The loop is bounded in time (--seconds) and in count (the faults listed). Then the bench waits
until every task is terminal (done or failed), or nothing moved for --stall seconds, and
prints the table: faults by kind, collector restarts (after our SIGKILL vs unexpected exits),
tasks done / failed / stuck, records with exactly one clean result, lost results, duplicate
result writes (the per-minute rollup's done total and the collector's logged done count
against the ledger), peak collector RSS (/proc/PID/status VmHWM of every collector process,
sampled every 0.2 s), and throughput against the baseline.
"""
from __future__ import annotations

import argparse
import atexit
import base64
import hashlib
import json
import math
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._harness import DB_CHOICES, Portal, portal_start  # noqa: E402
from bench.bench_pipeline import COLLECTED_LINE  # noqa: E402
from bench.bench_scale import terminate  # noqa: E402

ARG_SET = "a"
OUTPUT_KEY = "out"
MARK = "chaos"  # the key every value of a poison or forged envelope carries
RSS_TARGET_MB = 500
RESTART_AFTER_S = 1.0
STEP_S = 0.25
RSS_EVERY_S = 0.2
PROGRESS_EVERY_S = 5.0
POLL_EVERY_S = 1.0
DRAIN_S = 30.0
LOCK_WAIT_S = 30.0
BOMB_MB = 200
NESTING = 100_000
JOB_TIMEOUT_S = 60
SIZES = {  # full, --quick
    "tasks": (20_000, 4_000), "seconds": (120.0, 60.0), "worker_kills": (12, 6),
    "collector_kills": (6, 3), "redis_restarts": (2, 1), "db_locks": (2, 1),
    "poison_rounds": (2, 1),
}
POISON_KINDS = ("not JSON", "nested 100,000 deep", "NaN/Infinity values", "1e400 number",
                "finished_at 0001-01-01T00:00:00+23:59", "cpu_s 10**400",
                "gzip bomb kept file", "unknown job id")
FORGED_KINDS = ("forged: wrong attempt id", "forged: wrong worker name",
                "forged: another record's id", "forged: replayed old failure")
PROCESS_KINDS = ("SIGKILL worker", "SIGKILL collector", "Redis restarted empty",
                 "database locked")
SQLITE_LOCKER = (
    "import sqlite3, sys, time\n"
    "db = sqlite3.connect(sys.argv[1], timeout=%(wait)s, isolation_level=None)\n"
    "asked = time.monotonic()\n"
    "db.execute('BEGIN EXCLUSIVE')\n"
    "got = time.monotonic()\n"
    "print(f'locked after {got - asked:.1f} s', flush=True)\n"
    "time.sleep(float(sys.argv[2]))\n"
    "db.execute('ROLLBACK')\n"
    "print(f'held {time.monotonic() - got:.1f} s', flush=True)\n"
)
POSTGRES_LOCKER = (
    "import psycopg, sys, time\n"
    "with psycopg.connect(sys.argv[1]) as db:\n"
    "    asked = time.monotonic()\n"
    "    db.execute('LOCK TABLE campaigns_task IN ACCESS EXCLUSIVE MODE')\n"
    "    got = time.monotonic()\n"
    "    print(f'locked after {got - asked:.1f} s', flush=True)\n"
    "    time.sleep(float(sys.argv[2]))\n"
    "    db.rollback()\n"
    "    print(f'held {time.monotonic() - got:.1f} s', flush=True)\n"
)
HELD_LINE = re.compile(r"^held ([\d.]+) s$", re.M)
# "2026-12-01 21:54:26,484 INFO campaigns.loops: collector collector.HOST.PID: collecting batches"
STARTED_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO campaigns\.loops: "
                          r"collector \S+\.(\d+): collecting batches")


# --- child processes: every one is stopped on exit, whatever ends the bench --------------------

CHILDREN: List[subprocess.Popen] = []


def spawn(argv: List[str], *, env: dict, log: Path) -> subprocess.Popen:
    with open(log, "ab") as handle:
        popen = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=handle,
                                 stderr=subprocess.STDOUT)
    CHILDREN.append(popen)
    return popen


def children_stop() -> None:
    """SIGTERM every child still running, then wait (SIGKILL after 15 s): see terminate."""
    alive = [child for child in CHILDREN if child.poll() is None]
    for child in alive:
        child.send_signal(signal.SIGTERM)
    for child in alive:
        terminate(child, timeout=15)
    CHILDREN.clear()


def on_signal(signum, frame) -> None:
    raise SystemExit(f"bench_chaos: {signal.Signals(signum).name}, stopping")


def python_argv(*args: str) -> List[str]:
    return [sys.executable, *args]


# --- the processes under test -----------------------------------------------------------------

def rss_of(pid: int) -> Tuple[int, int]:
    """(VmHWM, VmRSS) of a live process in kB; (0, 0) when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            text = status.read()
    except OSError:
        return 0, 0
    values = dict(re.findall(r"^(VmHWM|VmRSS):\s+(\d+) kB", text, re.M))
    return int(values.get("VmHWM", 0)), int(values.get("VmRSS", 0))


class Collector:
    """`manage.py collect` under a supervisor: restarted RESTART_AFTER_S after any exit. An exit
    of a process we SIGKILLed is ours; any other is an unexpected exit (with its log's last
    line). A thread samples the peak RSS of every collector process."""

    def __init__(self, portal: Portal, log: Path) -> None:
        self.portal, self.log = portal, log
        self.killed: set = set()
        self.spawned: Dict[int, float] = {}  # pid -> time.time() of its spawn
        self.ours = 0
        self.unexpected: List[str] = []
        self.peak_kb: Dict[int, int] = {}
        self.exited_at: Optional[float] = None
        self.popen = self._start()
        self.stopping = threading.Event()
        self.sampler = threading.Thread(target=self._sample, daemon=True)
        self.sampler.start()

    def _start(self) -> subprocess.Popen:
        popen = spawn(python_argv("manage.py", "collect"), env=self.portal.env(), log=self.log)
        self.spawned[popen.pid] = time.time()
        return popen

    def startups(self) -> List[float]:
        """Seconds from each collector's spawn to its "collecting batches" line (the log's
        times are UTC with milliseconds); a process killed before that line has none."""
        seen = []
        for line in self.log.read_text(errors="replace").splitlines():
            match = STARTED_LINE.match(line)
            if match and int(match.group(2)) in self.spawned:
                when = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").replace(
                    tzinfo=timezone.utc).timestamp()
                seen.append(when - self.spawned[int(match.group(2))])
        return seen

    def _sample(self) -> None:
        while not self.stopping.is_set():
            pid = self.popen.pid
            hwm, rss = rss_of(pid)
            if hwm or rss:
                self.peak_kb[pid] = max(self.peak_kb.get(pid, 0), hwm, rss)
            self.stopping.wait(RSS_EVERY_S)

    def kill(self) -> bool:
        if self.popen.poll() is not None:
            return False
        self.killed.add(self.popen.pid)
        self.popen.send_signal(signal.SIGKILL)
        return True

    def check(self) -> None:
        """Count an exit and restart RESTART_AFTER_S after it (without blocking the loop)."""
        if self.popen.poll() is None:
            return
        now = time.monotonic()
        if self.exited_at is None:
            self.exited_at = now
            if self.popen.pid in self.killed:
                self.ours += 1
            else:
                lines = self.log.read_text(errors="replace").strip().splitlines()
                self.unexpected.append(f"exit {self.popen.returncode}: "
                                       f"{lines[-1][:300] if lines else '?'}")
                print(f"  collector exited on its own ({self.unexpected[-1]}); restarting it",
                      flush=True)
        if now - self.exited_at >= RESTART_AFTER_S:
            self.exited_at = None
            self.popen = self._start()

    def stop(self) -> None:
        self.stopping.set()
        terminate(self.popen, timeout=30)
        self.sampler.join(2)

    @property
    def peak_mb(self) -> float:
        return max(self.peak_kb.values(), default=0) / 1024


class Workers:
    """`--workers` htportal workers kept alive as a scaler would: one that exits is replaced by
    a new one under a new name. Exits of workers we SIGKILLed are counted apart."""

    def __init__(self, portal: Portal, *, queue: str, count: int, tag: str) -> None:
        self.portal, self.queue, self.tag = portal, queue, tag
        self.generation = 0
        self.killed: set = set()
        self.started = 0
        self.exits_ours = 0
        self.exits_other: List[str] = []
        self.slots: List[Tuple[str, subprocess.Popen]] = [self._start(i) for i in range(count)]

    def _start(self, slot: int) -> Tuple[str, subprocess.Popen]:
        self.generation += 1
        self.started += 1
        name = f"{self.tag}-w{slot}.{self.generation}"
        return name, spawn(python_argv("-m", "workers.runtime.worker", "--redis-url",
                                       self.portal.url, "--name", name, self.queue),
                           env=self.portal.env(),
                           log=self.portal.directory / f"worker-{self.tag}-{slot}.log")

    def names(self) -> List[str]:
        return [name for name, popen in self.slots if popen.poll() is None]

    def kill_one(self, rng: random.Random) -> Optional[str]:
        alive = [(name, popen) for name, popen in self.slots if popen.poll() is None]
        if not alive:
            return None
        name, popen = rng.choice(alive)
        self.killed.add(popen.pid)
        popen.send_signal(signal.SIGKILL)
        return name

    def check(self) -> None:
        for slot, (name, popen) in enumerate(self.slots):
            if popen.poll() is None:
                continue
            if popen.pid in self.killed:
                self.exits_ours += 1
            else:
                self.exits_other.append(f"{name}: exit {popen.returncode}")
            self.slots[slot] = self._start(slot)

    def stop(self) -> None:
        for _, popen in self.slots:
            if popen.poll() is None:
                popen.send_signal(signal.SIGTERM)
        for _, popen in self.slots:
            terminate(popen, timeout=30)


# --- the campaign and the ledger --------------------------------------------------------------

def redis_client(url: str):
    """The bench's own client: it rides out a Redis restart by retrying a few times."""
    from redis import Redis
    from redis.backoff import ExponentialBackoff
    from redis.exceptions import ConnectionError, TimeoutError
    from redis.retry import Retry
    return Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5,
                          retry=Retry(ExponentialBackoff(cap=1.0, base=0.1), 6),
                          retry_on_error=[ConnectionError, TimeoutError])


def campaign_start(portal: Portal, *, name: str, tasks: int, task_seconds: float, conn):
    """A dataset of `tasks` records and a running sleep (noop) campaign over it, launched."""
    from campaigns.models import ArgSet, Campaign
    from campaigns.services.lifecycle import campaign_launch

    dataset = portal.dataset(name, tasks, quiet=True)
    function = "sleep" if task_seconds > 0 else "noop"
    campaign = Campaign.objects.create(name=name, dataset=dataset, function=function,
                                       output_key=OUTPUT_KEY, queue=name, priority="normal",
                                       job_timeout=JOB_TIMEOUT_S)
    ArgSet.objects.create(campaign=campaign, name=ARG_SET, position=0,
                          parameters={"seconds": task_seconds} if task_seconds > 0 else {})
    report = campaign_launch(campaign=campaign, connection=conn)
    print(f"  {name}: {report.added:,} tasks submitted, {report.queued:,} queued", flush=True)
    return campaign


def states(campaign) -> Counter:
    from django.db.models import Count

    from campaigns.models import Task
    return Counter(dict(Task.objects.filter(campaign=campaign).order_by().values_list("state")
                        .annotate(n=Count("pk"))))


def terminal(counts: Counter) -> int:
    return counts.get("done", 0) + counts.get("failed", 0) + counts.get("cancelled", 0)


SHORT_STATEMENTS = {"on": False}


def _statement_timeout(sender, connection, **kwargs) -> None:
    if SHORT_STATEMENTS["on"] and connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET statement_timeout = '3s'")


def db_short_statements(portal: Portal, on: bool) -> None:
    """On PostgreSQL, let the bench's own queries give up after 3 s (a table locked by the
    chaos must not freeze the chaos loop and the supervisor); off for the final checks. Set
    on every connection the bench opens meanwhile (db_try closes one that failed)."""
    if portal.vendor != "postgresql":
        return
    from django.db import connection
    from django.db.backends.signals import connection_created
    SHORT_STATEMENTS["on"] = on
    connection_created.connect(_statement_timeout, dispatch_uid="bench_chaos")
    with connection.cursor() as cursor:
        cursor.execute("SET statement_timeout = %s", ["3s" if on else "0"])


def db_try(what: Callable, default):
    """`what()`, or `default` when the database is busy or away (the chaos locks it)."""
    from django.db import DatabaseError, connection
    try:
        return what()
    except DatabaseError:
        if not connection.in_atomic_block:
            connection.close()
        return default


@dataclass
class Run:
    label: str
    campaign: object
    total: int
    began: float
    finished: Optional[float] = None  # monotonic time every task was terminal
    counts: Counter = field(default_factory=Counter)

    @property
    def seconds(self) -> float:
        return (self.finished or time.monotonic()) - self.began

    @property
    def rate(self) -> float:
        return terminal(self.counts) / max(self.seconds, 1e-9)


def progress(run: Run, *, conn, collector: Collector, workers: Workers, last: List[float],
             extra: str = "") -> None:
    now = time.monotonic()
    if now - last[1] >= POLL_EVERY_S:  # the ledger's counts: a GROUP BY, so once a second
        last[1] = now
        counts = db_try(lambda: states(run.campaign), None)
        if counts is not None:
            run.counts = counts
            if run.finished is None and terminal(counts) >= run.total:
                run.finished = time.monotonic()
    if now - last[0] < PROGRESS_EVERY_S:
        return
    last[0] = now
    try:
        waiting = f"{conn.llen('htportal:results'):,}"
    except Exception:  # Redis is being restarted
        waiting = "?"
    c = run.counts
    print(f"  {run.label} t={now - run.began:5.1f}s terminal {terminal(c):,}/{run.total:,} "
          f"(done {c.get('done', 0):,}, failed {c.get('failed', 0):,}; pending "
          f"{c.get('pending', 0):,}, queued {c.get('queued', 0):,}, running "
          f"{c.get('running', 0):,}) results waiting {waiting}; collector restarts "
          f"{collector.ours}+{len(collector.unexpected)} unexpected; workers started "
          f"{workers.started}{extra}", flush=True)


def wait_terminal(run: Run, *, conn, collector: Collector, workers: Workers, stall: float,
                  timeout: float) -> str:
    """Until every task is terminal; or nothing moved for `stall` s; or `timeout` s."""
    last, moved, seen = [0.0, 0.0], time.monotonic(), -1
    deadline = time.monotonic() + timeout
    while run.finished is None:
        collector.check()
        workers.check()
        progress(run, conn=conn, collector=collector, workers=workers, last=last)
        if terminal(run.counts) != seen:
            seen, moved = terminal(run.counts), time.monotonic()
        if time.monotonic() - moved > stall:
            return f"nothing moved for {stall:.0f} s"
        if time.monotonic() > deadline:
            return f"timeout after {timeout:.0f} s"
        time.sleep(0.5)
    return "every task terminal"


def drain(conn, *, collector: Collector, workers: Workers) -> None:
    """Give the collector up to DRAIN_S to take what is left in htportal:results (late
    duplicates, envelopes for finished tasks) before it is stopped."""
    deadline = time.monotonic() + DRAIN_S
    while time.monotonic() < deadline:
        collector.check()
        workers.check()
        try:
            if not conn.llen("htportal:results"):
                return
        except Exception:
            pass
        time.sleep(0.5)


# --- poison and forged envelopes --------------------------------------------------------------

def bomb_entry(megabytes: int) -> dict:
    """A kept file entry whose gzip data inflates to `megabytes` MB of zeros; declared 10 B."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # wbits 31: a gzip stream
    chunk = bytes(1 << 20)
    data = b"".join(packer.compress(chunk) for _ in range(megabytes)) + packer.flush()
    return {"name": "chaos-bomb.out", "arg_set": ARG_SET, "source": "stdout", "encoding": "gzip",
            "size": 10, "compressed_size": len(data),
            "sha256": hashlib.sha256(bytes(10)).hexdigest(),
            "data": base64.b64encode(data).decode("ascii")}


def document(record_id: str, kind: str, **part) -> dict:
    """A well-formed result document of arg set `a` whose values carry the chaos mark."""
    values = {MARK: kind, **part.pop("values", {})}
    arg_set = {"status": "ok", "values": values, "error": None, "wall_s": 0.01, "cpu_s": 0.0,
               "exit_code": None, "host": "chaos", **part}
    return {"record_id": record_id, "function": "sleep", "host": "chaos", "status": "ok",
            "started_at": "2026-01-01T00:00:00.000+00:00",
            "finished_at": "2026-01-01T00:00:01.000+00:00",
            "arg_sets": {ARG_SET: arg_set}, "files": []}


@dataclass
class Target:
    job_id: str
    record_id: str
    delivery: int
    state: str


def poison_payload(kind: str, target: Target, *, attempt: str, worker: str,
                   bomb: dict) -> bytes:
    """The bytes pushed for one poison kind, for the target task's current attempt."""
    head = {"job_id": target.job_id, "worker": worker, "attempt": attempt}
    if kind == "not JSON":
        return (f'{{"job_id": "{target.job_id}", "worker": "{worker}", "attempt": "{attempt}", '
                f'"result": {{"record_id": ').encode() + b"\xff\xfe not JSON"
    if kind == "nested 100,000 deep":
        opening = json.dumps(head)[:-1] + ', "result": '
        return (opening + "[" * NESTING + "]" * NESTING + "}").encode()
    if kind == "NaN/Infinity values":
        doc = document(target.record_id, kind, values={"energy": math.nan, "gap": math.inf,
                                                       "low": -math.inf}, wall_s=math.nan)
        return json.dumps({**head, "result": doc}).encode()  # json writes NaN, Infinity
    if kind == "1e400 number":
        doc = document(target.record_id, kind, values={"energy": "@BIG@"})
        return json.dumps({**head, "result": doc}).replace('"@BIG@"', "1e400").encode()
    if kind == "finished_at 0001-01-01T00:00:00+23:59":
        doc = document(target.record_id, kind)
        doc["started_at"] = doc["finished_at"] = "0001-01-01T00:00:00+23:59"
        return json.dumps({**head, "result": doc}).encode()
    if kind == "cpu_s 10**400":
        doc = document(target.record_id, kind, cpu_s="@HUGE@")
        return json.dumps({**head, "result": doc}).replace('"@HUGE@"', str(10 ** 400)).encode()
    if kind == "gzip bomb kept file":
        doc = document(target.record_id, kind)
        doc["files"] = [bomb]
        return json.dumps({**head, "result": doc}).encode()
    if kind == "unknown job id":
        unknown = "c999999-v1-" + "0" * 24
        return json.dumps({"job_id": unknown, "worker": worker, "attempt": "1-" + "0" * 16,
                           "result": document(target.record_id, kind)}).encode()
    raise ValueError(kind)


def forged_payload(kind: str, target: Target, *, other: Target, attempt: str,
                   worker: str, old_delivery: int = 0) -> bytes:
    """The bytes pushed for one forged kind (see the module's docstring)."""
    from campaigns.attempts import attempt_id
    if kind == "forged: wrong attempt id":
        envelope = {"job_id": target.job_id, "worker": worker,
                    "attempt": f"{target.delivery}-{'0' * 16}",
                    "result": document(target.record_id, kind)}
    elif kind == "forged: wrong worker name":
        envelope = {"job_id": target.job_id, "worker": "chaos-forger.1", "attempt": attempt,
                    "result": document(target.record_id, kind)}
    elif kind == "forged: another record's id":
        envelope = {"job_id": target.job_id, "worker": worker, "attempt": attempt,
                    "result": document(other.record_id, kind)}
    elif kind == "forged: replayed old failure":
        old = attempt_id(job_id=target.job_id, delivery=old_delivery)
        envelope = {"job_id": target.job_id, "worker": worker, "attempt": old,
                    "error": {"class": "ChaosReplayedFailure",
                              "message": "chaos: a failure of an earlier delivery, replayed"}}
    else:
        raise ValueError(kind)
    return json.dumps(envelope).encode()


def replay_target(campaign, used: set, rng: random.Random) -> Optional[Tuple[Target, int, str]]:
    """(task, delivery whose signed attempt id the replay carries, which variant): a task
    out on its second delivery or later, with the attempt id of the delivery before; else a
    done task with its own last attempt id (a failure arriving after the success); else an
    unfinished task with the attempt id of delivery 0, signed but never issued. A collector
    must apply none of them."""
    from campaigns.models import Task
    tasks = Task.objects.filter(campaign=campaign).exclude(job_id__in=used)
    fields = ("job_id", "record_id", "delivery", "state")
    for rows, old, variant in (
            (tasks.filter(state__in=("queued", "running", "pending"), delivery__gte=2),
             lambda d: d - 1, "the delivery before the current one"),
            (tasks.filter(state="done"), lambda d: d, "the last delivery of a done task"),
            (tasks.exclude(state__in=("done", "failed", "cancelled")), lambda d: 0,
             "delivery 0 (never issued)")):
        found = list(rows.values_list(*fields)[:500])
        if found:
            target = Target(*rng.choice(found))
            used.add(target.job_id)
            return target, old(target.delivery), variant
    return None


def targets_pick(campaign, used: set, count: int, rng: random.Random) -> List[Target]:
    """Up to `count` unfinished tasks (queued or running first) not hit before."""
    from campaigns.models import Task
    rows = list(Task.objects.filter(campaign=campaign).exclude(job_id__in=used)
                .exclude(state__in=("done", "failed", "cancelled"))
                .values_list("job_id", "record_id", "delivery", "state")[:2000])
    if not rows:  # all finished: hit done ones (a correct collector skips them)
        rows = list(Task.objects.filter(campaign=campaign).exclude(job_id__in=used)
                    .values_list("job_id", "record_id", "delivery", "state")[:2000])
    rng.shuffle(rows)
    order = {"running": 0, "queued": 1, "pending": 2}
    rows.sort(key=lambda r: order.get(r[3], 3))
    picked = [Target(*row) for row in rows[:count]]
    used.update(t.job_id for t in picked)
    return picked


# --- the chaos loop ---------------------------------------------------------------------------

@dataclass
class Chaos:
    portal: Portal
    campaign: object
    conn: object
    collector: Collector
    workers: Workers
    rng: random.Random
    lock_seconds: float
    bomb: dict
    began: float
    injected: Counter = field(default_factory=Counter)
    while_unfinished: Counter = field(default_factory=Counter)
    notes: List[str] = field(default_factory=list)
    lockers: List[Tuple[subprocess.Popen, Path]] = field(default_factory=list)
    used: set = field(default_factory=set)
    replay_variants: Counter = field(default_factory=Counter)
    pushed: Dict[str, str] = field(default_factory=dict)  # sha1 of a payload -> its kind
    wiped: Counter = field(default_factory=Counter)  # kinds a Redis restart wiped unread
    repush: List[str] = field(default_factory=list)

    def inject(self, kind: str, unfinished: bool) -> bool:
        """One fault; False when it could not be injected now (tried again later)."""
        if kind == "SIGKILL worker":
            ok = self.workers.kill_one(self.rng) is not None
        elif kind == "SIGKILL collector":
            ok = self.collector.kill()
        elif kind == "Redis restarted empty":
            wiped = self.unread()
            self.portal.redis.restart_empty()
            for lost in wiped:  # so that every envelope kind reaches the collector
                self.wiped[lost] += 1
                self.repush.append(lost)
            ok = True
        elif kind == "database locked":
            ok = self.db_lock()
        else:
            ok = self.push(kind)
        if ok:
            self.injected[kind] += 1
            self.while_unfinished[kind] += unfinished
            print(f"    t={time.monotonic() - self.began:5.1f}s fault: {kind}", flush=True)
        return ok

    def unread(self) -> List[str]:
        """Kinds of our envelopes still waiting in htportal:results (not read yet)."""
        try:
            waiting = self.conn.lrange("htportal:results", 0, -1)
        except Exception:
            return []
        return [self.pushed[digest] for digest in (hashlib.sha1(item).hexdigest()
                                                   for item in waiting) if digest in self.pushed]

    def repush_due(self) -> None:
        """Push again, to fresh targets, the envelopes a Redis restart wiped unread."""
        for kind in list(self.repush):
            if self.push(kind):
                self.repush.remove(kind)
                print(f"    t={time.monotonic() - self.began:5.1f}s pushed again (wiped by the "
                      f"Redis restart): {kind}", flush=True)

    def db_lock(self) -> bool:
        log = self.portal.directory / f"locker-{len(self.lockers)}.log"
        if self.portal.vendor == "sqlite":
            argv = python_argv("-c", SQLITE_LOCKER % {"wait": LOCK_WAIT_S},
                               str(self.portal.database), str(self.lock_seconds))
        else:
            argv = python_argv("-c", POSTGRES_LOCKER, self.portal.database_url,
                               str(self.lock_seconds))
        self.lockers.append((spawn(argv, env=self.portal.env(), log=log), log))
        return True

    def push(self, kind: str) -> bool:
        from campaigns.attempts import attempt_id
        replay = kind == "forged: replayed old failure"
        old_delivery, variant = 0, ""
        if replay:
            picked = db_try(lambda: replay_target(self.campaign, self.used, self.rng), None)
            if not picked:
                return False
            target, old_delivery, variant = picked
            targets = [target]
        else:
            targets = db_try(lambda: targets_pick(self.campaign, self.used, 2, self.rng), None)
            if not targets:
                return False
            target = targets[0]
        other = targets[-1]
        attempt = attempt_id(job_id=target.job_id, delivery=max(1, target.delivery))
        worker = (self.workers.names() or ["chaos-w0.1"])[0]
        if kind in POISON_KINDS:
            payload = poison_payload(kind, target, attempt=attempt, worker=worker,
                                     bomb=self.bomb)
        else:
            payload = forged_payload(kind, target, other=other, attempt=attempt, worker=worker,
                                     old_delivery=old_delivery)
        try:
            self.conn.rpush("htportal:results", payload)
        except Exception as exc:  # Redis is down for a moment: tried again later
            self.notes.append(f"{kind}: push failed ({type(exc).__name__}); retried")
            self.used.discard(target.job_id)
            return False
        self.pushed[hashlib.sha1(payload).hexdigest()] = kind
        if replay:
            self.replay_variants[variant] += 1
        return True

    def locks_held(self) -> List[float]:
        held = []
        for popen, log in self.lockers:
            match = HELD_LINE.search(log.read_text(errors="replace")) if log.exists() else None
            if match:
                held.append(float(match.group(1)))
        return held


def schedule(rng: random.Random, counts: Dict[str, int], *, seconds: float,
             lock_seconds: float) -> List[Tuple[float, str]]:
    """(seconds after the start, fault) pairs, spread at random over the chaos time; a lock
    starts early enough to end inside it when it can."""
    events = []
    for kind, count in counts.items():
        latest = max(1.0, seconds - lock_seconds) if kind == "database locked" else seconds
        # A replay needs a task on its second delivery: those come later in the run.
        earliest = seconds / 2 if kind == "forged: replayed old failure" else 1.0
        events += [(rng.uniform(earliest, max(earliest, latest)), kind) for _ in range(count)]
    return sorted(events)


def chaos_run(chaos: Chaos, run: Run, events: List[Tuple[float, str]], *, seconds: float) -> None:
    """Inject the scheduled faults, each at its time (a fault that cannot be injected now is
    tried again 1 s later, at most 5 times); bounded by `seconds` and by the events."""
    pending = [(when, kind, 0) for when, kind in events]
    last = [0.0, 0.0]
    end = run.began + seconds
    while (pending or chaos.repush) and time.monotonic() < end:
        chaos.collector.check()
        chaos.workers.check()
        chaos.repush_due()
        progress(run, conn=chaos.conn, collector=chaos.collector, workers=chaos.workers,
                 last=last, extra=f"; faults {sum(chaos.injected.values())}/{len(events)}")
        now = time.monotonic() - run.began
        due = [event for event in pending if event[0] <= now]
        for event in due:
            pending.remove(event)
            when, kind, tries = event
            unfinished = run.finished is None
            if not chaos.inject(kind, unfinished) and tries < 5:
                pending.append((now + 1.0, kind, tries + 1))
            elif tries >= 5 and kind not in chaos.injected:
                chaos.notes.append(f"{kind}: not injected after 5 tries")
        time.sleep(STEP_S)
    for when, kind, _ in pending:
        chaos.notes.append(f"{kind}: not injected (the chaos time ran out)")
    for kind in chaos.repush:
        chaos.notes.append(f"{kind}: wiped by a Redis restart, not pushed again (time ran out)")


# --- after the run: the checks ----------------------------------------------------------------

def collector_logged_done(log: Path) -> int:
    """Tasks the collector's batches made done, from its "collected N results (D done" lines."""
    if not log.exists():
        return 0
    return sum(int(m.group(3)) for m in map(COLLECTED_LINE.match,
                                             log.read_text(errors="replace").splitlines()) if m)


def marked(value) -> bool:
    """Whether a stored value holds the chaos mark at any depth (bounded: our own data)."""
    if isinstance(value, dict):
        return MARK in value or any(marked(v) for v in value.values())
    if isinstance(value, list):
        return any(marked(v) for v in value)
    return False


def checks(portal: Portal, campaign, collector_log: Path) -> dict:
    """Everything the table reports about the ledger, the records and the rollup."""
    from django.db.models import Sum

    from campaigns.models import Record, Task, TaskMinute

    tasks = list(Task.objects.filter(campaign=campaign).values_list(
        "record_id", "state", "error_class", "cpu_s", "wall_s", "finished_at", "job_id",
        "delivery", "attempts", "updated_at"))
    done_ids = {t[0] for t in tasks if t[1] == "done"}
    results = dict(Record.objects.filter(dataset=campaign.dataset).values_list("record_id",
                                                                                "results"))
    clean = lost = 0
    dirty: List[str] = []
    for record_id, stored in results.items():
        value = (stored or {}).get(OUTPUT_KEY) if isinstance(stored, dict) else None
        has = isinstance(value, dict) and ARG_SET in value
        if marked(stored):
            dirty.append(record_id)
        if record_id in done_ids:
            if not has:
                lost += 1
            elif set(stored) == {OUTPUT_KEY} and set(value) == {ARG_SET} and not marked(stored):
                clean += 1
    minutes = TaskMinute.objects.filter(campaign=campaign).aggregate(done=Sum("done"),
                                                                     failed=Sum("failed"))
    impossible = [t for t in tasks if
                  (t[3] is not None and (not math.isfinite(t[3]) or t[3] > 1e6))
                  or (t[4] is not None and (not math.isfinite(t[4]) or t[4] > 1e6))
                  or (t[5] is not None and t[5].year < 2000)]
    storage = portal.directory / "var" / "storage"
    bombs = list(storage.rglob("chaos-bomb*")) if storage.exists() else []
    stuck = [t for t in tasks if t[1] not in ("done", "failed", "cancelled")]
    return {
        "counts": Counter(t[1] for t in tasks), "done": len(done_ids), "clean": clean,
        "lost": lost, "dirty": dirty,
        "failed_classes": Counter(t[2] or "?" for t in tasks if t[1] == "failed"),
        "forged_failures": sum(1 for t in tasks if (t[2] or "").startswith("Chaos")),
        "minute_done": minutes["done"] or 0, "minute_failed": minutes["failed"] or 0,
        "logged_done": collector_logged_done(collector_log),
        "impossible": len(impossible), "bombs": len(bombs), "stuck": stuck,
    }


# --- one run ----------------------------------------------------------------------------------

def campaign_run(portal: Portal, args, *, label: str, chaos_counts: Optional[Dict[str, int]],
                 bomb: Optional[dict]) -> dict:
    conn = redis_client(portal.url)
    conn.flushdb()
    print(f"\n[{label}] {args.tasks:,} tasks, {args.workers} workers"
          + (f", chaos for up to {args.seconds:.0f} s" if chaos_counts else ", no chaos"),
          flush=True)
    campaign = campaign_start(portal, name=label, tasks=args.tasks,
                              task_seconds=args.task_seconds, conn=conn)
    log = portal.directory / f"collector-{label}.log"
    collector = Collector(portal, log)
    workers = Workers(portal, queue=label, count=args.workers, tag=label)
    run = Run(label=label, campaign=campaign, total=args.tasks, began=time.monotonic())
    chaos = None
    try:
        db_short_statements(portal, True)
        if chaos_counts:
            rng = random.Random(args.seed)
            events = schedule(rng, chaos_counts, seconds=args.seconds,
                              lock_seconds=args.lock_seconds)
            chaos = Chaos(portal=portal, campaign=campaign, conn=conn, collector=collector,
                          workers=workers, rng=rng, lock_seconds=args.lock_seconds, bomb=bomb,
                          began=run.began)
            chaos_run(chaos, run, events, seconds=args.seconds)
            print(f"  chaos over after {time.monotonic() - run.began:.0f} s: "
                  f"{sum(chaos.injected.values())} faults", flush=True)
        ended = wait_terminal(run, conn=conn, collector=collector, workers=workers,
                              stall=args.stall, timeout=args.timeout)
        print(f"  {label}: {ended} after {run.seconds:.1f} s", flush=True)
        drain(conn, collector=collector, workers=workers)
    finally:
        workers.stop()
        collector.stop()
        if chaos is not None:
            for popen, _ in chaos.lockers:
                terminate(popen, timeout=5)
        db_short_statements(portal, False)
    try:
        results_left = conn.llen("htportal:results")
    except Exception:
        results_left = -1
    return {"label": label, "run": run, "ended": ended, "collector": collector,
            "workers": workers, "chaos": chaos, "checks": checks(portal, campaign, log),
            "results_left": results_left, "log": log}


# --- the table --------------------------------------------------------------------------------

def row(name: str, value, target: str = "", ok: Optional[bool] = None) -> None:
    verdict = "" if ok is None else ("ok" if ok else "MISSED")
    print(f"{name:<52}{str(value):>14}  {target:<14}{verdict}")


def print_table(args, result: dict, baseline: Optional[dict]) -> None:
    run, chk, collector, workers = (result["run"], result["checks"], result["collector"],
                                    result["workers"])
    chaos: Optional[Chaos] = result["chaos"]
    counts = chk["counts"]
    task = f"sleep {args.task_seconds} s" if args.task_seconds > 0 else "noop"
    print(f"\nchaos: {args.tasks:,} {task} tasks, {args.workers} workers + the collector, "
          f"chaos for up to {args.seconds:.0f} s, seed {args.seed}, {result['ended']} after "
          f"{run.seconds:.1f} s")
    print(f"{'metric':<52}{'value':>14}  {'target':<14}verdict")
    if chaos is not None:
        for kind in PROCESS_KINDS + POISON_KINDS + FORGED_KINDS:
            unfinished = chaos.while_unfinished[kind]
            row(f"faults: {kind}", chaos.injected[kind],
                f"({unfinished} in run)" if unfinished != chaos.injected[kind] else "")
        wiped = sum(chaos.wiped.values())
        if wiped:
            row("  envelopes wiped unread by a Redis restart", wiped, "(pushed again)")
        held = chaos.locks_held()
        if chaos.lockers:
            row("  database lock held (s, each)", " ".join(f"{h:.0f}" for h in held) or "none")
    row("collector restarts after our SIGKILL", collector.ours)
    startups = sorted(collector.startups())
    row("collector start-up, spawn to its loop (s)",
        f"{startups[len(startups) // 2]:.1f} / {startups[-1]:.1f}" if startups else "none",
        f"median / max of {len(startups)}")
    row("unexpected collector exits", len(collector.unexpected), "0",
        not collector.unexpected)
    row("workers started (replacing killed/exited)", workers.started)
    row("worker exits we did not cause", len(workers.exits_other))
    row("tasks done", counts.get("done", 0))
    row("tasks failed", counts.get("failed", 0))
    row("tasks stuck (not terminal)", len(chk["stuck"]), "0", not chk["stuck"])
    row("records with exactly one clean result", chk["clean"], f"= done {chk['done']:,}",
        chk["clean"] == chk["done"])
    row("lost (done, record lacks the result)", chk["lost"], "0", chk["lost"] == 0)
    row("records holding a poison/forged value", len(chk["dirty"]), "0", not chk["dirty"])
    row("tasks marked by a forged failure", chk["forged_failures"], "0",
        chk["forged_failures"] == 0)
    row("ledger rows with impossible values", chk["impossible"], "0", chk["impossible"] == 0)
    row("gzip-bomb kept files stored", chk["bombs"], "0", chk["bombs"] == 0)
    extra_done = chk["minute_done"] - chk["done"]
    row("duplicate writes: rollup done - ledger done", extra_done, "0", extra_done == 0)
    extra_failed = chk["minute_failed"] - counts.get("failed", 0)
    row("duplicate writes: rollup failed - ledger fail", extra_failed, "0", extra_failed == 0)
    extra_logged = chk["logged_done"] - chk["done"]
    row("duplicate writes: collector logged - ledger", extra_logged, "<= 0", extra_logged <= 0)
    row("results left in htportal:results", result["results_left"], "0",
        result["results_left"] == 0)
    row("peak collector RSS (MB, VmHWM)", f"{collector.peak_mb:,.0f}", f"< {RSS_TARGET_MB}",
        0 < collector.peak_mb < RSS_TARGET_MB)
    row("collector processes sampled", len(collector.peak_kb))
    row("throughput (terminal tasks/s)", f"{run.rate:,.1f}",
        "" if run.finished else "(unfinished)")
    if baseline is not None:
        base = baseline["run"]
        row("throughput without faults (tasks/s)", f"{base.rate:,.1f}",
            "" if base.finished else "(unfinished)")
        row("ratio with chaos / without", f"{run.rate / max(base.rate, 1e-9):.2f}")
    for line, n in Counter(collector.unexpected).most_common(10):
        print(f"unexpected collector exit x{n}: {line}")
    if chk["failed_classes"]:
        print("failed tasks by error class: " + ", ".join(
            f"{name} {n}" for name, n in chk["failed_classes"].most_common()))
    if chk["stuck"]:
        print("stuck tasks by state: " + ", ".join(
            f"{name} {n}" for name, n in Counter(t[1] for t in chk["stuck"]).most_common()))
        for t in chk["stuck"][:5]:
            print(f"  stuck: {t[6]} record {t[0]} state {t[1]} delivery {t[7]} attempts {t[8]} "
                  f"updated {t[9]:%H:%M:%S}")
    if chk["dirty"]:
        print(f"records holding a chaos value (first 5): {', '.join(chk['dirty'][:5])}")
    if chaos is not None:
        if chaos.replay_variants:
            print("replayed old failure, attempt id of: " + ", ".join(
                f"{what} x{n}" for what, n in chaos.replay_variants.items()))
        for note in chaos.notes[:10]:
            print(f"note: {note}")
    if workers.exits_other:
        print(f"worker exits we did not cause (first 5): {'; '.join(workers.exits_other[:5])}")


# --- main -------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--seconds", type=float, help="chaos time at most (default 120; quick 60)")
    parser.add_argument("--db", choices=DB_CHOICES,
                        help="sqlite or postgres (a throwaway database); default DATABASE_URL "
                             "when set, else sqlite")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--baseline", dest="baseline", action="store_true", default=True,
                        help="run the same campaign without chaos first (the default)")
    parser.add_argument("--no-baseline", dest="baseline", action="store_false")
    parser.add_argument("--quick", action="store_true", help="4,000 tasks, 60 s, fewer faults")
    parser.add_argument("--task-seconds", type=float, default=0.02,
                        help="each task sleeps this long (0: the noop task)")
    parser.add_argument("--worker-kills", type=int)
    parser.add_argument("--collector-kills", type=int)
    parser.add_argument("--redis-restarts", type=int)
    parser.add_argument("--db-locks", type=int)
    parser.add_argument("--lock-seconds", type=float, default=20.0)
    parser.add_argument("--poison-rounds", type=int,
                        help="times each poison and forged envelope kind is pushed")
    parser.add_argument("--bomb-mb", type=int, default=BOMB_MB,
                        help="MB of zeros the gzip bomb inflates to")
    parser.add_argument("--stall", type=float, default=150.0,
                        help="stop waiting when no task became terminal for S s (a killed "
                             "worker's job is found abandoned ~70 s after the kill)")
    parser.add_argument("--timeout", type=float, default=1800.0,
                        help="stop waiting for terminal tasks after S s")
    parser.add_argument("--only", action="append", metavar="TEXT",
                        help="inject only the fault kinds whose name contains TEXT (repeatable; "
                             "e.g. --only nested --only 'SIGKILL')")
    parser.add_argument("--keep", action="store_true", help="keep the database and the logs")
    args = parser.parse_args()
    size = {name: getattr(args, name) if getattr(args, name) is not None
            else values[1 if args.quick else 0] for name, values in SIZES.items()}
    args.tasks, args.seconds = size["tasks"], size["seconds"]
    chaos_counts = {
        "SIGKILL worker": size["worker_kills"], "SIGKILL collector": size["collector_kills"],
        "Redis restarted empty": size["redis_restarts"], "database locked": size["db_locks"],
        **{kind: size["poison_rounds"] for kind in POISON_KINDS + FORGED_KINDS}}
    if args.only:
        chaos_counts = {kind: count if any(text.lower() in kind.lower() for text in args.only)
                        else 0 for kind, count in chaos_counts.items()}
        if not any(chaos_counts.values()):
            parser.error(f"--only {args.only}: no fault kind matches (kinds: "
                         f"{', '.join(chaos_counts)})")

    atexit.register(children_stop)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    began = time.monotonic()
    portal = portal_start(db=args.db)
    atexit.register(portal.redis.stop)
    try:
        conn = redis_client(portal.url)
        print(f"bench_chaos: {args.tasks:,} tasks, {args.workers} workers, chaos up to "
              f"{args.seconds:.0f} s, seed {args.seed}, {portal.vendor} database, redis-server "
              f"{conn.info('server')['redis_version']}, Python {sys.version.split()[0]}, "
              f"{os.cpu_count()} CPUs; logs in {portal.directory}", flush=True)
        bomb = bomb_entry(args.bomb_mb)
        baseline = (campaign_run(portal, args, label="baseline", chaos_counts=None, bomb=None)
                    if args.baseline else None)
        result = campaign_run(portal, args, label="chaos", chaos_counts=chaos_counts, bomb=bomb)
        if baseline is not None:
            b = baseline["checks"]
            print(f"\nbaseline (no faults): {baseline['ended']} after "
                  f"{baseline['run'].seconds:.1f} s; done {b['done']:,}, failed "
                  f"{b['counts'].get('failed', 0):,}, stuck {len(b['stuck']):,}, lost "
                  f"{b['lost']:,}, unexpected collector exits "
                  f"{len(baseline['collector'].unexpected)}, peak collector RSS "
                  f"{baseline['collector'].peak_mb:,.0f} MB, collector start-up "
                  + ", ".join(f"{t:.1f} s" for t in baseline["collector"].startups()))
        print_table(args, result, baseline)
    finally:
        children_stop()
        portal.stop(keep=args.keep)
    if args.keep:
        print(f"kept: {portal.directory}")
    print(f"\n(total {time.monotonic() - began:.0f} s)")


if __name__ == "__main__":
    main()
