"""What the collector reads from and removes of rq's own keys."""
from __future__ import annotations

from redis import Redis
from rq.job import Job
from rq.results import get_key as result_key

from campaigns import pipeline_keys as keys
from campaigns.models import Task

# One script, not one command per job: a batch's 500 lookups cost one round trip and one
# command to pack (redis-py packing 500 small commands was a quarter of a batch's Redis time).
# A hash that is gone answers '' (a Lua array cannot hold nil); one that no worker took yet
# answers NOT_STARTED, a name no rq worker can have.
NOT_STARTED = "\x01not started"
_WORKER_NAMES = """
local out = {}
for i, key in ipairs(KEYS) do
  local name = redis.call('HGET', key, 'worker_name')
  if name and name ~= '' then
    out[i] = name
  elseif redis.call('EXISTS', key) == 1 then
    out[i] = ARGV[1]
  else
    out[i] = ''
  end
end
return out
"""
# KEYS: per job its hash, its result stream, its finished and failed registries; ARGV: job ids.
_FORGET = """
for i, job_id in ipairs(ARGV) do
  local at = (i - 1) * 4
  redis.call('DEL', KEYS[at + 1], KEYS[at + 2])
  redis.call('ZREM', KEYS[at + 3], job_id)
  redis.call('ZREM', KEYS[at + 4], job_id)
end
return #ARGV
"""


def worker_names(*, connection: Redis, job_ids: list[str]) -> dict[str, str]:
    """job id -> the worker name rq recorded on the job's hash: '' when the hash is gone (the
    attempt id alone decides), NOT_STARTED when no worker has taken the job yet (no honest
    result can exist then), in one round trip. Read before anything of the batch deletes a
    hash."""
    if not job_ids:
        return {}
    names = connection.eval(_WORKER_NAMES, len(job_ids), *[Job.key_for(j) for j in job_ids],
                            NOT_STARTED)
    return {job_id: name.decode("utf-8", errors="replace") if isinstance(name, bytes) else ""
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
    keys_and_ids: list[str] = []
    for task in finished:
        queue = keys.campaign_rq_queue(campaign=task.campaign)
        keys_and_ids += [Job.key_for(task.job_id), result_key(task.job_id),
                         f"rq:finished:{queue}", f"rq:failed:{queue}"]
    connection.eval(_FORGET, len(keys_and_ids), *keys_and_ids,
                    *[task.job_id for task in finished])
