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
from typing import List

from workers.scaler.base import BatchJob, BatchView, Remote, ScalerError, Submission, SubmitFailed
from workers.scaler.slurm import CommandAdapter, command_words, remote_host

WORKERS_ATTRIBUTE = "HtportalWorkers"
ATTRIBUTES = ("ClusterId", "ProcId", "JobStatus", "HoldReason", "HoldReasonCode", "ExitCode",
              WORKERS_ATTRIBUTE)
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
    elif status == 4 and ad.get("ExitCode") not in (None, 0):
        state, reason = "failed", f"exit code {ad['ExitCode']}"
    elif state == "failed":
        reason = f"JobStatus {status}"
    workers = ad.get(WORKERS_ATTRIBUTE)
    return BatchJob(job_id, state, reason, workers if isinstance(workers, int) and workers > 0 else 1)
