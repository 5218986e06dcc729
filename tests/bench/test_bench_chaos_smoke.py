"""Smoke test of bench/bench_chaos.py: a small campaign through real workers and the real
collector under the faults the bench injects (SIGKILLed workers and collector, the SQLite
database locked, poison and forged envelopes; Redis restarts: see RESTART) must end with every
task terminal, no result lost and no collector exit the bench did not cause itself.

The bench runs once, as a subprocess, with tiny numbers; the tests read its printed table. On
a collector that a fault brings down, or a reconcile that leaves tasks behind, they fail.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench import bench_chaos

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
TASKS = 300
# 300 tasks of 0.15 s on 2 workers take longer than the 20 s of chaos, so every fault lands
# while tasks are still out. One fault of each process kind, each envelope kind once.
ARGV = ["--tasks", str(TASKS), "--workers", "2", "--seconds", "20", "--task-seconds", "0.15",
        "--no-baseline", "--db", "sqlite", "--seed", "7", "--worker-kills", "2",
        "--collector-kills", "2", "--redis-restarts", "0", "--db-locks", "1",
        "--lock-seconds", "5", "--poison-rounds", "1", "--bomb-mb", "50", "--stall", "300",
        "--timeout", "600"]
RUN_TIMEOUT_S = 1200


@pytest.fixture(scope="module")
def table() -> str:
    env = {key: value for key, value in os.environ.items() if key != "DATABASE_URL"}
    # A SIGKILLed worker's task is WorkerLost once rq's heartbeat deadline (the job timeout,
    # 60 s, plus 60 s) and reconcile's grace have passed: a short grace keeps the run short.
    env["HTPORTAL_RECONCILE_GRACE_S"] = "5"
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_chaos.py"), *ARGV],
                          cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=RUN_TIMEOUT_S)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "\nmetric " in done.stdout, done.stdout[-3000:]
    return done.stdout


def shown(table: str) -> str:
    """The bench's table and what it printed under it, for a failing assertion."""
    return table[table.find("\nchaos: "):]


def value(table: str, name: str) -> int:
    """The whole number in the table's row `name`."""
    match = re.search(rf"^{re.escape(name)}\s+(-?[\d,]+)\b", table, re.M)
    assert match, f"no row {name!r} in the table:\n{table[-3000:]}"
    return int(match.group(1).replace(",", ""))


# No Redis restart here: one that wipes a job's hash leaves no worker name to check a forged
# result against, and the attempt id alone then lets it in (docs/security-redis.md, "What
# attribution of results can and cannot do"); the full bench measures that case, and
# tests/pipeline/test_faults.py restarts Redis under a real campaign.
RESTART = "Redis restarted empty"


def test_it_injects_every_kind_of_fault(table):
    kinds = [kind for kind in bench_chaos.PROCESS_KINDS if kind != RESTART]
    kinds += bench_chaos.POISON_KINDS + bench_chaos.FORGED_KINDS
    assert {kind: value(table, f"faults: {kind}") >= 1 for kind in kinds} == \
        {kind: True for kind in kinds}, shown(table)


def test_it_leaves_no_task_stuck(table):
    assert value(table, "tasks stuck (not terminal)") == 0, shown(table)
    assert value(table, "tasks done") + value(table, "tasks failed") == TASKS, shown(table)


def test_it_loses_no_result(table):
    assert value(table, "lost (done, record lacks the result)") == 0, shown(table)
    clean = value(table, "records with exactly one clean result")
    assert clean == value(table, "tasks done"), shown(table)


def test_it_needs_no_collector_restart_but_those_of_its_own_kills(table):
    assert value(table, "unexpected collector exits") == 0, shown(table)
    assert value(table, "collector restarts after our SIGKILL") == 2, shown(table)


def test_it_writes_no_poison_or_forged_value(table):
    assert value(table, "records holding a poison/forged value") == 0, shown(table)
    assert value(table, "tasks marked by a forged failure") == 0, shown(table)
    assert value(table, "gzip-bomb kept files stored") == 0, shown(table)


def test_it_writes_each_result_once(table):
    assert value(table, "duplicate writes: rollup done - ledger done") == 0, shown(table)
