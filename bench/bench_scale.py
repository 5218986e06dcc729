"""Scale: the real feeder + collector (`manage.py collect`) against 10,000 simulated workers.

    .venv/bin/python bench/bench_scale.py [--workers 10000] [--tasks 150000] [--seconds 90]
                                          [--warmup 15] [--sim-procs 1] [--batch 500]
                                          [--no-register] [--profile S]

One throwaway portal (bench/_harness.py: private redis-server, fresh migrated SQLite database),
a dataset of N records and a `sleep` campaign submitted with campaign_submit. The simulated
workers (bench/sim_workers.py, asyncio, one loopback connection each, split over --sim-procs
processes) connect and register first; then `manage.py collect` starts and feeds, collects and
reconciles as in production. Each simulated job: BLPOP, HGET data, sleep 0.2-0.5 s, RPUSH the
reply envelope and mark the job finished.

Measured over the window (--seconds, starting --warmup s after the first task is done):
- completed tasks/s as the ledger sees it: Task rows in state done, counted once a second;
- collector lag: from a reply's RPUSH (the simulator's clock, right after the pipeline
  returned) to its task's `updated_at` (the collector's clock, stamped inside the batch's
  transaction just before the ledger bulk_update; the commit follows in that batch);
- CPU as a share of one core, from /proc/PID/stat utime+stime: the collector process,
  redis-server, the simulator processes and this process (the poller); and the whole machine.
The collector's own log lines in the window give its batches and feeds.

--profile S runs `py-spy record` on the collector for S seconds inside the window and prints
the functions that take most of its samples (py-spy itself then uses CPU too).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import signal
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Dict, List, Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._harness import Portal, portal_start  # noqa: E402

QUEUE = "bench"
TARGET_PER_S = 1000
RECORD_PER_S = 100  # the original system's, with 10,000 workers
FD_MARGIN = 200
TICKS = os.sysconf("SC_CLK_TCK")
CONNECT_TIMEOUT_S = 180
FIRST_DONE_TIMEOUT_S = 180
BATCH_LINE = re.compile(r"collected (\d+) results \(.*\) in ([\d.]+) s")
FEED_LINE = re.compile(r"fed \S+: ([\d,]+) jobs \(window ([\d,]+), ([\d,]+) were waiting\)")


# --- processes and their CPU ------------------------------------------------------------------

def terminate(popen: subprocess.Popen, timeout: float = 60) -> None:
    """SIGTERM, then SIGKILL after `timeout` seconds; reaped either way."""
    if popen.poll() is None:
        popen.send_signal(signal.SIGTERM)
    try:
        popen.wait(timeout)
    except subprocess.TimeoutExpired:
        popen.kill()
        popen.wait()


def raise_fd_limit(needed: int) -> int:
    """Raise RLIMIT_NOFILE's soft limit to the hard one (children inherit it); return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < needed:
        print(f"note: RLIMIT_NOFILE hard limit {hard:,} < {needed:,}: redis-server can hold at "
              f"most ~{hard - 32:,} clients; the table shows how many connected")
    return hard


def cpu_ticks(pid: int) -> int:
    """utime + stime of a process (all its threads), in clock ticks."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def machine_ticks() -> tuple:
    """(busy, total) ticks of all CPUs since boot."""
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


class Sim:
    """One simulator process; its stdout's JSON lines are read by a thread."""

    def __init__(self, *, portal: Portal, workers: int, first: int, push_log: Path,
                 register: bool, log_path: Path) -> None:
        argv = [sys.executable, str(ROOT / "bench" / "sim_workers.py"),
                "--redis-url", portal.url, "--workers", str(workers), "--first", str(first),
                "--queue", QUEUE, "--push-log", str(push_log)]
        if not register:
            argv.append("--no-register")
        self.push_log = push_log
        self.stderr = open(log_path, "wb")
        self.popen = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE,
                                      stderr=self.stderr, text=True)
        self.last: dict = {}
        self.final: dict = {}
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.popen.stdout:
            try:
                state = json.loads(line)
            except ValueError:
                continue
            if state.get("final"):
                self.final = state
            else:
                self.last = state

    def stop(self) -> None:
        terminate(self.popen)
        self.reader.join(5)
        self.stderr.close()


