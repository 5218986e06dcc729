"""Running one external program: job timeout, stop request, CPU time, heartbeat.

A program runs in its own process group (ORCA starts helper processes, and mpirun more), so a
timeout or a stop request ends all of it. We wait in short steps rather than Popen.wait so the
stop request and the heartbeat are served while the program runs; each step ends at once when
the program exits (a pidfd; without one, steps that start at 2 ms and grow to POLL_SECONDS), so
a 60 ms xtb run is not rounded up to the next 100 ms poll. We reap the child with
os.wait4 ourselves: that is the only way to get its CPU time (and that of the children it
waited for) without reading /proc.
"""
from __future__ import annotations

import contextlib
import logging
import os
import select
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Mapping, Optional, Sequence, Tuple

from . import environment, errors

log = logging.getLogger(__name__)

POLL_SECONDS = 0.1
FIRST_STEP_SECONDS = 0.002  # the first wait when there is no pidfd; each next one is 1.5 times
HEARTBEAT_SECONDS = 10.0
KILL_GRACE_SECONDS = 2.0  # between SIGTERM and SIGKILL
TAIL_LINES = 20
TAIL_BYTES = 16384  # read at most this much of the end of each stream for the tail

# The environment variable that names each program's executable (ORCA must be started by its
# full path, since it starts its helper programs from the same directory).
EXE_VARIABLES = {"orca": "ORCA_EXE", "xtb": "XTB_EXE", "vina": "VINA_EXE", "obabel": "OBABEL_EXE"}


class Control:
    """What the worker tells a running task: whether to stop, that it is alive, the deadline.

    `deadline` is a time.monotonic() value or None. The worker may pass callables or subclass;
    the default never stops and its heartbeat does nothing.
    """

    def __init__(
        self,
        *,
        should_stop: Optional[Callable[[], bool]] = None,
        heartbeat: Optional[Callable[[], None]] = None,
        deadline: Optional[float] = None,
        heartbeat_interval: float = HEARTBEAT_SECONDS,
    ):
        self._should_stop = should_stop
        self._heartbeat = heartbeat
        self.deadline = deadline
        self.heartbeat_interval = heartbeat_interval

    def should_stop(self) -> bool:
        return bool(self._should_stop()) if self._should_stop else False

    def heartbeat(self) -> None:
        if self._heartbeat:
            self._heartbeat()


@dataclass(frozen=True)
class ProgramResult:
    name: str
    exit_code: int
    wall_s: float
    cpu_s: float
    stdout_path: Path
    stderr_path: Path

    def output_tail(self) -> str:
        return output_tail(self.stdout_path, self.stderr_path)

    def check(self) -> "ProgramResult":
        """Self when the program exited 0; ProgramFailed with the output tail otherwise."""
        if self.exit_code == 0:
            return self
        if self.exit_code < 0:
            how = f"was killed by signal {signal.Signals(-self.exit_code).name}"
        else:
            how = f"exited with code {self.exit_code}"
        raise errors.ProgramFailed(f"{self.name}: {how}", output_tail=self.output_tail())


def not_found_message(name: str) -> str:
    variable = EXE_VARIABLES.get(name)
    return f"{name}: program not found ({f'set {variable} or PATH' if variable else 'check PATH'})"


def find_program(name: str) -> str:
    """The absolute path of `name`: from its *_EXE variable if set, else from PATH."""
    variable = EXE_VARIABLES.get(name)
    configured = os.environ.get(variable, "") if variable else ""
    if configured:
        if not (os.path.isfile(configured) and os.access(configured, os.X_OK)):
            raise errors.ProgramNotFound(
                f"{name}: {variable}={configured!r} is not an executable file")
        return os.path.abspath(configured)
    found = shutil.which(name)
    if not found:
        raise errors.ProgramNotFound(not_found_message(name))
    return os.path.abspath(found)


def earliest(*deadlines: Optional[float]) -> Optional[float]:
    known = [d for d in deadlines if d is not None]
    return min(known) if known else None


