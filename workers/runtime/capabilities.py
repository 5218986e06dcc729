"""What a worker can run, checked once at start: its scratch root and the programs it finds
(all of them on PATH or *_EXE; the versions of those it needs).

The worker registers the result with rq's worker hash (field `htportal_caps`) and leaves at
once, with exit code 3, when its scratch root cannot be written or a program it was told it
needs (`--needs xtb,vina`) is missing or cannot run here: a broken node then takes no task.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from typing import Dict, List, Optional, Sequence

from . import environment, errors, registry, scratch
from .programs import EXE_VARIABLES, find_program

VERSION_TIMEOUT_S = 5.0
# A cheap way to ask each program for its version (ORCA has none that does not start a run).
VERSION_ARGUMENTS = {"xtb": ["--version"], "vina": ["--version"], "obabel": ["-V"]}
VERSION_LIMIT = 200  # characters
PROGRAMS = tuple(EXE_VARIABLES)  # orca, xtb, vina, obabel


class EnvironmentBroken(Exception):
    """This node cannot do the work it was started for; the message says why."""


def needed_programs(needs: Sequence[str]) -> List[str]:
    """The programs of `needs`: program names (xtb) or task names (xtb.run); ValueError else."""
    found: List[str] = []
    for need in needs:
        if need in PROGRAMS:
            programs = (need,)
        else:
            try:
                programs = registry.task_entry(need).programs
            except registry.UnknownNameError:
                raise ValueError(f"{need!r} is not a program or task name (programs: "
                                 f"{', '.join(PROGRAMS)}; tasks: "
                                 f"{', '.join(registry.task_names())})") from None
        found += [program for program in programs if program not in found]
    return found


def program_check(name: str, workdir: str, *, run: bool = True) -> Dict[str, Optional[str]]:
    """{"path", "version"} of a usable program; {"error"} (and "path" if found) of another.

    With `run`, the program is asked for its version (which also shows that it can start:
    a missing shared library makes it exit 127); without, only its path is looked up.
    """
    try:
        path = find_program(name)
    except errors.ProgramNotFound as exc:
        return {"error": str(exc)}
    arguments = VERSION_ARGUMENTS.get(name)
    if arguments is None or not run:
        return {"path": path, "version": None}
    env = environment.program_environment(workdir=workdir, program=path)
    try:
        done = subprocess.run([path, *arguments], cwd=workdir, env=env, stdin=subprocess.DEVNULL,
                              capture_output=True, timeout=VERSION_TIMEOUT_S,
                              start_new_session=True)
    except subprocess.TimeoutExpired:
        return {"path": path, "version": None}  # slow to answer is not broken
    except OSError as exc:
        return {"path": path, "error": f"{name}: {path} cannot be started: {exc.strerror}"}
    if done.returncode in (126, 127):  # the loader or a wrapper script could not run it
        last = (done.stderr or done.stdout).decode("utf-8", "replace").strip().splitlines()
        return {"path": path, "error": f"{name}: {path} cannot run here (exit code "
                                       f"{done.returncode}{': ' + last[-1] if last else ''})"}
    return {"path": path, "version": version_line(done.stdout + done.stderr)}


def version_line(output: bytes) -> Optional[str]:
    """The first line with a letter and a digit ("* xtb version 6.5.1 ..." → "xtb version ...")."""
    for line in output.decode("utf-8", "replace").splitlines():
        text = line.strip(" *|-=\t")
        if any(c.isalpha() for c in text) and any(c.isdigit() for c in text):
            return text[:VERSION_LIMIT]
    return None


def capabilities_probe(*, needs: Sequence[str]) -> dict:
    """What this node can run; EnvironmentBroken when the scratch root or a needed program is
    not usable. `needs` are program names as needed_programs gives them."""
    try:
        workdir = scratch.make_scratch("htportal-probe-")
        (workdir / "probe").write_bytes(b"htportal\n")
    except errors.ScratchUnwritable as exc:
        raise EnvironmentBroken(str(exc)) from None
    except OSError as exc:
        shutil.rmtree(workdir, ignore_errors=True)
        raise EnvironmentBroken(f"cannot write in a scratch directory in "
                                f"{scratch.scratch_root()}: {exc.strerror or exc}") from None
    try:
        # Only the needed programs are started (about 0.1-0.2 s each): a worker's start stays
        # quick, and the others are found or not.
        programs = {name: program_check(name, str(workdir), run=name in needs)
                    for name in PROGRAMS}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    for name in needs:
        if programs[name].get("error"):
            raise EnvironmentBroken(str(programs[name]["error"]))
    return {"programs": programs, "needs": list(needs), "scratch_root": scratch.scratch_root(),
            "python": sys.version.split()[0]}
