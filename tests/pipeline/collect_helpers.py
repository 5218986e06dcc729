"""Helpers for the collect, reconcile, status and fault tests: result envelopes, and real worker
and collector processes running against the test Redis and the test database."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, List, Optional

from django.conf import settings
from redis import Redis

from django.db.models import F
from django.utils import timezone

from campaigns.attempts import attempt_id
from campaigns.models import Campaign, Record, Task
from campaigns.pipeline_keys import RESULTS_KEY
from campaigns.services.submission import campaign_submit

REPO = Path(__file__).resolve().parents[2]


# --- results ----------------------------------------------------------------------------------

def values(energy: float = -5.07) -> dict:
    return {"energy": {"value": energy, "unit": "Eh"}}


def arg_set_part(*, status: str = "ok", energy: float = -5.07,
                 error: Optional[dict] = None) -> dict:
    return {"status": status, "values": values(energy) if status == "ok" else {},
            "error": error, "wall_s": 1.5, "cpu_s": 1.25, "exit_code": 0 if status == "ok" else 1,
            "host": "node17"}


def document(task: Task, *, arg_sets: Optional[dict] = None, files: Optional[list] = None,
             **fields) -> dict:
    """A result document (docs/runtime.md) for the task: one ok arg set 'a' unless told."""
    arg_sets = arg_sets if arg_sets is not None else {"a": arg_set_part()}
    failed = any(part.get("status") == "failed" for part in arg_sets.values())
    return {"record_id": task.record_id, "function": "noop", "host": "node17",
            "status": "failed" if failed else "ok",
            "started_at": "2026-11-26T10:00:00+00:00", "finished_at": "2026-11-26T10:00:02+00:00",
            "arg_sets": arg_sets, "files": files or [], **fields}


def failed_part(message: str = "xtb: exit code 1", tail: str = "abnormal termination") -> dict:
    return arg_set_part(status="failed", error={"class": "ProgramFailed", "message": message,
                                                "output_tail": tail})


def campaign_submitted(make_campaign, *, records: int = 3, seconds: Optional[float] = None,
                       **fields) -> Campaign:
    """A running noop campaign with pending tasks; `seconds` makes it a sleep campaign."""
    if seconds is not None:
        fields["function"] = "sleep"
    campaign = make_campaign(records=records, **fields)
    if seconds is not None:
        campaign.arg_sets.update(parameters={"seconds": seconds})
    campaign_submit(campaign=campaign)
    return campaign


def push(connection: Redis, *envelopes) -> None:
    """RPUSH envelopes (dicts as JSON, bytes as they are) onto the results list."""
    connection.rpush(RESULTS_KEY, *[e if isinstance(e, bytes) else json.dumps(e)
                                    for e in envelopes])


WORKER = "w-test"


def envelope(task: Task, *, worker: str = WORKER, delivery: Optional[int] = None,
             **outcome) -> dict:
    """An envelope as the worker sends it for the task's current delivery (or `delivery`):
    job id, worker name, attempt id, and `result=` or `error=`."""
    number = task.delivery if delivery is None else delivery
    return {"job_id": task.job_id, "worker": worker,
            "attempt": attempt_id(job_id=task.job_id, delivery=number), **outcome}


def ok(task: Task, *, worker: str = WORKER, delivery: Optional[int] = None, **kwargs) -> dict:
    return envelope(task, worker=worker, delivery=delivery, result=document(task, **kwargs))


def error(task: Task, error_class: str = "ProgramFailed", message: str = "it broke",
          **fields) -> dict:
    """An error envelope (fields: worker=, delivery=, fault= ...)."""
    extra = {k: fields.pop(k) for k in ("worker", "delivery") if k in fields}
    return envelope(task, error={"class": error_class, "message": message, **fields}, **extra)


def taken_by(connection: Redis, tasks, worker: str = WORKER) -> None:
    """Name `worker` on the tasks' rq jobs, as rq does when a worker takes a job: the collector
    refuses a result for a job whose hash names no worker yet."""
    for task in tasks:
        connection.hset(f"rq:job:{task.job_id}", "worker_name", worker)


def deliver(campaign: Campaign) -> list:
    """Mark the campaign's pending tasks queued on their next delivery, as the feeder does
    (without putting jobs in Redis); return its tasks in record order, fresh."""
    Task.objects.filter(campaign=campaign, state=Task.State.PENDING).update(
        state=Task.State.QUEUED, delivery=F("delivery") + 1, queued_at=timezone.now())
    return list(Task.objects.filter(campaign=campaign).order_by("record_id"))


def refresh(task: Task) -> Task:
    task.refresh_from_db()
    return task


def results_of(campaign: Campaign, output_key: str = "out") -> dict:
    """record id -> record.results[output_key] for the campaign's dataset."""
    return {r.record_id: r.results.get(output_key)
            for r in Record.objects.filter(dataset=campaign.dataset)}