def run_program(
    argv: Sequence[str],
    *,
    workdir: Path,
    control: Optional[Control] = None,
    deadline: Optional[float] = None,
    env: Optional[Mapping[str, str]] = None,
    stdin_path: Optional[Path] = None,
    stdout_name: str = "stdout",
    stderr_name: str = "stderr",
    heartbeat_every: Optional[float] = None,
    check: bool = True,
) -> ProgramResult:
    """Run argv in workdir, stdout/stderr to workdir/stdout_name and workdir/stderr_name.

    The program's environment is environment.program_environment (a clean one: no worker
    credentials, HOME and TMPDIR = workdir) with `env`'s variables added.
    Stops the program's whole process group and raises ProgramTimeout at the earliest of
    `deadline` and control.deadline, or errors.Interrupted when control.should_stop(); calls
    control.heartbeat() every `heartbeat_every` seconds (default control.heartbeat_interval).
    With check, a non-zero exit raises ProgramFailed; a missing executable always raises
    ProgramNotFound, and output files that cannot be made in workdir ScratchUnwritable.
    """
    control = control or Control()
    name = os.path.basename(argv[0])
    workdir = Path(workdir)
    deadline = earliest(deadline, control.deadline)
    every = heartbeat_every if heartbeat_every is not None else control.heartbeat_interval
    stdout_path, stderr_path = workdir / stdout_name, workdir / stderr_name
    if deadline is not None and time.monotonic() >= deadline:
        raise errors.ProgramTimeout(f"{name}: not started: the job timeout was already reached")
    program_env = environment.program_environment(workdir=workdir, program=str(argv[0]),
                                                  extra=env)
    started = time.monotonic()
    with contextlib.ExitStack() as files:
        try:
            stdout = files.enter_context(open(stdout_path, "wb"))
            stderr = files.enter_context(open(stderr_path, "wb"))
        except OSError as exc:
            raise errors.ScratchUnwritable(
                f"{name}: cannot write its output in the scratch directory {workdir}: "
                f"{exc.strerror or exc}") from None
        stdin = files.enter_context(open(stdin_path, "rb")) if stdin_path else subprocess.DEVNULL
        try:
            proc = subprocess.Popen(
                list(argv), cwd=workdir, env=program_env,
                stdin=stdin, stdout=stdout, stderr=stderr, start_new_session=True,
            )
        except (FileNotFoundError, PermissionError):
            raise errors.ProgramNotFound(not_found_message(name)) from None
    log.debug("%s: started pid %s in %s", name, proc.pid, workdir)
    exit_code, cpu_s, stop = _wait(proc, control=control, deadline=deadline, every=every)
    result = ProgramResult(name, exit_code, time.monotonic() - started, cpu_s,
                           stdout_path, stderr_path)
    if stop == "stop":
        raise errors.Interrupted(f"{name}: stopped on a stop request")
    if stop == "timeout":
        raise errors.ProgramTimeout(
            f"{name}: stopped after {result.wall_s:.0f} s: the job timeout was reached",
            output_tail=result.output_tail(),
        )
    return result.check() if check else result


def _wait(proc: subprocess.Popen, *, control: Control, deadline: Optional[float],
          every: float) -> Tuple[int, float, str]:
    """(exit code, CPU seconds, "" | "stop" | "timeout") once the program has ended."""
    next_beat = time.monotonic() + every
    stop = ""
    with _exit_waiter(proc.pid) as wait_exit:
        while not _exited(proc.pid):
            now = time.monotonic()
            if control.should_stop():
                stop = "stop"
            elif deadline is not None and now >= deadline:
                stop = "timeout"
            if stop:
                _end_group(proc.pid)
                break
            if now >= next_beat:
                control.heartbeat()
                next_beat = now + every
            wait_exit()
    # The leader has exited but is not reaped yet, so its group id cannot be reused: it is
    # safe to kill whatever it left behind in its group.
    _signal_group(proc.pid, signal.SIGKILL)
    _, status, usage = os.wait4(proc.pid, 0)
    exit_code = os.waitstatus_to_exitcode(status)
    proc.returncode = exit_code  # reaped here; keeps Popen from waiting for it again
    return exit_code, usage.ru_utime + usage.ru_stime, stop


@contextlib.contextmanager
def _exit_waiter(pid: int):
    """A function that waits up to POLL_SECONDS, returning early when `pid` exits."""
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):  # not Linux >= 5.3, or no pidfd_open in this Python
        fd = None
    if fd is None:
        step = [FIRST_STEP_SECONDS]

        def sleep() -> None:
            time.sleep(step[0])
            step[0] = min(POLL_SECONDS, step[0] * 1.5)
        yield sleep
        return
    try:
        yield lambda: select.select([fd], [], [], POLL_SECONDS)
    finally:
        os.close(fd)


def _exited(pid: int) -> bool:
    """Whether the child has exited, without reaping it (WNOWAIT)."""
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def _end_group(pid: int) -> None:
    """SIGTERM the group, SIGKILL it if the leader is still running after the grace time."""
    _signal_group(pid, signal.SIGTERM)
    give_up = time.monotonic() + KILL_GRACE_SECONDS
    while time.monotonic() < give_up:
        if _exited(pid):
            return
        time.sleep(0.05)
    _signal_group(pid, signal.SIGKILL)
    os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)


def _signal_group(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)


def output_tail(stdout_path: Path, stderr_path: Path, lines: int = TAIL_LINES) -> str:
    """The last `lines` lines of stdout and stderr together, stderr's given at least half."""
    out, err = _last_lines(stdout_path, lines), _last_lines(stderr_path, lines)
    err = err[-max(lines // 2, lines - len(out)):] if err else []
    out = out[len(out) - (lines - len(err)):] if len(out) + len(err) > lines else out
    return "\n".join(out + err)


def _last_lines(path: Path, count: int) -> List[str]:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - TAIL_BYTES))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return []
    found = text.splitlines()
    while found and not found[-1].strip():
        found.pop()
    return found[-count:]
