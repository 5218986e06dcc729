"""The SLURM adapter: sbatch, squeue (and scontrol for exit codes), scancel, over a Remote.

A pool's jobs are told apart by their job name, "htportal-<pool>", set on sbatch's command
line (it overrides the template's own --job-name); the workers each job starts ride in its
comment ("htportal-workers=N"), so the view counts workers whatever the template asks SLURM
for. SLURM 22.05 without accounting has no sacct: a finished job is seen in squeue for
MinJobAge (300 s by default) and its exit code comes from `scontrol -o show job ARRAY_ID` for
the failed jobs' own array jobs (sacct's when accounting answers). squeue's text output with
-o is used rather than --json: 22.05's `squeue --json` ignores -j (it prints the jobs of the
whole cluster) and the JSON layout changes with each data_parser version.
"""
from __future__ import annotations

import re
import shlex
from typing import Dict, List, Optional, Tuple

from workers.scaler.base import (BatchJob, BatchView, CommandMissing, CommandResult, Remote,
                                 ScalerError, Submission, SubmitFailed)
from workers.scaler.ssh import shell_path

WAITING = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "RESIZING"}
RUNNING = {"RUNNING", "COMPLETING", "SIGNALING", "STAGE_OUT", "SUSPENDED", "STOPPED"}
FAILED = {"FAILED", "NODE_FAIL", "TIMEOUT", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE",
          "PREEMPTED", "REVOKED", "SPECIAL_EXIT"}
DONE = {"COMPLETED"}
# A pending job with one of these reasons waits for a person, not for resources.
HELD_REASONS = {"JobHeldUser", "JobHeldAdmin"}
# A CANCELLED job is one the scaler (or a person) removed, unless SLURM cancelled it for one of
# these causes; a cancelled job keeps its last pending reason (JobHeldUser...), so only a
# cause that means failure counts.
CANCEL_FAILURES = {"DependencyNeverSatisfied", "JobLaunchFailure", "SystemFailure", "NodeDown",
                   "BadConstraints", "PartitionTimeLimit", "InvalidAccount", "InvalidQOS",
                   "PartitionDown", "PartitionInactive", "FrontEndDown"}
WORKERS_COMMENT = "htportal-workers="
REMOVE_BATCH = 500
EXIT_LOOKUPS = 20          # scontrol calls (one per array job) for exit codes in one view
_ARRAY_LINE = re.compile(r"^#SBATCH\s+(--array[=\s]|-a\s)", re.MULTILINE)
_FIELD = re.compile(r"(\w+)=(\S*)")


def run_batch_command(remote: Remote, command: str, *, program: str, host: str,
                      env: Optional[Dict[str, str]] = None, timeout: float = 60) -> CommandResult:
    """Run a batch command on the pool's host; CommandMissing when `program` is not there."""
    result = remote.run(command, env=env, timeout=timeout)
    if result.exit_code == 127 or (result.exit_code != 0 and "command not found" in result.stderr):
        raise CommandMissing(f"{program} not found on {host}: {command_words(result)}")
    return result


def script_put(remote: Remote, path: str, data: bytes, *, mode: int, host: str,
               env: Dict[str, str]) -> None:
    """Write a batch script or description; its directory is made only when missing (the
    scaler has made it already, and every command over SSH costs a round trip)."""
    try:
        remote.put(path, data, mode=mode)
    except (ScalerError, OSError):
        directory = shell_path(path.rsplit("/", 1)[0] or "/")
        result = run_batch_command(remote, f"mkdir -p {directory}", program="mkdir", host=host,
                                   env=env)
        if result.exit_code != 0:
            raise ScalerError(f"mkdir on {host} failed: {command_words(result)}") from None
        remote.put(path, data, mode=mode)


def remote_host(remote: Remote, host: str) -> str:
    """How messages name the host: the pool's, else the Remote's own (SshRemote's target)."""
    target = getattr(remote, "target", None)
    return host or getattr(target, "host", "") or getattr(remote, "host", "") or "the pool's host"


