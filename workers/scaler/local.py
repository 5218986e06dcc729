"""The local pool: worker processes on this machine.

Each "batch job" is one process in its own session (a Ctrl-C in the scaler's terminal reaches
the scaler only) running the pool's script, which sources the 0600 env file and
execs `python -m workers.runtime.worker` with this venv's python. Its pid is in
WORK_DIR/pids/NAME.pid and its output in WORK_DIR/logs/NAME.log (WORK_DIR defaults to
var/workers/POOL). A worker that exits 0 (--max-idle, --max-tasks) is simply gone; one that
exits otherwise is kept as a failed job (WORK_DIR/pids/NAME.failed, with its exit code and last
log line) until the scaler removes it.

Local workers live no longer than the scaler loop that started them (`scale --once` excepted:
its workers stay until their idle timeout): when the scaler stops
(SIGTERM, SIGINT: Ctrl-C in `bin/run`) it sends its workers SIGTERM, so each gives its task
back, and waits up to STOP_WAIT_S for them; a scaler killed outright (SIGKILL, a crash) takes
them along through PR_SET_PDEATHSIG, which the kernel turns into SIGTERM for each of them.
"""
from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import shlex
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from django.conf import settings

from workers.models import WorkerPool
from workers.scaler.base import BatchJob, BatchView, CommandResult, ScalerError, Submission, SubmitFailed

log = logging.getLogger(__name__)

LOCAL_POOL_NAME = "local"
STOP_WAIT_S = 10.0
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
SCRIPT_NAME = "worker.sh"
RQ_PROCLINE = b"rq:worker:"
WORKER_MODULE = "workers.runtime.worker"
# The placeholders are base templates' ({...}); PYTHON and BASE_DIR are filled in at import.
LOCAL_TEMPLATE = """\
#!/bin/sh
# A local htportal worker, started detached by the scaler (docs/scaler.md).
set -e
{setup}
set -a
. {env_file}
set +a
cd BASE_DIR
exec PYTHON -m workers.runtime.worker --max-idle {max_idle} --max-runtime {max_runtime} \\
  --max-tasks {max_tasks} {queues}
""".replace("PYTHON", shlex.quote(sys.executable)).replace(
    "BASE_DIR", shlex.quote(str(settings.BASE_DIR)))


class LocalRemote:
    """base.Remote on this machine: commands through /bin/sh, files written atomically."""

    def run(self, command: str, *, stdin: Optional[str] = None,
            env: Optional[Dict[str, str]] = None, timeout: float = 60) -> CommandResult:
        try:
            done = subprocess.run(["/bin/sh", "-c", command], input=stdin, text=True,
                                  capture_output=True, timeout=timeout,
                                  env={**os.environ, **(env or {})})
        except subprocess.TimeoutExpired:
            raise ScalerError(f"this machine: `{command}` did not finish within {timeout:g} s"
                              ) from None
        return CommandResult(done.returncode, done.stdout, done.stderr)

    def put(self, path: str, data: bytes, *, mode: int = 0o600) -> None:
        target = Path(path).expanduser()
        partial = target.with_name(f"{target.name}.part-{uuid.uuid4().hex[:8]}")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            os.fchmod(fd, mode)  # the umask may have taken bits away
            os.write(fd, data)
        finally:
            os.close(fd)
        os.replace(partial, target)

    def sha256(self, path: str) -> Optional[str]:
        try:
            return hashlib.sha256(Path(path).expanduser().read_bytes()).hexdigest()
        except FileNotFoundError:
            return None

    def close(self) -> None:
        pass


