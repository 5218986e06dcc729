"""`manage.py scale`: pools served one by one, errors kept to their pool, and a clean stop."""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from rq import Queue, Worker
from rq.serializers import JSONSerializer

from campaigns.models import Campaign, Dataset, Task
from tests.pipeline.collect_helpers import Process, Processes, wait_for
from tests.servers import free_port
from workers.models import ScalerEvent, WorkerPool
from workers.scaler.backlog import pool_backlog

NOOP_SPEC = {"function": "noop", "arg_sets": [{"name": "a", "parameters": {}}]}


def enqueue(connection, queue: str, count: int):
    rq_queue = Queue(f"{queue}:normal", connection=connection, serializer=JSONSerializer)
    return [rq_queue.enqueue("noop", record={"id": f"mol-{i}", "input": {}}, spec=NOOP_SPEC)
            for i in range(count)]


def ssh_pool(sshd, name: str, **fields) -> WorkerPool:
    return WorkerPool.objects.create(**{
        "name": name, "kind": "slurm", "host": sshd.host, "port": sshd.port, "user": sshd.user,
        "key_path": str(sshd.user_key), "host_key": sshd.host_key_line, **fields})


@pytest.fixture
def portal_redis(db, redis_conn, redis_server, settings):
    settings.REDIS_URL = redis_server.url
    return redis_conn


@pytest.fixture
def local_pool(db, tmp_path):
    pool = WorkerPool.objects.create(name="beta", kind="local", queues="scaletest",
                                     max_workers=1, max_idle=1, work_dir=str(tmp_path / "beta"))
    yield pool
    for pid_file in (tmp_path / "beta" / "pids").glob("*.pid"):
        try:
            os.kill(int(pid_file.read_text()), signal.SIGTERM)
        except (ProcessLookupError, ValueError):
            pass


def test_an_unreachable_pool_gets_an_error_and_the_other_a_submission(
        portal_redis, sshd, local_pool, capsys):
    port = free_port()  # nothing listens there
    alpha = ssh_pool(sshd, "alpha", port=port, queues="scaletest")
    enqueue(portal_redis, "scaletest", 3)

    call_command("scale", "--once")

    error = ScalerEvent.objects.get(pool=alpha)
    assert (error.kind, error.message) == (
        "error", f"{sshd.user}@127.0.0.1:{port}: unreachable (connection refused)")
    assert error.details["error"] == "UnreachableError"
    alpha.refresh_from_db()
    assert alpha.consecutive_failures == 1 and alpha.next_try_at is not None
    submit = ScalerEvent.objects.get(pool=local_pool)
    assert submit.kind == "submit"
    assert submit.message.endswith("pool beta: backlog 3, live 0, waiting 0 (cap 10): "
                                   "submit 1 batch job × 1 worker")
    assert capsys.readouterr().out == ("1 step: submitted 1 batch job (1 worker), "
                                       "removed 0, 1 error\nDone.\n")


def test_a_pool_backing_off_is_not_tried(portal_redis, sshd):
    alpha = ssh_pool(sshd, "alpha", port=free_port(), queues="scaletest")
    call_command("scale", "--once")
    call_command("scale", "--once")  # within the 30 s backoff: left alone
    assert ScalerEvent.objects.filter(pool=alpha).count() == 1


def test_a_missing_batch_command_is_its_own_error(portal_redis, sshd, tmp_path):
    pool = ssh_pool(sshd, "nosbatch", queues="scaletest", work_dir=str(tmp_path / "w"),
                    command_env="PATH=/nonexistent")
    call_command("scale", "--once")
    error = ScalerEvent.objects.get(pool=pool)
    assert error.details["error"] == "CommandMissing"
    assert error.message.startswith("squeue not found on 127.0.0.1: ")


def test_a_dry_run_decides_and_logs_but_changes_nothing(portal_redis, local_pool, caplog):
    enqueue(portal_redis, "scaletest", 2)
    with caplog.at_level(logging.INFO, logger="workers.scaler.loop"):
        call_command("scale", "--once", "--dry-run", "--pool", "beta")
    assert ("pool beta: backlog 2, live 0, waiting 0 (cap 10): submit 1 batch job × 1 worker "
            "(dry run)") in caplog.messages
    assert not ScalerEvent.objects.exists()
    assert not Path(local_pool.work_dir).exists()


