"""What the portal reads of rq's own keys, in one place: the names of a job's hash and of the
registries, and the few fields of a job hash that reconcile needs.

Everything here depends on rq's key layout (rq 2.x); tests/pipeline/test_rq_layout.py compares
it with rq's own Job.key_for, registry key names and the fields Job.to_dict writes, so a new rq
release that moves a key fails that test instead of silently leaving tasks stuck.

Nothing here builds a Job object: a job hash is untrusted input (a worker writes to it, a
person may edit it), and rq's Job.fetch parses every field (created_at, data, ...), so one
corrupted field raised out of whatever read it. Readers here return raw values, and the caller
decides what a bad one means for that one task.
"""
from __future__ import annotations

import base64
import json
import zlib
from datetime import datetime, timezone as dt_timezone
from typing import Dict, List, Optional, Sequence, Tuple

from redis import Redis
from redis.exceptions import ResponseError

JOB_PREFIX = "rq:job:"
RESULTS_PREFIX = "rq:results:"
EXECUTIONS_PREFIX = "rq:executions:"
EXECUTION_PREFIX = "rq:execution:"
STARTED_PREFIX = "rq:wip:"
FAILED_PREFIX = "rq:failed:"
FINISHED_PREFIX = "rq:finished:"
# rq's job timestamps (rq.utils.utcformat)
TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
# rq's statuses (rq.job.JobStatus) as they are written to a job hash's `status` field.
WAITING = frozenset({"created", "queued", "scheduled", "deferred"})
STARTED = "started"
ENDED = frozenset({"finished", "failed", "stopped", "canceled"})
KNOWN_STATUSES = WAITING | ENDED | {STARTED}
# rq adds this to a started job's timeout for its heartbeat deadline
# (SimpleWorker.get_heartbeat_ttl).
HEARTBEAT_GRACE_S = 60
# A job's `data` is its function and arguments, input included: read only to learn its attempt,
# and never more than this decompressed.
MAX_DATA_BYTES = 64 * 1024 * 1024
EXC_CHARS = 4000


def job_key(job_id: str) -> str:
    """The hash of one job: "rq:job:<id>" (rq's Job.key_for)."""
    return f"{JOB_PREFIX}{job_id}"


def results_key(job_id: str) -> str:
    """rq's stream of a job's results (rq.results.get_key)."""
    return f"{RESULTS_PREFIX}{job_id}"


def executions_key(job_id: str) -> str:
    """The sorted set of a job's executions (rq.executions.ExecutionRegistry)."""
    return f"{EXECUTIONS_PREFIX}{job_id}"


def execution_key(job_id: str, execution_id: str) -> str:
    """The hash of one execution (rq.executions.Execution.key)."""
    return f"{EXECUTION_PREFIX}{job_id}:{execution_id}"


def started_registry_key(queue: str) -> str:
    """The StartedJobRegistry of an RQ queue: members "<job id>:<execution id>", scored by the
    execution's heartbeat deadline (a Unix time)."""
    return f"{STARTED_PREFIX}{queue}"


def failed_registry_key(queue: str) -> str:
    return f"{FAILED_PREFIX}{queue}"


def finished_registry_key(queue: str) -> str:
    return f"{FINISHED_PREFIX}{queue}"


def started_member_job_id(member: str) -> str:
    """The job id of a StartedJobRegistry member "<job id>:<execution id>"."""
    return member.rsplit(":", 1)[0] if ":" in member else member


def started_entries(connection: Redis, queue: str) -> Dict[str, List[Tuple[str, float]]]:
    """{job id: [(member, deadline), ...]} of the queue's StartedJobRegistry."""
    entries: Dict[str, List[Tuple[str, float]]] = {}
    for member, score in connection.zrange(started_registry_key(queue), 0, -1, withscores=True):
        member = _text(member)
        entries.setdefault(started_member_job_id(member), []).append((member, float(score)))
    return entries


def job_fields(connection: Redis, job_ids: Sequence[str],
               fields: Sequence[str]) -> List[Optional[Dict[str, Optional[str]]]]:
    """For each job id, {field: text or None} of the asked fields, or None when the job hash does
    not exist; one pipelined HMGET (plus EXISTS) per job, in one round trip.

    A field that is not UTF-8 comes back as its repr, so a caller reading it as a status or a
    time sees a value it does not know rather than an exception.
    """
    if not job_ids:
        return []
    with connection.pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            pipe.exists(job_key(job_id))
            pipe.hmget(job_key(job_id), list(fields))
        replies = pipe.execute()
    rows: List[Optional[Dict[str, Optional[str]]]] = []
    for exists, values in zip(replies[0::2], replies[1::2]):
        rows.append({name: _text(value) for name, value in zip(fields, values)}
                    if exists else None)
    return rows