# --- processes --------------------------------------------------------------------------------

def wait_for(predicate: Callable[[], object], *, timeout: float, what: str,
             every: float = 0.1, processes: tuple = ()) -> object:
    """Poll until predicate() is true; fail naming `what` and showing the processes' logs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    logs = "\n".join(process.log() for process in processes)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{logs}")


class Process:
    """A child process whose stdout and stderr go to one log file."""

    def __init__(self, argv: List[str], *, env: dict, log_path: Path) -> None:
        self.log_path = log_path
        with open(log_path, "ab") as log:
            self.popen = subprocess.Popen(argv, env=env, cwd=REPO, stdout=log,
                                          stderr=subprocess.STDOUT)

    def log(self) -> str:
        return f"--- {self.log_path.name} ---\n{self.log_path.read_text(errors='replace')}"

    def signal(self, signum: int) -> None:
        if self.popen.poll() is None:
            os.kill(self.popen.pid, signum)

    def wait(self, timeout: float = 30) -> int:
        return self.popen.wait(timeout)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.popen.wait(20)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


class Processes:
    """Starts workers and collectors for one test and stops whatever is left at the end.

    The collector runs `manage.py collect` with tests.settings on the test database: its
    HTPORTAL_VAR_DIR holds `test.sqlite3` (the name tests/settings.py gives the default
    database) as a symlink to the test database pytest-django made, and `storage` as a symlink
    to this process's MEDIA_ROOT, so both processes see the same rows and kept files.
    """

    def __init__(self, *, redis_url: str, tmp_path: Path) -> None:
        self.redis_url = redis_url
        self.tmp_path = tmp_path
        self.started: List[Process] = []
        self.var_dir = tmp_path / "collector-var"
        self.var_dir.mkdir(exist_ok=True)
        database = Path(settings.DATABASES["default"]["NAME"])
        _link(self.var_dir / "test.sqlite3", database)
        Path(settings.MEDIA_ROOT).mkdir(parents=True, exist_ok=True)
        _link(self.var_dir / "storage", Path(settings.MEDIA_ROOT))

    def env(self, **extra: str) -> dict:
        return {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings",
                "HTPORTAL_VAR_DIR": str(self.var_dir), "REDIS_URL": self.redis_url,
                "DATABASE_URL": f"sqlite:///{settings.DATABASES['default']['NAME']}",
                "PYTHONUNBUFFERED": "1", "HTPORTAL_HEARTBEAT_INTERVAL": "1",
                # The same key as this process: attempt ids made here check out there.
                "HTPORTAL_SECRET_KEY": settings.SECRET_KEY, **extra}

    def worker(self, *queues: str, name: str, extra: tuple = ()) -> Process:
        argv = [sys.executable, "-m", "workers.runtime.worker", "--redis-url", self.redis_url,
                "--name", name, *extra, *queues]
        return self._start(argv, f"worker-{name}.log")

    def collector(self, *args: str, log_name: str = "collector.log") -> Process:
        argv = [sys.executable, "manage.py", "collect", "--reconcile-every", "1", *args]
        return self._start(argv, log_name)

    def _start(self, argv: List[str], log_name: str) -> Process:
        process = Process(argv, env=self.env(), log_path=self.tmp_path / log_name)
        self.started.append(process)
        return process

    def stop_all(self) -> None:
        for process in self.started:
            process.stop()


def _link(link: Path, target: Path) -> None:
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(target)


def age_started_registries(connection: Redis) -> int:
    """Move every StartedJobRegistry entry's expiry into the past: the state Redis is in once a
    killed worker's heartbeat deadline (the heartbeat interval + 60 s in rq) has gone by."""
    aged = 0
    for key in connection.scan_iter("rq:wip:*"):
        for member in connection.zrange(key, 0, -1):
            aged += 1
            connection.zadd(key, {member: 1})
    return aged


def states(campaign: Campaign) -> dict:
    counts: dict = {}
    for state in Task.objects.filter(campaign=campaign).values_list("state", flat=True):
        counts[state] = counts.get(state, 0) + 1
    return counts
