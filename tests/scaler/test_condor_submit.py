"""The submit description a condor pool's settings make, parsed by HTCondor's own Python
bindings (htcondor2.Submit for the description, classad2.ExprTree for each expression) and
checked against what the OSPool documents (docs/condor.md names the sources)."""
from __future__ import annotations

import re
import time

import classad2
import htcondor2
import pytest
from django.core.exceptions import ValidationError

from workers.models import WorkerPool
from workers.scaler.condor import (HELD_REMOVE_AFTER_S, RELEASE_AFTER_S, _releasable,
                                   duration_category, input_files, release_expression,
                                   remove_expression, submit_settings)
from workers.scaler.templates import TemplateValues, default_template, template_render

HOUR = 3600
# Every submit command the default description may hold; htcondor2.Submit accepts any key,
# so a misspelt one (request_memroy) would pass it: this list catches that.
KNOWN_COMMANDS = {
    "universe", "executable", "transfer_executable", "arguments", "should_transfer_files",
    "when_to_transfer_output", "transfer_input_files", "initialdir", "output", "error", "log",
    "request_cpus", "request_memory", "request_disk", "retry_request_memory",
    "container_image", "periodic_release", "periodic_remove", "MY.JobDurationCategory",
    "MY.ProjectName", "MY.HtportalReleases"}
IMAGE = "osdf:///ospool/ap40/data/alice.smith/htportal-v3.sif"
ORCA = "osdf:///ospool/ap40/data/alice.smith/orca-6.0.1.tar.xz"


def ospool_pool(**fields) -> WorkerPool:
    return WorkerPool(**{
        "name": "osg", "kind": "condor", "host": "ap40.uw.osg-htc.org", "user": "alice.smith",
        "max_runtime": 4 * HOUR, "memory_per_worker_mb": 2048, "retry_memory_per_worker_mb": 6144,
        "disk_per_worker_mb": 3072, "container_image": IMAGE, "input_files": ORCA + "\n",
        "project_name": "UChicago_Chem", **fields})


def render(pool: WorkerPool, *, jobs: int = 50, workers_per_job: int = 2) -> str:
    work = "/home/alice.smith/htportal/osg"
    bundle, env_file = f"{work}/htportal-worker-1a2b.pyz", f"{work}/worker.env"
    return template_render(default_template("condor"), TemplateValues(
        bundle=bundle, env_file=env_file, queues="xtb:high xtb:normal", max_idle=600,
        max_runtime=pool.max_runtime, max_tasks=100000, jobs=jobs,
        workers_per_job=workers_per_job, work_dir=work, log_dir=f"{work}/logs",
        submit_settings=submit_settings(pool=pool, workers_per_job=workers_per_job),
        input_files=input_files(pool=pool, bundle=bundle, env_file=env_file)))


def commands(text: str) -> list:
    return [line for line in text.splitlines() if line.strip() and not line.startswith("#")]


def test_it_writes_one_cluster_of_n_procs_that_htcondor_parses():
    text = render(ospool_pool(), jobs=50)
    submit = htcondor2.Submit(text)

    assert set(submit.keys()) <= KNOWN_COMMANDS, set(submit.keys()) - KNOWN_COMMANDS
    assert submit.getQArgs() == "50"
    [queue_line] = [line for line in commands(text) if line.lower().startswith("queue")]
    assert queue_line == "queue 50" and commands(text)[-1] == "queue 50"
    assert all("=" in line for line in commands(text)[:-1])  # nothing but commands before it


def test_it_asks_for_the_pools_resources_container_project_and_duration():
    submit = htcondor2.Submit(render(ospool_pool(), workers_per_job=2))

    assert {key: submit[key] for key in (
        "request_cpus", "request_memory", "retry_request_memory", "request_disk",
        "container_image", "MY.JobDurationCategory", "MY.ProjectName")} == {
        "request_cpus": "2", "request_memory": "4096 MB", "retry_request_memory": "12288 MB",
        "request_disk": "6144 MB", "container_image": IMAGE,
        "MY.JobDurationCategory": '"Medium"', "MY.ProjectName": '"UChicago_Chem"'}
    # the bundle, the env file, then the software through OSDF
    assert submit["transfer_input_files"] == (
        "/home/alice.smith/htportal/osg/htportal-worker-1a2b.pyz, "
        f"/home/alice.smith/htportal/osg/worker.env, {ORCA}")


def test_it_never_writes_the_historical_singularity_image_or_a_quoted_image():
    text = render(ospool_pool(container_image="/cvmfs/singularity.opensciencegrid.org/htc/rocky:9"))

    assert "SingularityImage" not in text
    assert "container_image = /cvmfs/singularity.opensciencegrid.org/htc/rocky:9\n" in text


def test_blank_settings_leave_their_lines_out():
    text = render(ospool_pool(container_image="", project_name="", input_files="",
                              retry_memory_per_worker_mb=0))
    submit = htcondor2.Submit(text)

    for key in ("container_image", "MY.ProjectName", "retry_request_memory"):
        assert key not in submit.keys()
    assert submit["transfer_input_files"].count(",") == 1


