"""What the scaler and the batch-system adapters share.

An adapter speaks to one kind of batch system through a Remote (a command runner: SSH with
paramiko for slurm and condor pools, local subprocesses for the local pool). The scaler asks
it for the batch system's own view, submits batch jobs and removes broken ones; it never
parses a batch system's output itself.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Protocol


class ScalerError(Exception):
    """A pool cannot be served right now; the message names the pool's host and the cause."""


class HostKeyError(ScalerError):
    """The host's key is unknown or differs from the pinned one: never connect."""


class UnreachableError(ScalerError):
    """The host did not answer (DNS, refused, timeout)."""


class AuthenticationFailed(ScalerError):
    """The host refused the key."""


class CommandMissing(ScalerError):
    """A batch command (sbatch, condor_submit, ...) is not on the host's PATH."""


class SubmitFailed(ScalerError):
    """The batch system refused a submission; the message carries its own words."""


@dataclass(frozen=True)
class CommandResult:
    exit_code: int
    stdout: str
    stderr: str


class Remote(Protocol):
    """Runs commands and writes files on the pool's host (over SSH, or locally)."""

    def run(self, command: str, *, stdin: Optional[str] = None,
            env: Optional[Dict[str, str]] = None, timeout: float = 60) -> CommandResult: ...

    def put(self, path: str, data: bytes, *, mode: int = 0o600) -> None: ...

    def sha256(self, path: str) -> Optional[str]:
        """The file's sha256, or None when it does not exist."""

    def close(self) -> None: ...


@dataclass(frozen=True)
class BatchJob:
    """One job of the batch system's own view (an array task or a Condor proc is one job)."""

    job_id: str                      # "1234_7" (SLURM array task), "5678.3" (Condor)
    state: str                       # "waiting" | "running" | "held" | "failed" | "done"
    reason: str = ""                 # the batch system's words: HoldReason, SLURM reason/exit
    workers: int = 1


@dataclass
class BatchView:
    jobs: List[BatchJob] = field(default_factory=list)

    def count(self, state: str) -> int:
        return sum(job.workers for job in self.jobs if job.state == state)


@dataclass(frozen=True)
class Submission:
    """What one scaler step asks a batch system for."""

    batch_jobs: int                  # how many batch jobs (array tasks / procs)
    workers_per_job: int
    script: str                      # the rendered batch script or submit description
    work_dir: str                    # remote work directory (the script is written there)


class BatchAdapter(Protocol):
    kind: str

    def view(self, remote: Remote, *, work_dir: str) -> BatchView:
        """The batch system's jobs of this pool (squeue / condor_q -json)."""

    def submit(self, remote: Remote, submission: Submission) -> List[str]:
        """Submit; the new job ids. SubmitFailed with the batch system's message on refusal."""

    def remove(self, remote: Remote, job_ids: List[str]) -> None:
        """Remove jobs (scancel / condor_rm)."""
