"""What the collector reads from and removes of rq's own keys."""
from __future__ import annotations

from redis import Redis
from rq.job import Job
from rq.results import get_key as result_key

from campaigns import pipeline_keys as keys
from campaigns.models import Task


def worker_names(*, connection: Redis, job_ids: list[str]) -> dict[str, str | None]:
    """job id -> the worker name rq recorded on the job's hash ('' when no worker took it
    yet, None when the hash is gone), in one pipelined round trip. Read before anything of
    the batch deletes a hash."""
    if not job_ids:
        return {}
    with connection.pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            pipe.hget(Job.key_for(job_id), "worker_name")
        names = pipe.execute()
    return {job_id: (name.decode("utf-8", errors="replace") if isinstance(name, bytes) else name)
            for job_id, name in zip(job_ids, names)}


def jobs_forget(*, connection: Redis, tasks: list[Task]) -> None:
    """Delete what rq keeps of the jobs whose tasks are now finished: their hash, rq's copy of
    the result and their registry entries. Their result is in the database now; kept for
    rq's result_ttl they cost ~6 kB a task, which made Redis grow with throughput, not with the
    window (bench_pipeline.py memory). Tasks going back to pending keep theirs: the feeder
    replaces a stale job itself."""
    finished = [task for task in tasks if task.state in (Task.State.DONE, Task.State.FAILED)]
    if not finished:
        return
    with connection.pipeline(transaction=False) as pipe:
        for task in finished:
            queue = keys.campaign_rq_queue(campaign=task.campaign)
            pipe.delete(Job.key_for(task.job_id), result_key(task.job_id))
            pipe.zrem(f"rq:finished:{queue}", task.job_id)
            pipe.zrem(f"rq:failed:{queue}", task.job_id)
        pipe.execute()
