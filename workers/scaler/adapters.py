"""From a pool to the things that serve it: its batch adapter (by kind) and its Remote."""
from __future__ import annotations

import importlib
import shlex
from typing import Tuple

from workers.models import WorkerPool
from workers.scaler.base import BatchAdapter, CommandMissing, Remote, ScalerError
from workers.scaler.local import LOCAL_TEMPLATE, LocalAdapter, LocalRemote, local_work_dir
from workers.scaler.sessions import SessionRemote, pool_uses_session
from workers.scaler.slurm import run_batch_command
from workers.scaler.ssh import SshRemote, SshTarget
from workers.scaler.templates import default_template

# kind -> (module, class): a fixed table, nothing is imported from a name a user typed.
ADAPTERS = {
    WorkerPool.Kind.SLURM: ("workers.scaler.slurm", "SlurmAdapter"),
    WorkerPool.Kind.CONDOR: ("workers.scaler.condor", "CondorAdapter"),
}
# The command each kind must find on its host (the connection check looks for it).
SUBMIT_COMMANDS = {WorkerPool.Kind.SLURM: "sbatch", WorkerPool.Kind.CONDOR: "condor_submit"}
DEFAULT_REMOTE_WORK_DIR = "htportal"


def adapter_for(*, pool: WorkerPool) -> BatchAdapter:
    """A new adapter for `pool` (one per pool: the local one keeps its children)."""
    if pool.kind == WorkerPool.Kind.LOCAL:
        return LocalAdapter()
    try:
        module, name = ADAPTERS[pool.kind]
    except KeyError:
        raise ScalerError(f"pool {pool.name}: unknown kind {pool.kind!r} "
                          f"(known: {', '.join(WorkerPool.Kind.values)})") from None
    adapter_class = getattr(importlib.import_module(module), name)
    return adapter_class(job_name=f"htportal-{pool.name}", env=pool_command_env(pool=pool),
                         host=pool.host)


def pool_command_env(*, pool: WorkerPool) -> dict:
    try:
        return pool.command_env_dict
    except ValueError as exc:
        raise ScalerError(f"pool {pool.name}: {exc}") from None


def remote_key(*, pool: WorkerPool) -> Tuple:
    """What a pool's connection depends on: a change means a new connection."""
    return (pool.kind, pool.host, pool.port, pool.user, pool.key_path, pool.host_key,
            pool_uses_session(pool=pool))


def remote_open(*, pool: WorkerPool) -> Remote:
    """The pool's Remote; an SshRemote connects on its first command; a session pool's goes
    through the ControlMaster a person opened (sessions.py, `manage.py pool_login`)."""
    if pool.kind == WorkerPool.Kind.LOCAL:
        return LocalRemote()
    if pool_uses_session(pool=pool):
        return SessionRemote(pool=pool)
    return SshRemote(SshTarget(pool.host, pool.port, pool.user, pool.host_key, pool.key_path))


def pool_work_dir(*, pool: WorkerPool) -> str:
    """The work directory as configured (relative ones are under the remote home)."""
    if pool.kind == WorkerPool.Kind.LOCAL:
        return local_work_dir(pool=pool)
    return pool.work_dir or f"{DEFAULT_REMOTE_WORK_DIR}/{pool.name}"


def pool_connection_check(*, pool: WorkerPool) -> str:
    """Connect, and look for the kind's submit command: one line saying what was found.
    ScalerError (HostKeyError, UnreachableError, AuthenticationFailed, CommandMissing) when
    something is wrong."""
    remote = remote_open(pool=pool)
    try:
        result = remote.run("uname -n")
        host = result.stdout.strip() or pool.host
        program = SUBMIT_COMMANDS.get(pool.kind)
        if program is None:
            return f"pool {pool.name}: {pool.address} answers ({host})"
        found = run_batch_command(remote, f"command -v {shlex.quote(program)}", program=program,
                                  host=pool.host, env=pool_command_env(pool=pool))
        if found.exit_code != 0:
            raise CommandMissing(f"{program} not found on {pool.host}'s PATH "
                              f"(add its directory in the pool's environment, PATH=...)")
        return (f"pool {pool.name}: {pool.address} answers ({host}); "
                f"{program} is {found.stdout.strip()}")
    finally:
        remote.close()


def pool_template(*, pool: WorkerPool) -> str:
    """The pool's own template, else its kind's default."""
    if pool.template.strip():
        return pool.template
    if pool.kind == WorkerPool.Kind.LOCAL:
        return LOCAL_TEMPLATE
    return default_template(pool.kind)
