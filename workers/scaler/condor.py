"""The HTCondor adapter: condor_submit, condor_q -json, condor_rm, over a Remote (an access
point such as OSG Connect's; docs/condor.md).

A pool's jobs carry JobBatchName "htportal-<pool>" (condor_submit -batch-name) and the number
of workers each runs as the custom attribute HtportalWorkers (-append), so the view needs one
condor_q call and no parsing of the description. Completed and removed jobs leave the queue
for the history soon after; while still listed they count as done (or failed on a non-zero
exit code).
"""
from __future__ import annotations

import json
import re
import shlex
from typing import Dict, List, Optional

from workers.scaler.base import BatchJob, BatchView, Remote, ScalerError, Submission, SubmitFailed
from workers.scaler.slurm import CommandAdapter, command_words, remote_host

WORKERS_ATTRIBUTE = "HtportalWorkers"
RELEASES_ATTRIBUTE = "HtportalReleases"
ATTRIBUTES = ("ClusterId", "ProcId", "JobStatus", "HoldReason", "HoldReasonCode",
              "HoldReasonSubCode", "NumHolds", "ExitCode", WORKERS_ATTRIBUTE, RELEASES_ATTRIBUTE)
# HoldReasonCodes worth another run on another node (HTCondor manual, job ClassAd attributes,
# HoldReasonCode): 12 TransferOutputError and 13 TransferInputError (HoldReasonSubCode is the
# errno or the plug-in's code: an OSDF cache or the network had a bad moment), 34
# JobOutOfResources (memory over the request: the next task may need less, and
# retry_request_memory raises the request), 45 SingularityTestFailed (that node's container
# runtime). Not 1 (condor_hold: a person's decision), not 26 SystemPolicy nor 46/47 duration
# exceeded (the OSPool asks that those never be released), not 6/14 (a broken description).
TRANSIENT_HOLD_CODES = (12, 13, 34, 45)
RELEASE_AFTER_S = 600        # a held job waits this long before periodic_release lets it go
HELD_REMOVE_AFTER_S = 3600   # periodic_remove: held this long (released ones leave before)
# OSPool JobDurationCategory (user-documentation jobdurationcategory.md): expected duration
# under 10 h for Medium (held past 20 h), under 20 h for Long (held past 40 h); no other names.
DURATION_CATEGORIES = ((10 * 3600, "Medium"), (20 * 3600, "Long"))
CONTAINER_PREFIXES = ("osdf://", "pelican://", "/cvmfs/", "docker://", "http://", "https://")
_PROJECT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}\Z")
_INPUT_FILE = re.compile(r"^[^\s,\"']+\Z")
# JobStatus codes (HTCondor's manual, "JobStatus" in the job ClassAd attributes).
STATES = {1: "waiting", 2: "running", 3: "done", 4: "done", 5: "held", 6: "running",
          7: "running"}
# condor_submit -terse: "42.0 - 42.9", one line per cluster.
_TERSE = re.compile(r"^(\d+)\.(\d+)\s*-\s*(\d+)\.(\d+)\s*$", re.MULTILINE)


class CondorAdapter(CommandAdapter):
    """Batch jobs of one pool on one HTCondor access point."""

    kind = "condor"

    def submit(self, remote: Remote, submission: Submission) -> List[str]:
        append = f"+{WORKERS_ATTRIBUTE} = {submission.workers_per_job}"
        host, result = self._submit_file(
            remote, submission, suffix=".sub", mode=0o600, program="condor_submit",
            command=f"condor_submit -terse -batch-name {shlex.quote(self.job_name)} "
                    f"-append {shlex.quote(append)}")
        ids = [f"{cluster}.{proc}" for cluster, first, last_cluster, last
               in _TERSE.findall(result.stdout) if cluster == last_cluster
               for proc in range(int(first), int(last) + 1)]
        if result.exit_code != 0 or not ids:
            raise SubmitFailed(f"condor_submit on {host} refused the job: {command_words(result)}")
        return ids

    def view(self, remote: Remote, *, work_dir: str) -> BatchView:
        host = remote_host(remote, self.host)
        constraint = f'JobBatchName == "{self.job_name}"'
        result = self._run(
            remote, host, f"condor_q -json -constraint {shlex.quote(constraint)} "
                          f"-attributes {','.join(ATTRIBUTES)}",
            program="condor_q")
        # With no matching jobs condor_q -json prints nothing at all (not "[]").
        text = result.stdout.strip()
        try:
            ads = json.loads(text) if text else []
        except ValueError as exc:
            raise ScalerError(f"condor_q on {host} printed something other than JSON "
                              f"({exc}): {text[:200]!r}") from None
        return BatchView([_job(ad) for ad in ads])

    def remove(self, remote: Remote, job_ids: List[str]) -> None:
        self._remove(remote, job_ids, program="condor_rm")


def _job(ad: dict) -> BatchJob:
    job_id = f"{ad.get('ClusterId')}.{ad.get('ProcId')}"
    status = ad.get("JobStatus")
    state = STATES.get(status, "failed")
    reason = ""
    if state == "held":
        reason = str(ad.get("HoldReason") or "held, no HoldReason given")
        if _releasable(ad):  # periodic_release runs it again: capacity on its way back
            state = "waiting"
            reason = f"held, to be released ({reason})"
    elif status == 4 and ad.get("ExitCode") not in (None, 0):
        state, reason = "failed", f"exit code {ad['ExitCode']}"
    elif state == "failed":
        reason = f"JobStatus {status}"
    workers = ad.get(WORKERS_ATTRIBUTE)
    return BatchJob(job_id, state, reason, workers if isinstance(workers, int) and workers > 0 else 1)