def test_pools_of_one_queue_are_filled_in_their_order_of_preference(portal_redis, tmp_path,
                                                                    caplog):
    for name, preference, most in (("ospool", 30, 100), ("here", 10, 2), ("campus", 20, 3)):
        WorkerPool.objects.create(name=name, kind="local", queues="scaletest",
                                  preference=preference, max_workers=most,
                                  max_waiting_jobs=100, work_dir=str(tmp_path / name))
    enqueue(portal_redis, "scaletest", 9)

    with caplog.at_level(logging.INFO, logger="workers.scaler.loop"):
        call_command("scale", "--once", "--dry-run")

    assert [message for message in caplog.messages if message.startswith("pool ")] == [
        "pool here: backlog 9, live 0, waiting 0 (cap 100): submit 2 batch jobs × 1 worker "
        "(dry run)",
        "pool campus: backlog 7 of 9 (the rest is for preferred pools), live 0, waiting 0 "
        "(cap 100): submit 3 batch jobs × 1 worker (dry run)",
        "pool ospool: backlog 4 of 9 (the rest is for preferred pools), live 0, waiting 0 "
        "(cap 100): submit 4 batch jobs × 1 worker (dry run)"]


def test_an_unknown_pool_is_refused(db):
    WorkerPool.objects.create(name="beta", kind="local")
    with pytest.raises(CommandError, match=r"^no worker pool 'gamma' \(known: beta\)$"):
        call_command("scale", "--once", "--pool", "gamma")


@pytest.mark.slow
def test_a_slurm_pool_gets_its_workers_through_ssh(portal_redis, redis_server, sshd, slurm,
                                                   tmp_path):
    pool = ssh_pool(sshd, "cluster", queues="slurmq", max_workers=2, max_idle=2,
                    work_dir=str(tmp_path / "cluster"), command_env=f"SLURM_CONF={slurm.conf}")
    jobs = enqueue(portal_redis, "slurmq", 4)

    call_command("scale", "--once", "--pool", "cluster")

    event = ScalerEvent.objects.get(pool=pool)
    assert event.kind == "submit", event.message
    assert len(event.details["job_ids"]) == 2
    assert event.details["uploaded"] == ["bundle", "env file"]
    # The workers in the SLURM jobs run the jobs from Redis, then leave on --max-idle.
    wait_for(lambda: all(job.get_status(refresh=True) == "finished" for job in jobs),
             timeout=60, what="the SLURM workers to run the jobs")
    logs = "".join(path.read_text() for path in (tmp_path / "cluster" / "logs").glob("*.out"))
    assert redis_server.url not in logs


@pytest.mark.django_db
def test_the_backlog_is_the_ledger_or_redis_and_live_workers_count_once(portal_redis):
    dataset = Dataset.objects.create(name="d")
    running = Campaign.objects.create(name="r", dataset=dataset, function="noop",
                                      output_key="o", queue="bq", state="running")
    paused = Campaign.objects.create(name="p", dataset=dataset, function="noop",
                                     output_key="o", queue="bq", state="paused")
    Task.objects.bulk_create(
        [Task(campaign=running, record_id=f"r{i}", job_id=f"r{i}", state=state)
         for i, state in enumerate(["pending"] * 3 + ["queued"] * 2 + ["running", "done"])]
        + [Task(campaign=paused, record_id="p", job_id="p", state="pending")])
    enqueue(portal_redis, "bq", 2)
    Worker(["bq:high", "bq:normal", "bq:low"], connection=portal_redis,
           name="w1").register_birth()
    Worker(["other:normal"], connection=portal_redis, name="w2").register_birth()
    pool = WorkerPool.objects.create(name="b", kind="local", queues="bq")

    backlog = pool_backlog(pool=pool, connection=portal_redis)

    assert (backlog.ledger, backlog.redis, backlog.live, backlog.tasks) == (5, 2, 1, 5)
    enqueue(portal_redis, "bq", 5)
    assert pool_backlog(pool=pool, connection=portal_redis).tasks == 7


