"""The HTCondor adapter over real SSH (sshd on a free port, the scaler's SshRemote).

HTCondor's daemons cannot be installed here, so condor_submit, condor_q and condor_rm are the
stand-ins in tests/scaler/standins/: they reproduce HTCondor's DOCUMENTED outputs (condor_submit's
"N job(s) submitted to cluster C." and -terse "C.0 - C.N-1", condor_q -json's array of
ClassAds and its empty output when nothing matches, condor_rm's "Job C.P marked for removal")
and keep their queue in a JSON file the test edits to move jobs between states.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from workers.models import WorkerPool
from workers.scaler.base import CommandMissing, ScalerError, Submission, SubmitFailed
from workers.scaler.condor import CondorAdapter, input_files, submit_settings
from workers.scaler.templates import (TemplateError, TemplateValues, default_template,
                                      template_render)

STANDINS = Path(__file__).resolve().parent / "standins"
HOLD_REASON = ("Error from slot1_3@node17.osg: Failed to execute '/bin/sh': (errno=2: "
               "'No such file or directory')")


def values(work_dir: str, jobs: int, workers_per_job: int = 1, **pool_fields) -> TemplateValues:
    pool = WorkerPool(name="osg", kind="condor", max_runtime=7200, **pool_fields)
    bundle, env_file = f"{work_dir}/htportal-worker.pyz", f"{work_dir}/worker.env"
    return TemplateValues(bundle=bundle, env_file=env_file, queues="vina:high vina:normal",
                          max_idle=120, max_runtime=7200, max_tasks=500, jobs=jobs,
                          workers_per_job=workers_per_job, work_dir=work_dir,
                          log_dir=f"{work_dir}/logs",
                          submit_settings=submit_settings(pool=pool,
                                                          workers_per_job=workers_per_job),
                          input_files=input_files(pool=pool, bundle=bundle, env_file=env_file))


def submission(work_dir: str, jobs: int = 3, workers: int = 2) -> Submission:
    script = template_render(default_template("condor"), values(work_dir, jobs, workers))
    return Submission(batch_jobs=jobs, workers_per_job=workers, script=script, work_dir=work_dir)


@pytest.fixture
def adapter(condor_env) -> CondorAdapter:
    return CondorAdapter(job_name="htportal-osg", env=condor_env)


def edit_queue(condor_env: dict, changes: dict) -> None:
    """As the pool would: set ClassAd attributes of jobs, {"C.P": {attribute: value}}."""
    path = Path(condor_env["CONDOR_STANDIN_STATE"])
    state = json.loads(path.read_text())
    for ad in state["jobs"]:
        ad.update(changes.get(f"{ad['ClusterId']}.{ad['ProcId']}", {}))
    path.write_text(json.dumps(state))


def test_it_submits_procs_with_the_pools_batch_name(adapter, remote, work_dir, condor_env):
    ids = adapter.submit(remote, submission(work_dir, jobs=3, workers=2))

    assert ids == ["1.0", "1.1", "1.2"]
    view = adapter.view(remote, work_dir=work_dir)
    assert [(job.job_id, job.state, job.workers) for job in view.jobs] == [
        ("1.0", "waiting", 2), ("1.1", "waiting", 2), ("1.2", "waiting", 2)]
    assert view.count("waiting") == 6
    description = Path(work_dir) / "htportal-osg.sub"
    assert description.stat().st_mode & 0o777 == 0o600
    assert f"transfer_input_files = {work_dir}/htportal-worker.pyz, {work_dir}/worker.env\n" \
        in description.read_text()
    [ad] = [ad for ad in json.loads(Path(condor_env["CONDOR_STANDIN_STATE"]).read_text())["jobs"]
            if ad["ProcId"] == 2]
    assert (ad["JobBatchName"], ad["HtportalWorkers"], ad["Iwd"]) == ("htportal-osg", 2, work_dir)


def test_a_held_job_is_counted_with_its_hold_reason_and_removed(adapter, remote, work_dir,
                                                                 condor_env):
    adapter.submit(remote, submission(work_dir, jobs=3, workers=2))
    edit_queue(condor_env, {"1.0": {"JobStatus": 2},
                            "1.1": {"JobStatus": 5, "HoldReason": HOLD_REASON,
                                    "HoldReasonCode": 6}})

    view = adapter.view(remote, work_dir=work_dir)

    assert (view.count("running"), view.count("held"), view.count("waiting")) == (2, 2, 2)
    [held] = [job for job in view.jobs if job.state == "held"]
    assert (held.job_id, held.reason) == ("1.1", HOLD_REASON)

    adapter.remove(remote, [held.job_id])

    assert [job.job_id for job in adapter.view(remote, work_dir=work_dir).jobs] == ["1.0", "1.2"]


def test_completed_jobs_are_done_or_failed_by_exit_code(adapter, remote, work_dir, condor_env):
    adapter.submit(remote, submission(work_dir, jobs=2))
    edit_queue(condor_env, {"1.0": {"JobStatus": 4, "ExitCode": 0},
                            "1.1": {"JobStatus": 4, "ExitCode": 2}})

    jobs = adapter.view(remote, work_dir=work_dir).jobs

    assert [(job.state, job.reason) for job in jobs] == [("done", ""), ("failed", "exit code 2")]


def test_no_jobs_is_an_empty_view_whether_condor_q_prints_nothing_or_brackets(
        adapter, remote, work_dir, condor_env, tmp_path):
    assert adapter.view(remote, work_dir=work_dir).jobs == []

    # Some HTCondor versions print "[]"; a condor_q ahead on PATH that does.
    brackets = tmp_path / "brackets"
    brackets.mkdir()
    (brackets / "condor_q").write_text("#!/bin/sh\necho '[]'\n")
    (brackets / "condor_q").chmod(0o755)
    adapter.env["PATH"] = f"{brackets}:{condor_env['PATH']}"
    assert adapter.view(remote, work_dir=work_dir).jobs == []


def test_the_view_holds_only_the_pools_jobs(adapter, remote, work_dir, condor_env):
    other = CondorAdapter(job_name="htportal-other", env=condor_env)
    other.submit(remote, submission(work_dir + "-other", jobs=1))
    adapter.submit(remote, submission(work_dir, jobs=1))

    assert [job.job_id for job in adapter.view(remote, work_dir=work_dir).jobs] == ["2.0"]


def test_a_refused_description_is_submit_failed_with_condor_submits_words(adapter, remote,
                                                                          work_dir):
    refused = Submission(batch_jobs=1, workers_per_job=1, script="universe = vanilla\nqueue 1\n",
                         work_dir=work_dir)

    with pytest.raises(SubmitFailed) as caught:
        adapter.submit(remote, refused)

    assert str(caught.value) == ("condor_submit on 127.0.0.1 refused the job: "
                                 "ERROR: No 'executable' parameter was provided")


def test_it_says_when_condor_submit_is_missing(remote, work_dir):
    adapter = CondorAdapter(job_name="htportal-osg", env={"PATH": "/usr/bin"})

    with pytest.raises(CommandMissing) as caught:
        adapter.submit(remote, submission(work_dir))

    assert str(caught.value).startswith("condor_submit not found on 127.0.0.1: ")
    assert str(caught.value).endswith("condor_submit: command not found")


def test_removing_an_unknown_job_says_so(adapter, remote, work_dir):
    with pytest.raises(ScalerError) as caught:
        adapter.remove(remote, ["7.3"])

    assert str(caught.value) == ("condor_rm on 127.0.0.1 failed: Couldn't find/remove all jobs "
                                 "matching constraint (ClusterId == 7 && ProcId == 3)")


def test_the_stand_in_prints_condor_submits_documented_lines(work_dir, condor_env):
    os.makedirs(work_dir)
    path = Path(work_dir) / "job.sub"
    path.write_text("executable = /bin/true\nqueue 3\n")
    run = dict(capture_output=True, text=True, env={**os.environ, **condor_env}, check=True)

    plain = subprocess.run(["condor_submit", str(path)], **run).stdout
    terse = subprocess.run(["condor_submit", "-terse", str(path)], **run).stdout
    removed = subprocess.run(["condor_rm", "1.2"], **run).stdout

    assert plain == "Submitting job(s)...\n3 job(s) submitted to cluster 1.\n"
    assert terse == "2.0 - 2.2\n"
    assert removed == "Job 1.2 marked for removal\n"


def test_the_default_description_queues_the_jobs_and_ships_the_bundle():
    text = template_render(default_template("condor"), values("/home/u/pool", jobs=5))

    assert text.endswith("queue 5\n")
    assert "log = /home/u/pool/logs/condor-$(Cluster).log\n" in text
    assert "python3 ./`basename /home/u/pool/htportal-worker.pyz` --max-idle 120" in text


def test_an_unknown_placeholder_is_refused_by_name():
    with pytest.raises(TemplateError) as caught:
        template_render("queue {jobs}\nrequest_gpus = {gpus}\narguments = ${HOME} {{jobs}}\n",
                        values("/w", jobs=1))

    assert str(caught.value) == (
        "unknown placeholder {gpus} in the template (known: bundle, env_file, queues, max_idle, "
        "max_runtime, max_tasks, jobs, workers_per_job, work_dir, log_dir, setup, "
        "submit_settings, input_files, jobs-1; write {{name}} for a literal {name})")


def test_shell_variables_and_escaped_braces_are_left_alone():
    text = template_render("a=${SLURM_ARRAY_TASK_ID} f() { :; } {{jobs}} {jobs}",
                           values("/w", jobs=4))

    assert text == "a=${SLURM_ARRAY_TASK_ID} f() { :; } {jobs} 4"


def test_a_job_held_for_a_transient_cause_counts_as_waiting_until_its_releases_run_out(
        adapter, remote, work_dir, condor_env):
    adapter.submit(remote, submission(work_dir, jobs=3, workers=2))
    transfer = "Transfer input files failure at execution point ... (errno 110)"
    edit_queue(condor_env, {
        "1.0": {"JobStatus": 5, "HoldReason": transfer, "HoldReasonCode": 13,
                "HoldReasonSubCode": 110, "NumHolds": 3},
        "1.1": {"JobStatus": 5, "HoldReason": transfer, "HoldReasonCode": 13,
                "HoldReasonSubCode": 110, "NumHolds": 4},
        "1.2": {"JobStatus": 5, "HoldReason": "via condor_hold (by user alice)",
                "HoldReasonCode": 1, "NumHolds": 1}})

    jobs = {job.job_id: job for job in adapter.view(remote, work_dir=work_dir).jobs}

    assert (jobs["1.0"].state, jobs["1.0"].reason) == ("waiting", f"held, to be released "
                                                                  f"({transfer})")
    assert [(jobs[i].state, jobs[i].reason) for i in ("1.1", "1.2")] == [
        ("held", transfer), ("held", "via condor_hold (by user alice)")]