def sims_start(*, portal: Portal, workers: int, procs: int, register: bool) -> List[Sim]:
    sims, first = [], 0
    for index in range(procs):
        share = workers // procs + (1 if index < workers % procs else 0)
        sims.append(Sim(portal=portal, workers=share, first=first, register=register,
                        push_log=portal.directory / f"pushes-{index}.txt",
                        log_path=portal.directory / f"sim-{index}.log"))
        first += share
    return sims


def sims_total(sims: List[Sim], what: str) -> int:
    return sum(sim.last.get(what, 0) for sim in sims)


def sims_wait_connected(sims: List[Sim], workers: int) -> float:
    """Seconds until every simulated worker connected (or the connects stopped failing)."""
    started = time.monotonic()
    while time.monotonic() - started < CONNECT_TIMEOUT_S:
        connected, errors = sims_total(sims, "connected"), sims_total(sims, "errors")
        if connected + errors >= workers:
            return time.monotonic() - started
        for sim in sims:
            if sim.popen.poll() is not None:
                raise SystemExit(f"a simulator exited with {sim.popen.returncode}; see "
                                 f"{sim.stderr.name}")
        time.sleep(0.5)
    print(f"note: only {sims_total(sims, 'connected'):,} of {workers:,} connected after "
          f"{CONNECT_TIMEOUT_S} s; going on")
    return time.monotonic() - started


# --- the portal -------------------------------------------------------------------------------

def campaign_make(portal: Portal, *, tasks: int, seconds: float):
    """A running `sleep` campaign of `tasks` tasks (one arg set `a`) on QUEUE."""
    from campaigns.models import ArgSet, Campaign
    from campaigns.services.submission import campaign_submit

    dataset = portal.dataset("scale", tasks)
    campaign = Campaign.objects.create(name="scale", dataset=dataset, function="sleep",
                                       output_key="out", queue=QUEUE, priority="normal",
                                       job_timeout=300)
    ArgSet.objects.create(campaign=campaign, name="a", parameters={"seconds": seconds},
                          position=0)
    started = time.monotonic()
    report = campaign_submit(campaign=campaign)
    print(f"  submitted: {report.line()} in {time.monotonic() - started:.1f} s", flush=True)
    return campaign


class Collector:
    """`manage.py collect`, restarted when it exits, as the Procfile's supervisor would do; the
    restarts are counted and shown. CPU ticks of a dead run are kept from its last sample."""

    RESTART_AFTER_S = 1.0

    def __init__(self, portal: Portal, *, batch: int, log_path: Path) -> None:
        self.portal, self.batch, self.log_path = portal, batch, log_path
        self.exits: List[str] = []  # "exit CODE: last log line", one per restart
        self.dead_ticks = 0
        self.last_ticks = 0
        self.popen = self._start()

    def _start(self) -> subprocess.Popen:
        with open(self.log_path, "ab") as log:
            return subprocess.Popen(
                [sys.executable, "manage.py", "collect", "--batch", str(self.batch)], cwd=ROOT,
                env=self.portal.env(HTPORTAL_LOG_LEVEL="INFO"), stdout=log,
                stderr=subprocess.STDOUT)

    def check(self) -> None:
        """Sample its CPU; restart it if it has exited."""
        if self.popen.poll() is None:
            try:
                self.last_ticks = cpu_ticks(self.popen.pid)
            except FileNotFoundError:  # exited between poll and read
                pass
            return
        lines = self.log_path.read_text(errors="replace").strip().splitlines()
        self.exits.append(f"exit {self.popen.returncode}: {lines[-1] if lines else '?'}")
        print(f"  collector exited ({self.exits[-1]}); restarting it", flush=True)
        self.dead_ticks += self.last_ticks
        self.last_ticks = 0
        time.sleep(self.RESTART_AFTER_S)
        self.popen = self._start()

    def ticks(self) -> int:
        self.check()
        return self.dead_ticks + self.last_ticks

    def stop(self) -> None:
        terminate(self.popen)


def done_count(db: sqlite3.Connection) -> int:
    # fetchall: the statement runs to its end, so this reader never pins an old WAL snapshot.
    return db.execute("SELECT COUNT(*) FROM campaigns_task WHERE state = 'done'").fetchall()[0][0]


