"""One task: every arg set of one record, in order; parsers, kept files, the result document.

An arg set that fails (bad input, the program failed or ran out of time, a parser found no
result) is reported in the document and the next one still runs. Two things are not caught:
registry.UnknownNameError for the function (the worker refuses the job) and
errors.Interrupted (the worker was asked to stop and gives the task back).
"""
from __future__ import annotations

import errno
import logging
import socket
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Union

from . import errors, keepfiles, registry, scratch
from .geometry import is_number
from .programs import Control, ProgramResult, earliest, output_tail, run_program

__all__ = ["Control", "Parameters", "TaskContext", "execute"]

log = logging.getLogger(__name__)

SLEEP_STEP_SECONDS = 0.2
# An OSError with one of these inside an arg set is the node's disk, not the task.
SCRATCH_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM,
                            errno.EIO})
_REQUIRED = object()


class Parameters:
    """An arg set's parameters, read with checks: each InputError names the arg set and field."""

    def __init__(self, arg_set: Mapping):
        self.arg_set = arg_set.get("name", "?")
        self.values: Mapping = arg_set.get("parameters") or {}

    def fail(self, field: str, problem: str) -> errors.InputError:
        return errors.InputError(f"arg set {self.arg_set!r}: parameter {field!r} {problem}")

    def _get(self, field: str, default: Any, check, expected: str) -> Any:
        value = self.values.get(field)
        if value is None:
            if default is _REQUIRED:
                raise errors.InputError(f"arg set {self.arg_set!r}: parameters have no {field!r}")
            return default
        if not check(value):
            raise self.fail(field, f"must be {expected} (got {value!r})")
        return value

    def text(self, field: str, *, default: Any = _REQUIRED) -> str:
        return self._get(field, default, lambda v: isinstance(v, str) and v.strip(),
                         "non-empty text")

    def choice(self, field: str, choices: Iterable[str], *, default: Any = _REQUIRED) -> str:
        choices = list(choices)
        return self._get(field, default, lambda v: v in choices, f"one of {', '.join(choices)}")

    def integer(self, field: str, *, default: Any = _REQUIRED,
                minimum: Optional[int] = 0) -> int:
        expected = "a whole number" + (f" of at least {minimum}" if minimum is not None else "")
        value = self._get(field, default, lambda v: is_number(v) and v == int(v)
                          and (minimum is None or v >= minimum), expected)
        return int(value) if value is not None else value

    def boolean(self, field: str, *, default: Any = _REQUIRED) -> bool:
        return self._get(field, default, lambda v: isinstance(v, bool), "true or false")

    def number(self, field: str, *, default: Any = _REQUIRED, minimum: float = 0.0,
               maximum: Optional[float] = None) -> float:
        expected = f"a number of at least {minimum}" + (
            f" and at most {maximum}" if maximum is not None else "")
        value = self._get(field, default, lambda v: is_number(v) and v >= minimum
                          and (maximum is None or v <= maximum), expected)
        return float(value) if value is not None else value

    def numbers(self, field: str, count: int, *, positive: bool = False) -> List[float]:
        expected = f"a list of {count} {'positive ' if positive else ''}numbers"
        return self._get(field, _REQUIRED, lambda v: isinstance(v, list) and len(v) == count
                         and all(is_number(x) and (x > 0 or not positive) for x in v), expected)

    def strings(self, field: str) -> List[str]:
        return self._get(field, [], lambda v: isinstance(v, list)
                         and all(isinstance(x, str) for x in v), "a list of strings")

    def mapping(self, field: str) -> Mapping:
        return self._get(field, _REQUIRED, lambda v: isinstance(v, Mapping), "an object")