@pytest.mark.django_db(transaction=True)
def test_sigterm_stops_the_loop_between_steps(redis_server, tmp_path):
    WorkerPool.objects.create(name="idle", kind="local", queues="nothing",
                              work_dir=str(tmp_path / "idle"))
    processes = Processes(redis_url=redis_server.url, tmp_path=tmp_path)
    scaler = Process([sys.executable, "manage.py", "scale", "--interval", "60"],
                     env=processes.env(), log_path=tmp_path / "scaler.log")
    try:
        wait_for(lambda: "pool idle: backlog 0" in scaler.log(), timeout=30,
                 what="the first step", processes=(scaler,))
        scaler.signal(signal.SIGTERM)
        assert scaler.wait(5) == 0
    finally:
        scaler.stop()
    log = scaler.log()
    assert ": SIGTERM, stopping after this pool" in log
    assert log.rstrip().endswith("1 step: submitted 0 batch jobs (0 workers), removed 0, "
                                 "0 errors\nDone.")


def test_the_admin_lists_pools_with_their_last_event_and_checks_them(admin_client, sshd):
    good = ssh_pool(sshd, "good", command_env="PATH=/nonexistent")
    ssh_pool(sshd, "down", port=free_port())
    ScalerEvent.objects.create(pool=good, kind="decision", message="pool good: nothing to do")

    page = admin_client.get("/admin/workers/workerpool/")
    assert page.status_code == 200
    assert "<b>decision</b>: pool good: nothing to do" in page.content.decode()

    response = admin_client.post("/admin/workers/workerpool/", {
        "action": "check_connection", "_selected_action": list(
            WorkerPool.objects.values_list("pk", flat=True))}, follow=True)
    shown = [str(message) for message in response.context["messages"]]
    assert f"pool down: {sshd.user}@127.0.0.1:" in shown[0] and "unreachable" in shown[0]
    assert shown[1] == ("pool good: sbatch not found on 127.0.0.1's PATH (add its directory "
                        "in the pool's environment, PATH=...)")
    assert admin_client.get("/admin/workers/scalerevent/").status_code == 200


def test_a_pool_form_refuses_bad_limits_and_a_missing_host_key(db):
    from django.core.exceptions import ValidationError

    pool = WorkerPool(name="x", kind="slurm", host="h", user="u", min_workers=3,
                      max_workers=2, template="{nope}", queues="a b")
    with pytest.raises(ValidationError) as caught:
        pool.full_clean()
    errors = caught.value.message_dict
    assert errors["min_workers"] == ["min workers (3) is more than max workers (2)"]
    assert errors["host_key"] == ["a slurm pool needs this (it is reached over SSH)"]
    assert errors["template"][0].startswith("unknown placeholder {nope} in the template")


def test_the_scaler_does_not_import_the_collector():
    code = ("import sys, django; django.setup(); import workers.scaler.loop, "
            "workers.management.commands.scale; "
            "print(sorted(m for m in sys.modules if m in ('campaigns.loops', "
            "'campaigns.services.collecting')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[2], check=True,
                          env={**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"})

    assert done.stdout == "[]\n", done.stderr


def test_the_admin_form_shows_the_condor_settings_and_refuses_a_quoted_image(admin_client,
                                                                              sshd):
    form = admin_client.get("/admin/workers/workerpool/add/").content.decode()
    for field in ("preference", "container_image", "retry_memory_per_worker_mb", "max_releases"):
        assert f'name="{field}"' in form
    data = {"name": "osg", "kind": "condor", "enabled": "on", "queues": "xtb",
            "host": sshd.host, "port": 22, "user": "alice.smith", "host_key": sshd.host_key_line,
            "max_idle": 600, "max_runtime": 14400, "max_tasks": 100000,
            "memory_per_worker_mb": 2048, "retry_memory_per_worker_mb": 0,
            "disk_per_worker_mb": 1024, "max_releases": 3, "max_job_starts": 10,
            "preference": 30, "min_workers": 0, "max_workers": 100, "workers_per_job": 1,
            "max_waiting_jobs": 10, "removal_tries": 3,
            "container_image": '"osdf:///ospool/ap40/data/alice.smith/x.sif"'}

    refused = admin_client.post("/admin/workers/workerpool/add/", data)

    assert refused.status_code == 200 and not WorkerPool.objects.exists()
    assert "must not have them" in refused.content.decode()
    data["container_image"] = "osdf:///ospool/ap40/data/alice.smith/x.sif"
    assert admin_client.post("/admin/workers/workerpool/add/", data).status_code == 302
    assert WorkerPool.objects.get(name="osg").preference == 30