def _releasable(ad: dict) -> bool:
    """True when the job's own periodic_release will release it (same rule as the
    expression submit_settings writes)."""
    limit, holds = ad.get(RELEASES_ATTRIBUTE), ad.get("NumHolds")
    return (ad.get("HoldReasonCode") in TRANSIENT_HOLD_CODES and isinstance(limit, int)
            and isinstance(holds, int) and holds <= limit)


def duration_category(*, max_runtime: int) -> Optional[str]:
    """The OSPool JobDurationCategory for workers that stop after `max_runtime` seconds (the
    smallest whose expected duration covers it), or None above 20 hours."""
    for limit, name in DURATION_CATEGORIES:
        if max_runtime <= limit:
            return name
    return None


def release_expression(*, max_releases: int) -> str:
    codes = ", ".join(str(code) for code in TRANSIENT_HOLD_CODES)
    return (f"member(HoldReasonCode, {{{codes}}}) && NumHolds <= {max_releases} && "
            f"(time() - EnteredCurrentStatus) > {RELEASE_AFTER_S}")


def remove_expression(*, max_job_starts: int) -> str:
    return (f"(JobStatus == 5 && (time() - EnteredCurrentStatus) > {HELD_REMOVE_AFTER_S}) || "
            f"NumJobStarts > {max_job_starts}")


def input_file_lines(pool) -> List[str]:
    return [line.strip() for line in pool.input_files.splitlines() if line.strip()]


def submit_settings(*, pool, workers_per_job: int) -> str:
    """The submit commands a pool's settings make (the {submit_settings} placeholder of the
    condor template): resources, duration category, container, project, hold policy."""
    lines = [f"request_cpus = {workers_per_job}",
             f"request_memory = {pool.memory_per_worker_mb * workers_per_job} MB",
             f"request_disk = {pool.disk_per_worker_mb * workers_per_job} MB"]
    if pool.retry_memory_per_worker_mb:
        lines.append(f"retry_request_memory = "
                     f"{pool.retry_memory_per_worker_mb * workers_per_job} MB")
    if pool.container_image:
        lines.append(f"container_image = {pool.container_image}")
    category = duration_category(max_runtime=pool.max_runtime)
    if category:
        lines.append(f'+JobDurationCategory = "{category}"')
    if pool.project_name:
        lines.append(f'+ProjectName = "{pool.project_name}"')
    lines += [f"+{RELEASES_ATTRIBUTE} = {pool.max_releases}",
              f"periodic_release = {release_expression(max_releases=pool.max_releases)}",
              f"periodic_remove = {remove_expression(max_job_starts=pool.max_job_starts)}"]
    return "\n".join(lines)


def input_files(*, pool, bundle: str, env_file: str) -> str:
    """transfer_input_files: the bundle, the env file and the pool's extra files."""
    return ", ".join([bundle, env_file] + input_file_lines(pool))


def condor_settings_problems(*, pool) -> Dict[str, str]:
    """{field: what is wrong} for a condor pool's submit settings (the admin form's check)."""
    problems = {}
    image = pool.container_image.strip()
    if image:
        if image.startswith("stash://"):
            problems["container_image"] = ("stash:// is the old name of OSDF URLs: write "
                                           "osdf:///ospool/... instead")
        elif any(char in image for char in "\"' \t\n"):
            problems["container_image"] = ("container_image is written without quotes or "
                                           "spaces (the historical +SingularityImage needed "
                                           "quotes; container_image must not have them)")
        elif not (image.startswith(CONTAINER_PREFIXES) or image.endswith(".sif")):
            problems["container_image"] = (f"{image!r} is not an image: give an osdf:// or "
                                           f"/cvmfs/ path, a docker:// name or a .sif file")
    if pool.project_name and not _PROJECT.match(pool.project_name):
        problems["project_name"] = ("a project name is letters, digits, '_', '.' and '-' "
                                    "(as the OSPool registered it)")
    for line in input_file_lines(pool):
        if line.startswith("stash://"):
            problems["input_files"] = f"{line}: stash:// is the old name: write osdf:///..."
        elif not _INPUT_FILE.match(line):
            problems["input_files"] = (f"{line!r}: one path or URL a line, without spaces, "
                                       f"commas or quotes")
    if (pool.retry_memory_per_worker_mb
            and pool.retry_memory_per_worker_mb <= pool.memory_per_worker_mb):
        problems["retry_memory_per_worker_mb"] = (
            f"the retry memory ({pool.retry_memory_per_worker_mb} MB) must be more than the "
            f"memory per worker ({pool.memory_per_worker_mb} MB), or 0 for none")
    if not pool.template.strip() and duration_category(max_runtime=pool.max_runtime) is None:
        problems["max_runtime"] = (f"{pool.max_runtime} s is over 20 hours: OSPool jobs must "
                                   f"be Medium (under 10 h) or Long (under 20 h); lower the "
                                   f"worker's --max-runtime")
    return problems
