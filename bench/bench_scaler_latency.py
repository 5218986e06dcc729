"""How long a backlog waits for its first result when the scaler starts workers on SLURM.

    .venv/bin/python bench/bench_scaler_latency.py [--rounds 3]

Starts its own redis-server, sshd and single-node SLURM (tests/servers.py,
tests/scaler/servers.py) and a throwaway SQLite portal database. Each round imports one water
molecule as a new xtb campaign (the real xtb runs), submits and feeds it (the backlog
appears: t = 0), then runs one scaler step at once, the way `manage.py scale` does, over SSH,
and takes the times at which:

    sbatch       the scaler step has submitted the array job (SSH, squeue, upload, sbatch)
    worker up    the worker registered in Redis (SLURM scheduling + python3 start-up)
    result sent  the worker pushed its reply (xtb ran, parsers, kept file)
    written      the collector wrote it into the record (collected as soon as it arrived)

In production add up to the scaler's --interval (30 s) before "sbatch" and up to the
collector's nap (2 s) before "written". Round 1 also builds the worker bundle and uploads it;
later rounds find it current. Between rounds the worker leaves (--max-idle 2) and its array
task completes, so every round starts with no live worker.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import servers  # noqa: E402
from tests.scaler import servers as scaler_servers  # noqa: E402

WATER_XYZ = ROOT / "tests" / "fixtures" / "xtb" / "water" / "water.xyz"
COLUMNS = ("sbatch", "worker up", "result sent", "written")


def django_setup(var_dir: Path, redis_url: str) -> None:
    os.environ.update({"DJANGO_SETTINGS_MODULE": "htportal.settings",
                       "HTPORTAL_VAR_DIR": str(var_dir), "REDIS_URL": redis_url,
                       "DATABASE_URL": f"sqlite:///{var_dir / 'bench.sqlite3'}"})
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)


def make_pool(sshd, slurm, redis_url: str, work_dir: Path, queue: str):
    from workers.models import WorkerPool

    return WorkerPool.objects.create(
        name="bench", kind=WorkerPool.Kind.SLURM, host=sshd.host, port=sshd.port,
        user=sshd.user, key_path=str(sshd.user_key), host_key=sshd.host_key_line,
        work_dir=str(work_dir), redis_url=redis_url, command_env=f"SLURM_CONF={slurm.conf}",
        queues=queue, max_idle=2, max_runtime=3600, max_tasks=100, max_workers=1,
        workers_per_job=1, max_waiting_jobs=1)


def new_campaign(number: int):
    from campaigns.models import Dataset
    from campaigns.services.definitions import campaign_definition_parse, campaign_import
    from campaigns.services.records import records_import

    dataset = Dataset.objects.create(name=f"bench-{number}")
    records_import(dataset=dataset, paths=[WATER_XYZ], on_error="abort")
    text = (ROOT / "examples" / "xtb_gfn2.yaml").read_text()
    text = text.replace("campaign: xtb_demo", f"campaign: bench_{number}")
    return campaign_import(definition=campaign_definition_parse(text=text, source="bench"),
                           dataset_name=dataset.name)


def wait(what: str, check, timeout: float = 120, step: float = 0.02) -> float:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"no {what} after {timeout}s")
        time.sleep(step)
    return time.monotonic()


def one_round(number: int, connection, loop, pool) -> dict:
    from rq import Worker

    from campaigns import pipeline_keys as keys
    from campaigns.models import Task
    from campaigns.services.collecting import results_collect
    from campaigns.services.feeding import queues_feed
    from campaigns.services.submission import campaign_submit

    campaign = new_campaign(number)
    start = time.monotonic()
    campaign_submit(campaign=campaign)
    queues_feed(connection=connection)
    loop.step()
    times = {"sbatch": time.monotonic()}
    if not pool.events.filter(kind="submit").count() == number:
        raise RuntimeError(f"round {number}: the scaler submitted nothing: "
                           f"{pool.events.first().message}")
    times["worker up"] = wait("worker", lambda: Worker.all(connection=connection))
    times["result sent"] = wait("reply", lambda: connection.llen(keys.RESULTS_KEY))
    results_collect(connection=connection)
    times["written"] = time.monotonic()
    task = Task.objects.get(campaign=campaign)
    if task.state != "done":
        raise RuntimeError(f"round {number}: task {task.state}: {task.error_message}")
    return {name: value - start for name, value in times.items()}


def settle(connection, adapter, remote) -> None:
    """Until the worker has left and its array task has completed."""
    from rq import Worker

    wait("worker exit", lambda: not Worker.all(connection=connection), step=0.2)
    wait("job end", lambda: all(job.state in ("done", "failed") for job in
                                adapter.view(remote, work_dir="").jobs), step=0.2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    redis = servers.start_redis()
    sshd = scaler_servers.start_sshd()
    slurm = scaler_servers.start_slurm()
    tmp = Path(tempfile.mkdtemp(prefix="htportal-bench-scaler-"))
    try:
        django_setup(tmp / "var", redis.url)
        from redis import Redis

        from workers.scaler.loop import ScaleLoop
        from workers.scaler.slurm import SlurmAdapter

        connection = Redis.from_url(redis.url)
        pool = make_pool(sshd, slurm, redis.url, tmp / "pool", "xtb")
        loop = ScaleLoop(connection=connection, name="bench")
        adapter, remote = SlurmAdapter(job_name="htportal-bench", env=slurm.env), sshd.remote()
        rows = []
        for number in range(1, options.rounds + 1):
            rows.append(one_round(number, connection, loop, pool))
            settle(connection, adapter, remote)
        loop.run(once=True)  # closes its connections
        remote.close()
        print_table(rows)
    finally:
        slurm.stop()
        sshd.stop()
        redis.stop()
    return 0


def print_table(rows: list) -> None:
    print(f"seconds after the backlog appears ({len(rows)} rounds, 1 water molecule each, "
          f"xtb GFN2 grad, local SLURM over SSH)")
    print(f"{'round':>7}" + "".join(f"{name:>13}" for name in COLUMNS))
    for number, row in enumerate(rows, start=1):
        print(f"{number:>7}" + "".join(f"{row[name]:>13.2f}" for name in COLUMNS))
    if len(rows) > 1:
        print(f"{'median':>7}" + "".join(
            f"{statistics.median(row[name] for row in rows):>13.2f}" for name in COLUMNS))


if __name__ == "__main__":
    sys.exit(main())