class TaskContext:
    """What a task function gets for one arg set: its scratch directory, a way to run programs."""

    def __init__(self, *, workdir: Union[Path, scratch.Scratch], control: Control,
                 deadline: Optional[float]):
        self._workdir = workdir
        self.control = control
        self.deadline = earliest(deadline, control.deadline)
        self.results: List[ProgramResult] = []
        # What the task really computed (charge, multiplicity, final geometry, program and
        # version, method), stored with the arg set's values as `computed`: exports take their
        # labels from it (campaigns/services/export_frames.py).
        self.computed: Dict[str, Any] = {}

    @property
    def workdir(self) -> Path:
        """The scratch directory, made when first asked for."""
        workdir = self._workdir
        return workdir.path if isinstance(workdir, scratch.Scratch) else workdir

    def made_workdir(self) -> Optional[Path]:
        """The scratch directory if it was made (without making it), else None."""
        workdir = self._workdir
        if isinstance(workdir, scratch.Scratch):
            return workdir.path if workdir.made else None
        return workdir

    def run_program(self, argv: Sequence[str], *, env: Optional[Mapping[str, str]] = None,
                    stdin_path: Optional[Path] = None, stdout_name: str = "stdout",
                    stderr_name: str = "stderr") -> ProgramResult:
        """Run argv in the scratch directory (see programs.run_program); non-zero exit raises."""
        result = run_program(argv, workdir=self.workdir, control=self.control,
                             deadline=self.deadline, env=env, stdin_path=stdin_path,
                             stdout_name=stdout_name, stderr_name=stderr_name, check=False)
        self.results.append(result)
        return result.check()

    def should_stop(self) -> bool:
        return self.control.should_stop()

    def heartbeat(self) -> None:
        self.control.heartbeat()

    def sleep(self, seconds: float) -> None:
        """Sleep in short steps, heartbeating; Interrupted on a stop, ProgramTimeout at deadline."""
        end = time.monotonic() + seconds
        next_beat = time.monotonic() + self.control.heartbeat_interval
        while True:
            now = time.monotonic()
            if self.control.should_stop():
                raise errors.Interrupted("sleep: stopped on a stop request")
            if now >= end:
                return
            if self.deadline is not None and now >= self.deadline:
                raise errors.ProgramTimeout("sleep: stopped: the job timeout was reached")
            if now >= next_beat:
                self.control.heartbeat()
                next_beat = now + self.control.heartbeat_interval
            time.sleep(min(SLEEP_STEP_SECONDS, self.control.heartbeat_interval, end - now))


def execute(*, function: str, record: dict, spec: dict,
            control: Optional[Control] = None) -> dict:
    """The result document of running `function` on `record` with the campaign's `spec`."""
    task = registry.load_task(function)
    control = control or Control()
    started_at, host = _now(), socket.gethostname()
    record_id = str(record.get("id", "?"))
    deadline = _deadline(spec.get("job_timeout"))
    cap = keepfiles.file_cap(spec)
    arg_sets: Dict[str, dict] = {}
    files: List[dict] = []
    for index, arg_set in enumerate(spec.get("arg_sets") or [], start=1):
        if control.should_stop():  # between arg sets: give the task back rather than go on
            raise errors.Interrupted(f"record {record_id}: stopped on a stop request")
        name = arg_set.get("name") if isinstance(arg_set, Mapping) else None
        name = name if isinstance(name, str) and name and name not in arg_sets else f"#{index}"
        outcome, kept = _run_arg_set(task, record=record, record_id=record_id, arg_set=arg_set,
                                     name=name, control=control, deadline=deadline, cap=cap)
        arg_sets[name] = dict(outcome, host=host)
        files.extend(kept)
        if (outcome["error"] or {}).get("fault"):
            break  # the node is broken: the other arg sets would fail the same way
    failed = any(outcome["status"] != "ok" for outcome in arg_sets.values())
    return {
        "record_id": record_id, "function": registry.canonical_task_name(function),
        "host": host, "status": "failed" if failed else "ok",
        "started_at": started_at, "finished_at": _now(), "arg_sets": arg_sets, "files": files,
    }


def _run_arg_set(task, *, record: Mapping, record_id: str, arg_set: Mapping, name: str,
                 control: Control, deadline: Optional[float], cap: int):
    """(the arg set's outcome, its kept file entries)."""
    started = time.monotonic()
    ctx: Optional[TaskContext] = None
    values: Dict[str, dict] = {}
    error = None
    kept: List[dict] = []
    try:
        parsers, keep = _check_arg_set(arg_set, name)
        with scratch.scratch_dir(record_id=record_id, arg_set=name) as workdir:
            ctx = TaskContext(workdir=workdir, control=control, deadline=deadline)
            try:
                task(record=record, arg_set=arg_set, ctx=ctx)
                values = _parse(ctx.workdir, parsers) if parsers else {}
                if ctx.computed:
                    values["computed"] = ctx.computed
            except errors.RuntimeFailure as exc:
                error = _error(exc, ctx)
            if ctx.results and keep:  # a program ran: its files are worth keeping even when it failed
                kept = _keep_files(ctx.workdir, keep, record_id=record_id, arg_set=name, cap=cap)
    except errors.RuntimeFailure as exc:
        error = _error(exc, ctx)
    except errors.Interrupted:
        raise
    except OSError as exc:
        if exc.errno not in SCRATCH_ERRNOS:
            log.exception("record %s, arg set %s: unexpected error", record_id, name)
            error = {"class": type(exc).__name__, "message": str(exc), "output_tail": ""}
        else:  # writing an input file or a kept file: the disk is full, read-only, ...
            where = exc.filename or (ctx.made_workdir() if ctx is not None else None)
            error = _error(errors.ScratchUnwritable(
                f"cannot write in the scratch directory: {exc.strerror}"
                + (f": {where}" if where else "")), ctx)
    except Exception as exc:  # a bug must not lose the other arg sets' results
        log.exception("record %s, arg set %s: unexpected error", record_id, name)
        error = {"class": type(exc).__name__, "message": str(exc), "output_tail": ""}
    results = ctx.results if ctx else []
    return {
        "status": "failed" if error else "ok",
        "values": {} if error else values,
        "error": error,
        "wall_s": round(time.monotonic() - started, 3),
        "cpu_s": round(sum(r.cpu_s for r in results), 3),
        "exit_code": results[-1].exit_code if results else None,
    }, kept