@pytest.mark.parametrize("max_runtime, category", [
    (4 * HOUR, "Medium"), (10 * HOUR, "Medium"), (10 * HOUR + 1, "Long"), (20 * HOUR, "Long"),
    (20 * HOUR + 1, None)])
def test_the_duration_category_covers_the_workers_runtime(max_runtime, category):
    assert duration_category(max_runtime=max_runtime) == category


def test_every_expression_parses_as_a_classad_expression():
    submit = htcondor2.Submit(render(ospool_pool()))

    for key in ("periodic_release", "periodic_remove"):
        classad2.ExprTree(submit[key])  # raises on a broken expression
    with pytest.raises(Exception):
        classad2.ExprTree("member(HoldReasonCode, {12, 13) &&")  # the check can fail


def held(code: int, **fields):
    """A factory of a held job's ClassAd, made when the test runs (its times are then fresh:
    the parameters are collected long before)."""
    return lambda: held_ad(code, **fields)


def held_ad(code: int, *, holds: int = 1, since: int = 2 * RELEASE_AFTER_S, starts: int = 1,
            subcode: int = 0) -> classad2.ClassAd:
    ad = classad2.ClassAd({"JobStatus": 5, "HoldReasonCode": code, "HoldReasonSubCode": subcode,
                           "NumHolds": holds, "NumJobStarts": starts, "HtportalReleases": 3})
    ad["EnteredCurrentStatus"] = int(time.time()) - since
    return ad


@pytest.mark.parametrize("ad, released", [
    (held(13, subcode=110), True),      # input transfer (OSDF timeout, errno 110)
    (held(12, subcode=256), True),      # output transfer, plug-in exit code 1 << 8
    (held(34), True),                   # memory over request_memory
    (held(45), True),                   # the node's container runtime failed its test
    (held(13, holds=3), True),          # the third hold is still released...
    (held(13, holds=4), False),         # ...the fourth is not
    (held(13, since=60), False),        # not before RELEASE_AFTER_S
    (held(1), False),                   # condor_hold: a person's decision
    (held(26), False),                  # SYSTEM_PERIODIC_HOLD
    (held(46), False),                  # duration exceeded: never release (OSPool)
    (held(6), False),                   # failed to execute: the description is wrong
])
def test_periodic_release_lets_only_transient_holds_run_again_a_bounded_number_of_times(
        ad, released):
    expression = classad2.ExprTree(release_expression(max_releases=3))
    ad = ad()

    assert expression.eval(ad) is released
    # the scaler's view counts a held job as capacity exactly when condor will release it
    # (it cannot see the time: every listed hold waits RELEASE_AFTER_S, then goes)
    view_ad = {key: ad[key] for key in ("HoldReasonCode", "NumHolds", "HtportalReleases")}
    waited = int(time.time()) - ad["EnteredCurrentStatus"] >= RELEASE_AFTER_S
    assert _releasable(view_ad) is (released or not waited)


@pytest.mark.parametrize("ad, removed", [
    (held(6, since=HELD_REMOVE_AFTER_S + 60), True),
    (held(6, since=HELD_REMOVE_AFTER_S - 60), False),
    (lambda: classad2.ClassAd({"JobStatus": 2, "NumJobStarts": 11, "EnteredCurrentStatus": 0}),
     True),
    (lambda: classad2.ClassAd({"JobStatus": 1, "NumJobStarts": 10, "EnteredCurrentStatus": 0}),
     False),
])
def test_periodic_remove_takes_jobs_held_too_long_or_started_too_often(ad, removed):
    assert classad2.ExprTree(remove_expression(max_job_starts=10)).eval(ad()) is removed


@pytest.mark.parametrize("fields, field, words", [
    ({"container_image": '"osdf:///ospool/ap40/data/u/x.sif"'}, "container_image",
     "without quotes"),
    ({"container_image": "stash:///osgconnect/public/u/x.sif"}, "container_image",
     "stash:// is the old name"),
    ({"container_image": "my image"}, "container_image", "without quotes or spaces"),
    ({"container_image": "rocky9"}, "container_image", "is not an image"),
    ({"project_name": "Chem Lab"}, "project_name", "letters, digits"),
    ({"input_files": "osdf:///a.tar, osdf:///b.tar"}, "input_files", "one path or URL a line"),
    ({"retry_memory_per_worker_mb": 1024}, "retry_memory_per_worker_mb", "must be more than"),
    ({"max_runtime": 30 * HOUR}, "max_runtime", "over 20 hours"),
])
def test_the_pool_form_refuses_settings_the_access_point_would_refuse(fields, field, words):
    pool = ospool_pool(host_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsab"
                                "gH5C9okWi0dh2l9GKJl", **fields)

    with pytest.raises(ValidationError) as caught:
        pool.clean()

    assert list(caught.value.message_dict) == [field]
    assert words in caught.value.message_dict[field][0]


def test_the_example_pool_is_accepted():
    ospool_pool(host_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9o"
                         "kWi0dh2l9GKJl").clean()
    assert re.search(r"^\+JobDurationCategory = \"Long\"$",
                     render(ospool_pool(max_runtime=15 * HOUR)), re.MULTILINE)
