"""Local workers stop with the scaler that started them: a real `manage.py scale` process
with a local pool, its real worker processes, and SIGINT (Ctrl-C), SIGTERM or SIGKILL."""
from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest
from rq import Queue
from rq.serializers import JSONSerializer

from tests.pipeline.collect_helpers import Process, Processes, wait_for
from workers.models import WorkerPool
from workers.scaler.local import _is_worker

NOOP_SPEC = {"function": "noop", "arg_sets": [{"name": "a", "parameters": {}}]}


def alive(pid: int) -> bool:
    """A process that exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def worker_pids(work_dir: Path) -> list:
    pids = []
    for path in (work_dir / "pids").glob("*.pid"):
        try:
            pids.append(int(path.read_text()))
        except ValueError:
            pass
    return [pid for pid in pids if _is_worker(pid)]


@pytest.fixture
def scaler_with_workers(redis_server, redis_conn, tmp_path):
    """A scaler process whose local pool runs two idle workers (max-idle 600 s)."""
    work_dir = tmp_path / "here"
    WorkerPool.objects.create(name="here", kind="local", queues="stoptest", max_workers=2,
                              max_waiting_jobs=2, max_idle=600, work_dir=str(work_dir))
    queue = Queue("stoptest:normal", connection=redis_conn, serializer=JSONSerializer)
    for i in range(4):
        queue.enqueue("noop", record={"id": f"mol-{i}", "input": {}}, spec=NOOP_SPEC)
    processes = Processes(redis_url=redis_server.url, tmp_path=tmp_path)
    scaler = Process([sys.executable, "manage.py", "scale", "--interval", "60"],
                     env=processes.env(HTPORTAL_WORKER_REDIS_FALLBACK="local"),
                     log_path=tmp_path / "scaler.log")
    try:
        wait_for(lambda: ready(work_dir),
                 timeout=60, what="two local workers", processes=(scaler, WorkerLogs(work_dir)))
        yield scaler, worker_pids(work_dir)
    finally:
        scaler.stop()
        for pid in worker_pids(work_dir):
            os.kill(pid, signal.SIGKILL)


def ready(work_dir: Path) -> bool:
    """Two workers listening: past their start-up, their SIGTERM handler in place."""
    return (len(worker_pids(work_dir)) == 2
            and WorkerLogs(work_dir).log().count("*** Listening on") == 2)


class WorkerLogs:
    """The local workers' logs, for wait_for's failure message."""

    def __init__(self, work_dir: Path) -> None:
        self.work_dir = work_dir

    def log(self) -> str:
        return "\n".join(f"--- {path.name} ---\n{path.read_text()}"
                         for path in sorted((self.work_dir / "logs").glob("*.log")))


def gone_within(pids: list, seconds: float) -> list:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and any(alive(pid) for pid in pids):
        time.sleep(0.1)
    return [pid for pid in pids if alive(pid)]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_the_scalers_local_workers_stop_when_it_is_stopped(scaler_with_workers, signum):
    scaler, pids = scaler_with_workers

    scaler.signal(signum)

    assert scaler.wait(15) == 0
    assert gone_within(pids, 5) == []
    log = scaler.log()
    assert "local pool: stopped 2 workers" in log
    assert "after SIGTERM; killed" not in log  # each worker stopped on SIGTERM, not SIGKILL
    pids_dir = Path(scaler.log_path).parent / "here" / "pids"
    # reaped by the scaler: no pid file left, and no .failed one (each exited 0 on SIGTERM)
    assert {path.name: path.read_text() for path in pids_dir.iterdir()} == {}


@pytest.mark.django_db(transaction=True)
def test_a_killed_scaler_takes_its_local_workers_along(scaler_with_workers):
    scaler, pids = scaler_with_workers

    scaler.signal(signal.SIGKILL)

    assert scaler.wait(5) == -signal.SIGKILL
    assert gone_within(pids, 5) == []
