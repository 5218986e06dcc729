"""The clean room a program runs in, and the worker's credentials kept out of it.

A program (or whatever an ORCA input starts) must not see the worker's Redis URL: with its
password it could read every user's records from Redis, forge results or trim the results
list. So a program gets a minimal environment built here, never the worker's own, and the worker
removes the URL from its environment (and from the copy /proc/PID/environ shows) once it has
read it, and makes itself non-dumpable, so that a program running as the same user cannot read
the worker's memory, environment or open files through /proc or ptrace.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import re
from pathlib import Path
from typing import Dict, Iterable, Mapping, Optional, Tuple, Union

from . import config

log = logging.getLogger(__name__)

# Threads: a grid slot is one core unless the task says otherwise (xtb's `threads`).
THREAD_DEFAULTS = {"OMP_NUM_THREADS": "1", "OMP_STACKSIZE": "", "MKL_NUM_THREADS": "1",
                   "OPENBLAS_NUM_THREADS": "1"}
# Passed on when the worker has them: xtb's parameter files, shared libraries (ORCA, MPI),
# Open Babel's plugins and data. More names: HTPORTAL_PROGRAM_ENV=NAME,NAME.
PROGRAM_VARIABLES = ("XTBPATH", "XTBHOME", "LD_LIBRARY_PATH", "BABEL_LIBDIR", "BABEL_DATADIR")
_REDIS_URL_VALUE = re.compile(r"rediss?://|unix://", re.IGNORECASE)
PR_SET_DUMPABLE = 4


def allowlisted(source: Mapping[str, str]) -> Tuple[str, ...]:
    """HTPORTAL_PROGRAM_ENV's names; a bad one is left out here (the worker refuses it at start)."""
    names = (part.strip() for part in source.get(config.PROGRAM_ENV, "").split(","))
    return tuple(name for name in names if name and not config.CREDENTIAL_NAME.search(name))


def program_environment(*, workdir: Union[str, Path], program: str = "",
                        extra: Optional[Mapping[str, str]] = None,
                        source: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """The whole environment of a program run in `workdir` (its scratch directory).

    PATH (HTPORTAL_PROGRAM_PATH, else the worker's), HOME and TMPDIR = workdir, LANG and
    LC_ALL = C, the thread variables (the worker's, else 1), PROGRAM_VARIABLES and the
    allowlisted names the worker has, then `extra` (the task's own, e.g. OMP_NUM_THREADS).
    ORCA also gets its own directory first on PATH and LD_LIBRARY_PATH (it starts helper
    programs and loads libraries from there). A name that looks like a credential, or a value
    holding a Redis URL, is dropped whatever its source.
    """
    source = os.environ if source is None else source
    workdir = str(workdir)
    env = {"PATH": source.get(config.PROGRAM_PATH) or source.get("PATH") or os.defpath,
           "HOME": workdir, "TMPDIR": workdir, "LANG": "C", "LC_ALL": "C"}
    for name, default in THREAD_DEFAULTS.items():
        value = source.get(name) or default
        if value:
            env[name] = value
    for name in PROGRAM_VARIABLES + allowlisted(source):
        if name in source:
            env[name] = source[name]
    if os.path.basename(program) == "orca" and os.path.isabs(program):
        home = os.path.dirname(program)
        env["PATH"] = _prepend(home, env["PATH"])
        env["LD_LIBRARY_PATH"] = _prepend(home, env.get("LD_LIBRARY_PATH", ""))
    env.update(extra or {})
    return {name: value for name, value in env.items()
            if not config.CREDENTIAL_NAME.search(name) and not _REDIS_URL_VALUE.search(value)}


def _prepend(directory: str, path: str) -> str:
    parts = [part for part in path.split(os.pathsep) if part and part != directory]
    return os.pathsep.join([directory, *parts])


def _libc() -> Optional[ctypes.CDLL]:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    except OSError:
        return None


def forget(names: Iterable[str]) -> None:
    """Remove the variables `names` from the worker's environment and wipe their text.

    Deleting from os.environ (unsetenv) only drops libc's pointer: the text stays where the
    kernel put the initial environment, and /proc/PID/environ shows it. So the "NAME=value"
    entry (found through getenv) is overwritten with NULs once it is unset.
    """
    libc = None
    for name in names:
        if name not in os.environ:
            continue
        libc = libc or _libc()
        start = _entry_address(libc, name) if libc is not None else None
        del os.environ[name]  # unsetenv first: libc's environ no longer points at the entry
        if start is not None:
            ctypes.memset(start, 0, len(ctypes.string_at(start)))


def _entry_address(libc: ctypes.CDLL, name: str) -> Optional[int]:
    """Where "NAME=value" is in memory (glibc's getenv points just past the "="), or None."""
    try:
        getenv = libc.getenv
        getenv.restype, getenv.argtypes = ctypes.c_void_p, [ctypes.c_char_p]
        address = getenv(name.encode())
        if not address:
            return None
        start = address - len(name.encode()) - 1
        return start if ctypes.string_at(start, len(name) + 1) == f"{name}=".encode() else None
    except (AttributeError, OSError, ValueError):
        return None


def protect_process() -> bool:
    """Make this process non-dumpable: other processes of the same user (the programs it
    starts) can then neither ptrace it nor read its /proc/PID/environ, mem, cwd or fd. A
    program is dumpable again once it execs, so its own core dumps still work. Linux only;
    False where it is not available."""
    libc = _libc()
    if libc is None or not hasattr(libc, "prctl"):
        return False
    return libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == 0