def job_attempts(connection: Redis, job_ids: Sequence[str]) -> List[object]:
    """For each job, the `attempt` of its kwargs (campaigns.attempts), None when its hash or its
    data is gone, or a ValueError saying why the data cannot be read."""
    if not job_ids:
        return []
    with connection.pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            pipe.hget(job_key(job_id), "data")
        blobs = pipe.execute()
    return [None if blob is None else _attempt_of(blob) for blob in blobs]


def _attempt_of(blob: bytes) -> object:
    """rq's `data` is zlib(JSON [function, instance, args, kwargs]) for the JSON serializer."""
    try:
        inflater = zlib.decompressobj()
        data = inflater.decompress(blob, MAX_DATA_BYTES)
        if inflater.unconsumed_tail:
            return ValueError(f"its data is over {MAX_DATA_BYTES:,} bytes")
        call = json.loads(data)
    except (zlib.error, ValueError) as exc:
        return ValueError(f"its data is not rq's zlib'd JSON ({exc})")
    if not (isinstance(call, list) and len(call) == 4 and isinstance(call[3], dict)):
        return ValueError("its data is not [function, instance, args, kwargs]")
    return call[3].get("attempt")


def latest_failure(connection: Redis, job_id: str) -> Tuple[Optional[datetime], str]:
    """(when, exception text) of the job's latest result in rq's results stream; (None, "")
    when there is none or it cannot be read."""
    try:
        entries = connection.xrevrange(results_key(job_id), "+", "-", count=1)
    except ResponseError:  # a key of another type (WRONGTYPE): nothing to learn from it
        return None, ""
    if not entries:
        return None, ""
    entry_id, payload = entries[0]
    when = None
    try:
        when = datetime.fromtimestamp(int(_text(entry_id).split("-")[0]) / 1000,
                                      tz=dt_timezone.utc)
    except (ValueError, OverflowError, OSError):
        pass
    raw = payload.get(b"exc_string") or payload.get("exc_string")
    text = ""
    if raw:
        try:
            text = zlib.decompress(base64.b64decode(raw), 0)[:EXC_CHARS * 4].decode(
                "utf-8", "replace")
        except (zlib.error, ValueError):
            text = ""
    return when, text[-EXC_CHARS:]


def parse_time(value: Optional[str]) -> Optional[datetime]:
    """An rq timestamp as an aware UTC datetime; None when empty or malformed."""
    if not value:
        return None
    try:
        return datetime.strptime(value, TIMESTAMP_FORMAT).replace(tzinfo=dt_timezone.utc)
    except ValueError:
        pass
    try:  # rq also reads ISO times without microseconds
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=dt_timezone.utc)


def job_forget(pipe, *, job_id: str, queue: str, started_members: Sequence[str] = ()) -> None:
    """Queue on `pipe` the deletion of what rq keeps of one job: its hash, results, executions,
    and its entries in the queue's registries."""
    pipe.delete(job_key(job_id), results_key(job_id), executions_key(job_id))
    pipe.zrem(failed_registry_key(queue), job_id)
    pipe.zrem(finished_registry_key(queue), job_id)
    if started_members:
        pipe.zrem(started_registry_key(queue), *started_members)
        pipe.delete(*(execution_key(job_id, member.rsplit(":", 1)[-1])
                      for member in started_members))


# Marks a started job failed, only while it is still started (a worker that came back and
# finished it meanwhile keeps its status), and takes its expired entries off the registry.
_MARK_LOST = """
if redis.call('HGET', KEYS[1], 'status') == 'started' then
  redis.call('HSET', KEYS[1], 'status', 'failed', 'ended_at', ARGV[1])
end
for i = 2, #ARGV do
  redis.call('ZREM', KEYS[2], ARGV[i])
end
return 1
"""


def job_mark_lost(connection: Redis, *, job_id: str, queue: str, ended_at: datetime,
                  started_members: Sequence[str]) -> None:
    """A started job whose worker is gone: status `failed` (so that the feeder treats it as a
    finished attempt and queues the next one afresh) and its registry entries removed."""
    connection.eval(_MARK_LOST, 2, job_key(job_id), started_registry_key(queue),
                    ended_at.strftime(TIMESTAMP_FORMAT), *started_members)


def _text(value) -> Optional[str]:
    if value is None or isinstance(value, str):
        return value
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return repr(value)