def command_words(result: CommandResult) -> str:
    """The command's own message: stderr, else stdout, else its exit code."""
    return (result.stderr.strip() or result.stdout.strip()
            or f"exit code {result.exit_code} and no message")


class CommandAdapter:
    """What the SLURM and HTCondor adapters share: a pool's job name, the env of its batch
    commands, writing the script into the work directory and running commands there."""

    def __init__(self, *, job_name: str, env: Optional[Dict[str, str]] = None, host: str = ""):
        """
        Args:
            job_name: "htportal-<pool>", the name every job of the pool gets.
            env: variables for every command (SLURM_CONF or CONDOR_CONFIG for a cluster off
                the host's default).
            host: how messages name the host (default: the Remote's).
        """
        self.job_name = job_name
        self.env = dict(env or {})
        self.host = host

    def _submit_file(self, remote: Remote, submission: Submission, *, suffix: str, mode: int,
                     command: str, program: str) -> Tuple[str, CommandResult]:
        """Write the script as WORK_DIR/<job name><suffix> and run `command FILE` in WORK_DIR
        (with its logs/ made); (host, the command's result)."""
        host = remote_host(remote, self.host)
        path = f"{submission.work_dir}/{self.job_name}{suffix}"
        script_put(remote, path, submission.script.encode(), mode=mode, host=host, env=self.env)
        result = run_batch_command(
            remote, f"cd {shell_path(submission.work_dir)} && mkdir -p logs && {command} "
                    f"{shell_path(path)}", program=program, host=host, env=self.env)
        return host, result

    def _remove(self, remote: Remote, job_ids: List[str], *, program: str) -> None:
        host = remote_host(remote, self.host)
        for start in range(0, len(job_ids), REMOVE_BATCH):
            ids = " ".join(shlex.quote(job_id) for job_id in job_ids[start:start + REMOVE_BATCH])
            self._run(remote, host, f"{program} {ids}", program=program)

    def _run(self, remote: Remote, host: str, command: str, *, program: str,
             check: bool = True) -> CommandResult:
        result = run_batch_command(remote, command, program=program, host=host, env=self.env)
        if check and result.exit_code != 0:
            raise ScalerError(f"{program} on {host} failed: {command_words(result)}")
        return result