def lag_seconds(db: sqlite3.Connection, sims: List[Sim], start: float, end: float) -> List[float]:
    """RPUSH -> ledger updated_at, for the tasks the ledger stamped inside [start, end]."""
    pushed: Dict[str, float] = {}
    for sim in sims:
        if sim.push_log.exists():
            for line in sim.push_log.read_text().splitlines():
                job_id, when = line.split()
                pushed[job_id] = float(when)
    lags = []
    for job_id, updated_at in db.execute(
            "SELECT job_id, updated_at FROM campaigns_task WHERE state = 'done'"):
        stamped = datetime.fromisoformat(updated_at).replace(tzinfo=timezone.utc).timestamp()
        if start <= stamped <= end and job_id in pushed:
            lags.append(stamped - pushed[job_id])
    return lags


def percentile(values: List[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def collector_window_log(log_path: Path, start: int, end: int) -> dict:
    """Batches and feeds the collector logged between two offsets of its log, and warnings."""
    with open(log_path, "rb") as log:
        log.seek(start)
        text = log.read(end - start).decode(errors="replace")
    batches = [(int(n), float(s)) for n, s in BATCH_LINE.findall(text)]
    feeds = [(int(a.replace(",", "")), int(w.replace(",", "")), int(q.replace(",", "")))
             for a, w, q in FEED_LINE.findall(text)]
    return {"batches": batches, "feeds": feeds,
            "warnings": [line for line in text.splitlines() if " WARNING " in line
                         or " ERROR " in line]}


# --- profiling --------------------------------------------------------------------------------

def profile_start(pid: int, seconds: int, out: Path) -> subprocess.Popen:
    return subprocess.Popen([str(ROOT / ".venv" / "bin" / "py-spy"), "record", "--pid", str(pid),
                             "--duration", str(seconds), "--rate", "100", "--format", "raw",
                             "--output", str(out), "--nonblocking"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def profile_summary(raw: Path, top: int = 18) -> List[str]:
    """Functions by share of samples that have them on the stack (py-spy's collapsed stacks)."""
    inclusive: Counter = Counter()
    leaf: Counter = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
        total += int(count)
        for frame in set(frames):
            inclusive[frame] += int(count)
        leaf[frames[-1]] += int(count)
    lines = [f"py-spy: {total:,} samples of the collector; % of samples with the function on "
             f"the stack (leaf %)"]
    for frame, count in inclusive.most_common(top):
        lines.append(f"  {100 * count / total:5.1f}% ({100 * leaf[frame] / total:4.1f}%)  {frame}")
    return lines


# --- the run ----------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=10_000)
    parser.add_argument("--tasks", type=int, default=150_000)
    parser.add_argument("--seconds", type=float, default=90.0, help="measuring window")
    parser.add_argument("--warmup", type=float, default=15.0,
                        help="seconds after the first task done before the window starts")
    parser.add_argument("--sim-procs", type=int, default=1, help="simulator processes")
    parser.add_argument("--batch", type=int, default=500, help="collector --batch")
    parser.add_argument("--task-mean", type=float, default=0.35,
                        help="the arg set's seconds (the simulator sleeps 0.2-0.5 s)")
    parser.add_argument("--no-register", action="store_true",
                        help="simulated workers do not register: the feed window stays at "
                             "FEED_MIN_WINDOW")
    parser.add_argument("--profile", type=int, default=0, metavar="S",
                        help="py-spy record the collector for S s in the window")
    args = parser.parse_args()

    hard = raise_fd_limit(args.workers // args.sim_procs + FD_MARGIN)
    portal = portal_start()
    conn = portal.connection()
    conn.config_set("maxclients", args.workers + FD_MARGIN)
    maxclients = int(conn.config_get("maxclients")["maxclients"])
    cores = os.cpu_count()
    print(f"bench_scale: {args.workers:,} simulated workers in {args.sim_procs} process(es), "
          f"{args.tasks:,} sleep tasks (0.2-0.5 s), redis-server "
          f"{conn.info('server')['redis_version']} (maxclients {maxclients:,}), "
          f"Python {sys.version.split()[0]}, {cores} CPUs, RLIMIT_NOFILE {hard:,}", flush=True)
    sims: List[Sim] = []
    collector: Optional[Collector] = None
    collector_log = portal.directory / "collector.log"
    try:
        started = time.monotonic()
        campaign_make(portal, tasks=args.tasks, seconds=args.task_mean)
        print(f"  portal ready in {time.monotonic() - started:.1f} s", flush=True)
        sims = sims_start(portal=portal, workers=args.workers, procs=args.sim_procs,
                          register=not args.no_register)
        ramp = sims_wait_connected(sims, args.workers)
        connected = sims_total(sims, "connected")
        print(f"  {connected:,} simulated workers connected in {ramp:.1f} s "
              f"(redis connected_clients {conn.info('clients')['connected_clients']:,})",
              flush=True)
        collector = Collector(portal, batch=args.batch, log_path=collector_log)
        db = sqlite3.connect(str(portal.database), timeout=30)
        result = measure(args, portal=portal, conn=conn, db=db, sims=sims,
                         collector=collector, collector_log=collector_log)
        collector.stop()
        for sim in sims:
            sim.stop()
        result["lags"] = lag_seconds(db, sims, result["wall_start"], result["wall_end"])
        result["connected"] = connected
        result["ramp"] = ramp
        result["restarts"] = collector.exits
        print_table(args, result, cores)
        summary = collector_log.read_text(errors="replace").strip().splitlines()
        print(f"collector's last words: {' | '.join(summary[-2:])}")
    finally:
        if collector is not None:
            collector.stop()
        for sim in sims:
            if sim.popen.poll() is None:
                sim.stop()
        conn.close()
        if os.environ.get("BENCH_KEEP"):
            print(f"kept {portal.directory}")
            portal.redis.stop()
        else:
            portal.stop()


def measure(args, *, portal: Portal, conn, db, sims: List[Sim], collector: Collector,
            collector_log: Path) -> dict:
    """Wait for the first task done and the warm-up, then sample the window; return figures."""
    started = time.monotonic()
    while done_count(db) == 0:
        collector.check()
        if len(collector.exits) > 3:
            raise SystemExit("the collector keeps exiting:\n"
                             + collector_log.read_text(errors="replace")[-3000:])
        if time.monotonic() - started > FIRST_DONE_TIMEOUT_S:
            raise SystemExit(f"no task done after {FIRST_DONE_TIMEOUT_S} s:\n"
                             + collector_log.read_text(errors="replace")[-3000:])
        time.sleep(0.2)
    first_done = time.monotonic() - started
    print(f"  first task done {first_done:.1f} s after the collector started; warming up "
          f"{args.warmup:.0f} s", flush=True)
    warm_end = time.monotonic() + args.warmup
    while time.monotonic() < warm_end:
        collector.check()
        time.sleep(0.5)

    pids = {"redis-server": [portal.redis.process.pid],
            "simulator": [sim.popen.pid for sim in sims], "bench (poller)": [os.getpid()]}
    cpu0 = {name: sum(cpu_ticks(p) for p in ps) for name, ps in pids.items()}
    cpu0["collector"] = collector.ticks()
    machine0 = machine_ticks()
    log0 = collector_log.stat().st_size
    restarts0 = len(collector.exits)
    t0, wall0, done0 = time.monotonic(), time.time(), done_count(db)
    total = args.tasks
    profiler = None
    if args.profile:
        profiler = profile_start(collector.popen.pid, args.profile, portal.directory / "collector.raw")
    samples = []  # (t, done, results waiting, jobs waiting, busy workers)
    last_print = t0
    while True:
        time.sleep(1.0)
        collector.check()
        now = time.monotonic()
        done = done_count(db)
        with conn.pipeline(transaction=False) as pipe:
            pipe.llen("htportal:results")
            for priority in ("high", "normal", "low"):
                pipe.llen(f"rq:queue:{QUEUE}:{priority}")
            lengths = pipe.execute()
        samples.append((now - t0, done, lengths[0], sum(lengths[1:]), sims_total(sims, "busy")))
        if now - last_print >= 5:
            rate = (done - samples[-6][1]) / (now - t0 - samples[-6][0]) if len(samples) > 5 \
                else (done - done0) / (now - t0)
            print(f"  t={now - t0:5.1f}s done {done:,}/{total:,} ({rate:,.0f}/s) results waiting "
                  f"{lengths[0]:,}, jobs queued {sum(lengths[1:]):,}, workers busy "
                  f"{sims_total(sims, 'busy'):,}", flush=True)
            last_print = now
        if now - t0 >= args.seconds or done >= total:
            break
    t1, wall1 = time.monotonic(), time.time()
    for sim in sims:
        if sim.popen.poll() is not None:
            raise SystemExit(f"a simulator exited with {sim.popen.returncode} in the window: "
                             + Path(sim.stderr.name).read_text(errors="replace")[-3000:])
    cpu1 = {name: sum(cpu_ticks(p) for p in ps) for name, ps in pids.items()}
    cpu1["collector"] = collector.ticks()
    restarts_in_window = len(collector.exits) - restarts0
    machine1 = machine_ticks()
    log1 = collector_log.stat().st_size
    done1 = samples[-1][1]
    profile = []
    if profiler is not None:
        profiler.wait(args.profile + 60)
        raw = portal.directory / "collector.raw"
        profile = profile_summary(raw) if raw.exists() else ["py-spy wrote no profile"]
    window = t1 - t0
    return {
        "window": window, "wall_start": wall0, "wall_end": wall1, "done0": done0,
        "done1": done1, "finished_early": done1 >= total, "samples": samples,
        "cpu": {name: (cpu1[name] - cpu0[name]) / TICKS / window for name in cpu1},
        "machine": (machine1[0] - machine0[0]) / max(1, machine1[1] - machine0[1]),
        "log": collector_window_log(collector_log, log0, log1), "profile": profile,
        "first_done": first_done, "restarts_in_window": restarts_in_window,
    }


def print_table(args, r: dict, cores: int) -> None:
    rate = (r["done1"] - r["done0"]) / r["window"]
    samples = r["samples"]
    lags = r["lags"]
    log = r["log"]
    batches, feeds = log["batches"], log["feeds"]
    rows = [
        ("collector exits (restarted)", f"{len(r['restarts'])} in all, "
                                        f"{r['restarts_in_window']} in the window"),
        ("simulated workers connected", f"{r['connected']:,} of {args.workers:,} "
                                        f"(in {r['ramp']:.1f} s)"),
        ("window", f"{r['window']:.1f} s" + (" (campaign finished: cut short)"
                                             if r["finished_early"] else "")),
        ("tasks done in the window (ledger)", f"{r['done1'] - r['done0']:,}"),
        ("completed tasks/s (ledger)", f"{rate:,.1f}"),
        ("  vs target 1,000/s; old record 100/s", f"{rate / TARGET_PER_S:.1%} of target; "
                                                  f"{rate / RECORD_PER_S:.1f}x the record"),
        ("collector lag p50 / p99 (RPUSH->ledger)",
         f"{percentile(lags, 50):.2f} s / {percentile(lags, 99):.2f} s ({len(lags):,} tasks)"
         if lags else "n/a"),
        ("results waiting in htportal:results", f"mean {statistics.mean(s[2] for s in samples):,.0f}"
                                                f", end {samples[-1][2]:,}"),
        ("jobs waiting in the RQ queues", f"mean {statistics.mean(s[3] for s in samples):,.0f}, "
                                          f"end {samples[-1][3]:,}"),
        ("simulated workers busy", f"mean {statistics.mean(s[4] for s in samples):,.0f}"),
        ("collector batches", f"{len(batches):,}, mean {statistics.mean(n for n, _ in batches):,.0f} "
                              f"results, {statistics.mean(s for _, s in batches):.3f} s each, "
                              f"{sum(s for _, s in batches) / r['window']:.0%} of the window"
         if batches else "none"),
        ("feeds (jobs added, window)", f"{len(feeds):,}, {sum(a for a, _, _ in feeds):,} jobs, "
                                       f"window {feeds[-1][1]:,}" if feeds else "none"),
        ("collector time not in batches", f"{1 - sum(s for _, s in batches) / r['window']:.0%}"
                                          " of the window (feeding, reconciling)"),
    ]
    for name in ("collector", "redis-server", "simulator", "bench (poller)"):
        rows.append((f"CPU {name}", f"{r['cpu'][name]:.1%} of one core"))
    rows.append(("CPU machine", f"{r['machine']:.1%} of {cores} cores"))
    others = r["machine"] * cores - sum(r["cpu"].values())
    rows.append(("CPU of other processes (not this bench)", f"{max(0.0, others):.1%} of one core"))
    width = max(len(name) for name, _ in rows) + 2
    print()
    print(f"{'metric':<{width}}value")
    for name, value in rows:
        print(f"{name:<{width}}{value}")
    for line in r["restarts"]:
        print(f"collector {line}")
    if log["warnings"]:
        print(f"collector warnings/errors in the window: {len(log['warnings'])}, first: "
              f"{log['warnings'][0][:200]}")
    for line in r["profile"]:
        print(line)


if __name__ == "__main__":
    main()