class LocalAdapter:
    """Starts, counts and stops worker processes on this machine (see the module docstring).

    One instance serves one pool: it keeps the pool's own children, to reap them (else they
    stay zombies while the scaler runs) and to learn their exit codes.
    """

    kind = "local"

    def __init__(self, *, die_with_scaler: bool = True) -> None:
        """die_with_scaler: workers get PR_SET_PDEATHSIG (a one-step `scale --once` leaves
        them running: False)."""
        self._children: Dict[str, subprocess.Popen] = {}
        self._pids = Path()
        self.die_with_scaler = die_with_scaler

    def view(self, remote, *, work_dir: str) -> BatchView:
        self._pids = Path(work_dir) / "pids"
        self._reap()
        jobs = [BatchJob(path.stem, "failed", path.read_text().strip())
                for path in sorted(self._pids.glob("*.failed"))]
        for path in sorted(self._pids.glob("*.pid")):
            if _is_worker(_read_pid(path)):
                jobs.append(BatchJob(path.stem, "running"))
            else:
                path.unlink(missing_ok=True)  # ended while the scaler was not its parent
        return BatchView(jobs)

    def submit(self, remote, submission: Submission) -> List[str]:
        work_dir = Path(submission.work_dir)
        self._pids = work_dir / "pids"
        for name in ("pids", "logs"):
            (work_dir / name).mkdir(parents=True, exist_ok=True)
        script = work_dir / SCRIPT_NAME
        remote.put(str(script), submission.script.encode(), mode=0o700)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        names = [f"{stamp}-{uuid.uuid4().hex[:6]}"
                 for _ in range(submission.batch_jobs * submission.workers_per_job)]
        for name in names:
            self._start(name=name, script=script, work_dir=work_dir)
        return names

    def stop(self) -> int:
        """SIGTERM to every worker this adapter started and still runs, then wait for them
        (up to STOP_WAIT_S; SIGKILL for any still there); how many were stopped."""
        running = {name: child for name, child in self._children.items() if child.poll() is None}
        for child in running.values():
            try:
                child.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + STOP_WAIT_S
        for name, child in running.items():
            try:
                child.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("local worker %s: still running %g s after SIGTERM; killed", name,
                            STOP_WAIT_S)
                child.kill()
                child.wait()
        self._reap()
        if running:
            log.info("local pool: stopped %d worker%s", len(running),
                     "" if len(running) == 1 else "s")
        return len(running)

    def remove(self, remote, job_ids: List[str]) -> None:
        """Forget failed workers; a running one gets SIGTERM (it gives its task back)."""
        for job_id in job_ids:
            (self._pids / f"{job_id}.failed").unlink(missing_ok=True)
            pid = _read_pid(self._pids / f"{job_id}.pid")
            if _is_worker(pid):
                os.kill(pid, signal.SIGTERM)

    def _start(self, *, name: str, script: Path, work_dir: Path) -> None:
        log_path = work_dir / "logs" / f"{name}.log"
        try:
            with open(log_path, "ab") as output:
                child = subprocess.Popen(["/bin/sh", str(script)], cwd=work_dir,
                                         stdin=subprocess.DEVNULL, stdout=output,
                                         stderr=subprocess.STDOUT, start_new_session=True,
                                         preexec_fn=(_die_with_parent if self.die_with_scaler
                                                     else None))
        except OSError as exc:
            raise SubmitFailed(f"this machine: cannot start {script} ({exc})") from None
        self._children[name] = child
        (self._pids / f"{name}.pid").write_text(f"{child.pid}\n")
        log.info("local worker %s: started, pid %d, log %s", name, child.pid, log_path)

    def _reap(self) -> None:
        for name, child in list(self._children.items()):
            code = child.poll()
            if code is None:
                continue
            del self._children[name]
            (self._pids / f"{name}.pid").unlink(missing_ok=True)
            if code != 0:
                last = _last_line(self._pids.parent / "logs" / f"{name}.log")
                (self._pids / f"{name}.failed").write_text(f"exit code {code}: {last}\n")


# Looked up once here: the child of a fork (SSH pools run paramiko threads) must call nothing
# that takes a lock, as dlsym would.
_PRCTL = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the scaler dies (kept across exec)."""
    if _PRCTL is not None:
        _PRCTL(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)


def _read_pid(path: Path) -> int:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return 0


def _is_worker(pid: int) -> bool:
    """A live, non-zombie process running the worker module (pids get reused)."""
    if pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/stat") as stat:
            if stat.read().rsplit(")", 1)[1].split()[0] == "Z":
                return False
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            argv = cmdline.read()
    except (OSError, IndexError):
        return False
    # Just started, the script's shell has not exec'd the worker yet. With the setproctitle
    # package installed (Parsl brings it, for one), rq rewrites a worker's command line to
    # "rq:worker:NAME: ..." (rq.worker's procline).
    return (WORKER_MODULE.encode() in argv or SCRIPT_NAME.encode() in argv
            or argv.startswith(RQ_PROCLINE))


def _last_line(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "no log"
    return lines[-1] if lines else "no output"


def local_work_dir(*, pool: WorkerPool) -> str:
    return pool.work_dir or str(Path(settings.VAR_DIR) / "workers" / pool.name)


def local_pool_ensure(*, name: str = LOCAL_POOL_NAME, queues: str = "xtb", max_workers: int = 2,
                      max_idle: int = 60) -> Tuple[WorkerPool, bool]:
    """The local pool `name` (created serving `queues` with up to `max_workers` workers when
    missing; an existing one is left as the admin edited it) and whether it was created."""
    return WorkerPool.objects.get_or_create(name=name, defaults={
        "kind": WorkerPool.Kind.LOCAL, "queues": queues, "min_workers": 0,
        "max_workers": max_workers, "workers_per_job": 1, "max_waiting_jobs": max_workers,
        "max_idle": max_idle, "removal_tries": 1,
    })
