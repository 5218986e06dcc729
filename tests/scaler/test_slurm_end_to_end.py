"""The scaler's "done when": a real campaign runs on a real SLURM, started over real SSH.

Water is imported (records service) into a dataset, the xtb_gfn2 example definition is
imported onto it (definitions service) and submitted (campaign_submit). Then, as an operator
would, in subprocesses on the test database: `manage.py collect --once` feeds the job to the
test Redis; `manage.py scale --once` sees the backlog and, over SSH, uploads the worker bundle
and its 0600 env file and sbatches one array job on the test-owned slurmctld/slurmd; that job's
worker runs the real xtb and replies; `collect --once` (repeated) writes the energy into the
record; a last `scale --once` finds no backlog and submits nothing.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connections

from campaigns.models import Campaign, Dataset, Record, Task
from campaigns.services.definitions import campaign_definition_parse, campaign_import
from campaigns.services.records import records_import
from campaigns.services.submission import campaign_submit
from workers.models import ScalerEvent, WorkerPool
from workers.scaler.slurm import SlurmAdapter

REPO = Path(__file__).resolve().parents[2]
WATER_XYZ = REPO / "tests" / "fixtures" / "xtb" / "water" / "water.xyz"
WATER_ENERGY_EH = -5.0702081973  # xtb 6.x GFN2 on this geometry (tests/fixtures/xtb/water)

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def portal_env(redis_url: str, var_dir: Path) -> dict:
    """The portal's own settings (not tests.settings) on the test database and Redis."""
    return {**os.environ, "DJANGO_SETTINGS_MODULE": "htportal.settings",
            "DATABASE_URL": f"sqlite:///{connections['default'].settings_dict['NAME']}",
            "HTPORTAL_VAR_DIR": str(var_dir), "HTPORTAL_STORAGE_DIR": str(settings.MEDIA_ROOT),
            "REDIS_URL": redis_url, "PYTHONUNBUFFERED": "1"}


def manage(env: dict, *args: str) -> str:
    done = subprocess.run([sys.executable, "manage.py", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, f"manage.py {' '.join(args)}: {done.stderr[-3000:]}"
    return done.stdout


def xtb_campaign() -> Campaign:
    dataset = Dataset.objects.create(name="e2e-waters")
    records_import(dataset=dataset, paths=[WATER_XYZ], on_error="abort")
    text = (REPO / "examples" / "xtb_gfn2.yaml").read_text()
    campaign = campaign_import(definition=campaign_definition_parse(text=text, source="xtb"),
                               dataset_name=dataset.name)
    campaign_submit(campaign=campaign)
    return campaign


def slurm_pool(*, sshd, slurm, redis_url: str, work_dir: Path, queue: str) -> WorkerPool:
    return WorkerPool.objects.create(
        name="e2e", kind=WorkerPool.Kind.SLURM, host=sshd.host, port=sshd.port, user=sshd.user,
        key_path=str(sshd.user_key), host_key=sshd.host_key_line, work_dir=str(work_dir),
        redis_url=redis_url, command_env=f"SLURM_CONF={slurm.conf}", queues=queue,
        max_idle=3, max_runtime=3600, max_tasks=10, min_workers=0, max_workers=1,
        workers_per_job=1, max_waiting_jobs=1)


def test_a_campaign_runs_on_slurm_started_by_the_scaler_over_ssh(sshd, slurm, redis_server,
                                                                 redis_conn, tmp_path):
    campaign = xtb_campaign()
    pool = slurm_pool(sshd=sshd, slurm=slurm, redis_url=redis_server.url,
                      work_dir=tmp_path / "pool", queue=campaign.queue)
    env = portal_env(redis_server.url, tmp_path / "var")
    adapter, remote = SlurmAdapter(job_name="htportal-e2e", env=slurm.env), sshd.remote()

    manage(env, "collect", "--once")  # feeds the job to Redis
    assert Task.objects.get(campaign=campaign).state == "queued"

    manage(env, "scale", "--once")

    [submit] = ScalerEvent.objects.filter(pool=pool, kind="submit")
    [job] = adapter.view(remote, work_dir="").jobs
    assert submit.details["job_ids"] == [job.job_id] and job.job_id.endswith("_0")
    env_file = tmp_path / "pool" / "worker.env"
    assert env_file.stat().st_mode & 0o777 == 0o600
    assert env_file.read_text() == f"HTPORTAL_REDIS_URL={redis_server.url}\n"

    deadline = time.monotonic() + 180
    while Task.objects.get(campaign=campaign).state != "done":
        assert time.monotonic() < deadline, (
            f"task {Task.objects.get(campaign=campaign).state}, batch jobs "
            f"{adapter.view(remote, work_dir='').jobs}, logs: {_logs(tmp_path / 'pool')}")
        manage(env, "collect", "--once")
        time.sleep(0.5)

    [record] = Record.objects.filter(dataset=campaign.dataset)
    energy = record.results["xtb"]["gfn2"]["energy"]
    assert energy["unit"] == "Eh"
    assert energy["value"] == pytest.approx(WATER_ENERGY_EH, abs=1e-9)
    task = Task.objects.get(campaign=campaign)
    assert task.worker and task.attempts == 1

    # The backlog is empty: the next step submits nothing, whatever the first job is doing.
    manage(env, "scale", "--once")

    assert [seen.job_id for seen in adapter.view(remote, work_dir="").jobs] == [job.job_id]
    assert ScalerEvent.objects.filter(pool=pool, kind="submit").count() == 1
    # The worker leaves after --max-idle 3 s and the array task completes.
    deadline = time.monotonic() + 60
    while adapter.view(remote, work_dir="").jobs[0].state != "done":
        assert time.monotonic() < deadline, _logs(tmp_path / "pool")
        time.sleep(0.5)
    remote.close()


def _logs(work_dir: Path) -> str:
    return " | ".join(f"{path.name}: {path.read_text()[-1500:]}"
                      for path in sorted((work_dir / "logs").glob("*")))