class SlurmAdapter(CommandAdapter):
    """Batch jobs of one pool on one SLURM cluster."""

    kind = "slurm"

    def submit(self, remote: Remote, submission: Submission) -> List[str]:
        comment = f"{WORKERS_COMMENT}{submission.workers_per_job}"
        host, result = self._submit_file(
            remote, submission, suffix=".sh", mode=0o700, program="sbatch",
            command=f"sbatch --parsable --job-name={shlex.quote(self.job_name)} "
                    f"--comment={comment}")
        if result.exit_code != 0:
            raise SubmitFailed(f"sbatch on {host} refused the job: {command_words(result)}")
        job_id = result.stdout.strip().split(";")[0]
        if not job_id.isdigit():
            raise SubmitFailed(f"sbatch on {host} answered {result.stdout.strip()!r}, not a job id")
        if _ARRAY_LINE.search(submission.script):
            return [f"{job_id}_{index}" for index in range(submission.batch_jobs)]
        return [job_id]

    def view(self, remote: Remote, *, work_dir: str) -> BatchView:
        host = remote_host(remote, self.host)
        # -r: one line per array task (pending tasks are otherwise folded into "123_[0-9]").
        result = self._run(
            remote, host, f"squeue -h -r -t all -u \"$(id -un)\" "
                          f"-n {shlex.quote(self.job_name)} -o '%i %T %k %r'",
            program="squeue")
        rows = [line.split(None, 3) for line in result.stdout.splitlines() if line.strip()]
        failing = [row[0] for row in rows if row[1] in FAILED or _failed_cancel(row)]
        exits = self._exit_codes(remote, host, failing) if failing else {}
        return BatchView([self._job(row, exits) for row in rows])

    def remove(self, remote: Remote, job_ids: List[str]) -> None:
        self._remove(remote, job_ids, program="scancel")

    def _job(self, row: List[str], exits: Dict[str, str]) -> BatchJob:
        job_id, slurm_state = row[0], row[1]
        workers = _workers(row[2] if len(row) > 2 else "")
        reason = row[3].strip() if len(row) > 3 else ""
        reason = "" if reason == "None" else reason
        if slurm_state in WAITING:
            state = "held" if reason in HELD_REASONS else "waiting"
        elif slurm_state in RUNNING:
            state = "running"
        elif slurm_state in DONE or (slurm_state == "CANCELLED" and not _failed_cancel(row)):
            state = "done"
        else:  # FAILED and the like, a cancel for a cause, or a state this code does not know
            state = "failed"
            reason = ", ".join(part for part in (slurm_state, reason, exits.get(job_id)) if part)
        return BatchJob(job_id, state, reason if state in ("held", "failed") else "", workers)

    def _exit_codes(self, remote: Remote, host: str, job_ids: List[str]) -> Dict[str, str]:
        """{job id: "exit code 3" or "signal 9"} of the pool's failed jobs `job_ids`: from
        sacct where accounting runs, else from scontrol (one call per array job, never the
        whole cluster's jobs)."""
        exits = self._sacct_exit_codes(remote, host, job_ids)
        if exits is not None:
            return exits
        exits = {}
        for array_id in sorted({job_id.split("_")[0] for job_id in job_ids})[:EXIT_LOOKUPS]:
            result = self._run(remote, host, f"scontrol -o show job {shlex.quote(array_id)}",
                               program="scontrol", check=False)
            for line in result.stdout.splitlines():
                fields = dict(_FIELD.findall(line))
                if fields.get("JobName") != self.job_name or ":" not in fields.get("ExitCode", ""):
                    continue
                job_id = fields.get("JobId", "")
                if fields.get("ArrayTaskId"):
                    job_id = f"{fields.get('ArrayJobId')}_{fields['ArrayTaskId']}"
                exits[job_id] = _exit_words(fields["ExitCode"])
        return exits

    def _sacct_exit_codes(self, remote: Remote, host: str, job_ids: List[str]
                          ) -> Optional[Dict[str, str]]:
        """sacct's exit codes, or None when it cannot say (not installed, or no accounting
        storage: "Slurm accounting storage is disabled", exit 1)."""
        ids = ",".join(shlex.quote(job_id) for job_id in job_ids[:REMOVE_BATCH])
        try:
            result = self._run(remote, host, f"sacct -n -P -X -j {ids} -o JobID,JobName,ExitCode",
                               program="sacct", check=False)
        except CommandMissing:
            return None
        if result.exit_code != 0:
            return None
        exits = {}
        for line in result.stdout.splitlines():
            parts = line.split("|")
            if len(parts) == 3 and parts[1] == self.job_name and ":" in parts[2]:
                exits[parts[0]] = _exit_words(parts[2])
        return exits


def _exit_words(exit_code: str) -> str:
    """SLURM's "CODE:SIGNAL" as "exit code 3" or "signal 9"."""
    code, signal = exit_code.split(":", 1)
    return f"signal {signal}" if signal not in ("", "0") else f"exit code {code}"


def _failed_cancel(row: List[str]) -> bool:
    return row[1].startswith("CANCELLED") and len(row) > 3 and row[3].strip() in CANCEL_FAILURES


def _workers(comment: str) -> int:
    if comment.startswith(WORKERS_COMMENT) and comment[len(WORKERS_COMMENT):].isdigit():
        return int(comment[len(WORKERS_COMMENT):])
    return 1