def _keep_files(workdir: Path, keep: Mapping[str, str], *, record_id: str, arg_set: str,
                cap: int) -> List[dict]:
    return [keepfiles.keep_file(path=workdir / source, source=source, arg_set=arg_set,
                                name=keepfiles.kept_name(pattern, record_id), cap=cap)
            for source, pattern in keep.items()]


def _check_arg_set(arg_set: object, name: str):
    """(parsers by source, kept file patterns by source) of a well-formed arg set."""
    where = f"arg set {name!r}"
    if not isinstance(arg_set, Mapping):
        raise errors.InputError(f"{where}: must be an object (got {type(arg_set).__name__})")
    if not isinstance(arg_set.get("parameters", {}), Mapping):
        raise errors.InputError(f"{where}: 'parameters' must be an object")
    parsers, keep = arg_set.get("parsers") or {}, arg_set.get("keep_files") or {}
    if not isinstance(parsers, Mapping) or not isinstance(keep, Mapping):
        raise errors.InputError(f"{where}: 'parsers' and 'keep_files' must be objects")
    loaded = {}
    for source, names in parsers.items():
        keepfiles.check_source(source, where=where)
        if isinstance(names, str) or not isinstance(names, list):
            raise errors.InputError(f"{where}: parsers of {source!r} must be a list of names")
        try:
            loaded[source] = [(n, registry.load_parser(n)) for n in names]
        except registry.UnknownNameError as exc:
            raise errors.InputError(f"{where}: {exc}") from None
    for source, pattern in keep.items():
        keepfiles.check_source(source, where=where)
        keepfiles.check_pattern(pattern, where=where)
    return loaded, dict(keep)


def _parse(workdir: Path, parsers: Mapping[str, list]) -> Dict[str, dict]:
    """The arg set's values: every parser's, merged; the first parser listed keeps a shared name.

    (xtb.energy on stdout and xtb.gradient on `gradient` both give `energy`: stdout's has more
    digits, and the job definition lists it first.)
    """
    values: Dict[str, dict] = {}
    for source, named in parsers.items():
        path = workdir / source
        if not path.is_file():
            raise errors.ParseError(f"no file {source!r} in the scratch directory")
        text = path.read_text(encoding="utf-8", errors="replace")
        for name, parser in named:
            try:
                for key, value in parser(text).items():
                    values.setdefault(key, value)
            except errors.ParseError as exc:
                raise errors.ParseError(f"{name} on {source}: {exc}") from None
    return values


def _error(exc: errors.RuntimeFailure, ctx: Optional[TaskContext]) -> dict:
    tail = exc.output_tail
    if not tail and ctx is not None and ctx.results:
        last = ctx.results[-1]
        tail = output_tail(last.stdout_path, last.stderr_path)
    error = {"class": type(exc).__name__, "message": str(exc), "output_tail": tail}
    if exc.fault:
        error["fault"] = exc.fault
    return error


def _deadline(job_timeout: object) -> Optional[float]:
    """The time.monotonic() value at which the job timeout (seconds; None: none) runs out."""
    if job_timeout is None:
        return None
    if isinstance(job_timeout, bool) or not isinstance(job_timeout, (int, float)) \
            or job_timeout <= 0:
        raise errors.InputError(f"job_timeout must be a positive number of seconds "
                                f"(got {job_timeout!r})")
    return time.monotonic() + job_timeout


def _now() -> str:
    # Milliseconds: the portal measures how long a result takes to become durable.
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")
