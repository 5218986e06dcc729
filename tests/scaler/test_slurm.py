"""The SLURM adapter against a real single-node SLURM (slurmctld + slurmd of the test's own),
over real SSH (sshd on a free port, the scaler's SshRemote)."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable, Dict, List

import pytest

from workers.scaler.base import BatchView, CommandMissing, Submission, SubmitFailed
from workers.scaler.slurm import SlurmAdapter
from workers.scaler.templates import TemplateValues, template_render

pytestmark = pytest.mark.slow

# Each array task takes the node's two CPUs, so task 1 must wait for task 0 to finish.
ARRAY_TEMPLATE = """#!/bin/bash
#SBATCH --array=0-{jobs-1}
#SBATCH --cpus-per-task=2
#SBATCH --output={log_dir}/task-%a.out
echo "task ${SLURM_ARRAY_TASK_ID} of {jobs} in $(pwd), {workers_per_job} workers"
sleep 2
"""


def values(work_dir: str, jobs: int, workers_per_job: int = 1) -> TemplateValues:
    return TemplateValues(bundle=f"{work_dir}/bundle.pyz", env_file=f"{work_dir}/worker.env",
                          queues="xtb:high xtb:normal xtb:low", max_idle=60, max_runtime=3600,
                          max_tasks=100, jobs=jobs, workers_per_job=workers_per_job,
                          work_dir=work_dir, log_dir=f"{work_dir}/logs")


def script_submission(work_dir: str, script: str, jobs: int = 1, workers: int = 1) -> Submission:
    return Submission(batch_jobs=jobs, workers_per_job=workers, script=script, work_dir=work_dir)


def watch(adapter: SlurmAdapter, remote, work_dir: str, until: Callable[[BatchView], bool],
          timeout: float = 60) -> Dict[str, List[str]]:
    """Poll the view until `until(view)`; {job id: the distinct states seen, in order}."""
    seen: Dict[str, List[str]] = {}
    deadline = time.monotonic() + timeout
    while True:
        view = adapter.view(remote, work_dir=work_dir)
        for job in view.jobs:
            states = seen.setdefault(job.job_id, [])
            if not states or states[-1] != job.state:
                states.append(job.state)
        if until(view):
            return seen
        assert time.monotonic() < deadline, f"view after {timeout}s: {view.jobs}"
        time.sleep(0.2)


def settled(view: BatchView) -> bool:
    return bool(view.jobs) and all(job.state in ("done", "failed", "held") for job in view.jobs)


@pytest.fixture
def adapter(slurm, request) -> SlurmAdapter:
    return SlurmAdapter(job_name=f"htportal-{request.node.name[:40]}", env=slurm.env)


def test_it_runs_an_array_job_through_waiting_running_done(adapter, remote, work_dir):
    script = template_render(ARRAY_TEMPLATE, values(work_dir, jobs=2, workers_per_job=3))

    ids = adapter.submit(remote, script_submission(work_dir, script, jobs=2, workers=3))

    assert ids[1] == ids[0].replace("_0", "_1") and len(ids) == 2
    seen = watch(adapter, remote, work_dir, settled)
    assert seen[ids[1]] == ["waiting", "running", "done"]
    assert seen[ids[0]][-2:] == ["running", "done"]
    final = adapter.view(remote, work_dir=work_dir)
    assert [(job.state, job.reason, job.workers) for job in final.jobs] == [("done", "", 3)] * 2
    assert final.count("done") == 6
    script_file = Path(work_dir) / f"{adapter.job_name}.sh"
    assert script_file.stat().st_mode & 0o777 == 0o700
    out = (Path(work_dir) / "logs" / "task-1.out").read_text()
    assert out == f"task 1 of 2 in {work_dir}, 3 workers\n"


def test_a_job_that_exits_3_is_failed_with_its_exit_code(adapter, remote, work_dir):
    script = "#!/bin/bash\n#SBATCH --output=/dev/null\necho failing\nexit 3\n"

    [job_id] = adapter.submit(remote, script_submission(work_dir, script))

    watch(adapter, remote, work_dir, settled)
    [job] = adapter.view(remote, work_dir=work_dir).jobs
    assert (job.job_id, job.state) == (job_id, "failed")
    assert job.reason == "FAILED, NonZeroExitCode, exit code 3"


def test_exit_codes_come_from_sacct_where_accounting_answers(adapter, remote, work_dir,
                                                             tmp_path):
    script = "#!/bin/bash\n#SBATCH --output=/dev/null\nexit 3\n"
    [job_id] = adapter.submit(remote, script_submission(work_dir, script))
    watch(adapter, remote, work_dir, settled)
    # This cluster has no accounting (sacct exits 1): a sacct ahead on PATH that answers, with
    # another pool's job on the same line format to be ignored.
    bin_dir = tmp_path / "accounting"
    bin_dir.mkdir()
    (bin_dir / "sacct").write_text(
        "#!/bin/sh\n"
        f"echo '{job_id}|{adapter.job_name}|0:9'\n"
        "echo '99|htportal-other|5:0'\n"
        f"echo \"$*\" > {tmp_path}/sacct-args\n")
    (bin_dir / "sacct").chmod(0o755)
    adapter.env["PATH"] = f"{bin_dir}:{os.environ['PATH']}"

    [job] = adapter.view(remote, work_dir=work_dir).jobs

    assert job.reason == "FAILED, NonZeroExitCode, signal 9"
    assert (tmp_path / "sacct-args").read_text() == (
        f"-n -P -X -j {job_id} -o JobID,JobName,ExitCode\n")


def test_a_held_job_is_held_and_removed_with_scancel(adapter, remote, work_dir, slurm):
    script = "#!/bin/bash\n#SBATCH --hold\n#SBATCH --output=/dev/null\nsleep 30\n"
    [job_id] = adapter.submit(remote, script_submission(work_dir, script))

    [job] = adapter.view(remote, work_dir=work_dir).jobs
    assert (job.job_id, job.state, job.reason) == (job_id, "held", "JobHeldUser")

    adapter.remove(remote, [job_id])

    [job] = adapter.view(remote, work_dir=work_dir).jobs
    assert (job.job_id, job.state, job.reason) == (job_id, "done", "")
    assert "JobState=CANCELLED" in slurm.run("scontrol", "show", "job", job_id).stdout


def test_the_view_holds_only_the_pools_jobs(adapter, remote, work_dir, slurm):
    other = SlurmAdapter(job_name="htportal-another-pool", env=slurm.env)
    script = "#!/bin/bash\n#SBATCH --output=/dev/null\nsleep 30\n"
    [ours] = adapter.submit(remote, script_submission(work_dir, script))
    [theirs] = other.submit(remote, script_submission(work_dir + "-other", script))

    assert [job.job_id for job in adapter.view(remote, work_dir=work_dir).jobs] == [ours]

    adapter.remove(remote, [ours])
    other.remove(remote, [theirs])
    assert not adapter.view(remote, work_dir=work_dir).count("running")


def test_a_refused_job_is_submit_failed_with_sbatchs_words(adapter, remote, work_dir):
    script = "#!/bin/bash\n#SBATCH --partition=nosuch\ntrue\n"

    with pytest.raises(SubmitFailed) as caught:
        adapter.submit(remote, script_submission(work_dir, script))

    assert str(caught.value) == (
        "sbatch on 127.0.0.1 refused the job: sbatch: error: invalid partition specified: nosuch\n"
        "sbatch: error: Batch job submission failed: Invalid partition name specified")


def test_it_says_when_sbatch_is_missing(remote, work_dir, tmp_path):
    # A PATH with mkdir alone: the host has no SLURM commands.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    os.symlink("/usr/bin/mkdir", bin_dir / "mkdir")
    adapter = SlurmAdapter(job_name="htportal-nosbatch", env={"PATH": str(bin_dir)})

    with pytest.raises(CommandMissing) as caught:
        adapter.submit(remote, script_submission(work_dir, "#!/bin/bash\ntrue\n"))

    assert str(caught.value).startswith("sbatch not found on 127.0.0.1: ")
    assert str(caught.value).endswith("sbatch: command not found")


def test_the_default_template_asks_for_an_array_of_workers(tmp_path):
    from workers.scaler.templates import default_template

    script = template_render(default_template("slurm"), values("/scratch/pool", jobs=4,
                                                                 workers_per_job=2))

    assert "#SBATCH --array=0-3\n" in script
    assert "#SBATCH --cpus-per-task=2\n" in script
    assert ('python3 "/scratch/pool/bundle.pyz" --max-idle 60 --max-runtime 3600 \\\n'
            '        --max-tasks 100 xtb:high xtb:normal xtb:low &') in script
    assert '. "/scratch/pool/worker.env"' in script
    assert "for i in $(seq 1 2); do" in script
