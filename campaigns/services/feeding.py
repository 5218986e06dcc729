"""Feeding: keep each worker queue's window of jobs in Redis topped up from the task ledger.

Redis holds at most a window of waiting jobs per worker queue (the three RQ queues "xtb:high",
"xtb:normal", "xtb:low" of queue "xtb" together), whatever the campaigns' sizes; the ledger is the
source of truth, so a Redis that restarts empty is simply fed again. Slots go to the pending
tasks of running campaigns by priority (high, normal, low), then oldest campaign first, then
oldest task first.

One feeder at a time per worker queue: a Redis lock (pipeline_keys.feed_lock_key), which
campaign_cancel takes too, so a cancel never races a feed that is putting its jobs back.
"""
from __future__ import annotations

import json
import logging
import zlib
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from django.conf import settings
from django.db import connections, transaction
from django.db.models import Case, F, IntegerField, TextField, Value, When
from django.db.models.functions import Cast, Concat
from django.utils import timezone
from redis import Redis
from redis.exceptions import LockError
from redis.lock import Lock
from rq import Queue
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry
from rq.results import get_key as result_key
from rq.serializers import JSONSerializer
from rq.utils import now as rq_now
from rq.worker_registration import WORKERS_BY_QUEUE_KEY

from campaigns.attempts import attempt_id_maker
from campaigns.errors import ApplicationError
from campaigns.models import Campaign, Record, Task
from campaigns.pipeline_keys import (PRIORITIES, RESULTS_KEY, campaign_rq_queue, campaign_spec_key,
                                     feed_lock_key, worker_rq_queues)
from campaigns.services.rollups import task_minutes_add
from campaigns.services.specs import campaign_spec_publish
from campaigns.stores import RecordStore, chunked, store_for
from campaigns.stores.sql import SqlRecordStore

log = logging.getLogger(__name__)

FEED_BATCH_SIZE = 5000
# Results travel through reply_to, so rq's own copy of a result is only for a person looking.
RESULT_TTL_S = 600
# A failed job stays for the collector and for a person to read its traceback.
FAILURE_TTL_S = 7 * 24 * 3600
# A feeder that dies leaves its lock for at most this long; a live one renews it every batch.
LOCK_TIMEOUT_S = 300
# Jobs in these states are in Redis for good reason: feeding such a task again would run it twice.
IN_FLIGHT = frozenset({"queued", "started", "scheduled", "deferred"})
WORKERS_PER_SLOT = 4


# HGET of many keys in one command: a pipeline of HGETs costs more to pack in Python than the
# rest of a job's enqueue.
_STATUSES_SCRIPT = """
local statuses = {}
for i, key in ipairs(KEYS) do
  statuses[i] = redis.call('HGET', key, 'status') or ''
end
return statuses
"""


# A batch's jobs in one atomic script, so that Redis is never left with half a batch:
# KEYS  queue key, rq:queues, failed registry key, then per stale job its hash and result key,
#       then per new job its hash key;
# ARGV  n (template fields), the n field/value pairs, s (stale jobs), the s stale job ids,
#       then per new job: job id, data, description.
# The template (every field rq writes but data and description) travels once per batch, not once
# per job: packing 20 fields x 5,000 jobs was most of a feed's time.
_ENQUEUE_SCRIPT = """
local n = tonumber(ARGV[1])
local template = {}
for i = 2, 1 + 2 * n do template[#template + 1] = ARGV[i] end
local at = 2 + 2 * n
local stale = tonumber(ARGV[at])
at = at + 1
for i = 1, stale do
  redis.call('DEL', KEYS[3 + 2 * i - 1], KEYS[3 + 2 * i])
  redis.call('ZREM', KEYS[3], ARGV[at])
  at = at + 1
end
local queued = 0
for k = 4 + 2 * stale, #KEYS do
  redis.call('HSET', KEYS[k], unpack(template))
  redis.call('HSET', KEYS[k], 'data', ARGV[at + 1], 'description', ARGV[at + 2])
  redis.call('RPUSH', KEYS[1], ARGV[at])
  at = at + 3
  queued = queued + 1
end
redis.call('SADD', KEYS[2], KEYS[1])
return queued
"""


@dataclass
class FeedReport:
    queued: int = 0  # jobs put in Redis
    already_in_redis: int = 0  # pending tasks whose job was still queued or running: marked only
    missing: int = 0  # tasks failed with RecordMissing
    specs_published: int = 0  # spec keys that were missing from Redis
    by_queue: Dict[str, int] = field(default_factory=dict)  # RQ queue -> jobs put there
    busy: List[str] = field(default_factory=list)  # worker queues another feeder held
    errors: List[str] = field(default_factory=list)  # campaigns that could not be fed, and why
    budget: Optional[int] = None  # at most this many jobs in this call (max_jobs)

    @property
    def spent(self) -> bool:
        """The call stopped at its budget: there may be more to feed at once."""
        return self.budget is not None and self.queued >= self.budget

    def line(self) -> str:
        """One line for a person: `queued 1,200 jobs (xtb:high 200, xtb:normal 1,000)`."""
        queues = ", ".join(f"{name} {count:,}" for name, count in sorted(self.by_queue.items()))
        parts = [f"queued {self.queued:,} jobs" + (f" ({queues})" if queues else "")]
        if self.already_in_redis:
            parts.append(f"{self.already_in_redis:,} were in Redis already")
        if self.missing:
            parts.append(f"{self.missing:,} tasks failed: record missing")
        if self.specs_published:
            parts.append(f"{self.specs_published:,} missing specs published")
        if self.busy:
            parts.append(f"busy (another feeder): {', '.join(self.busy)}")
        parts.extend(self.errors)
        return "; ".join(parts)


@dataclass
class _Batch:
    """Pending tasks of one campaign, split by what feeding does with them."""

    inputs: Dict[str, str]  # record id -> its input as JSON text
    missing: List[int] = field(default_factory=list)  # task ids
    in_flight: List[int] = field(default_factory=list)
    stale: List[str] = field(default_factory=list)  # job ids whose old, finished hash is in Redis
    # (task id, record id, job id, delivery): delivery is the number the job's attempt id names
    enqueue: List[Tuple[int, str, str, int]] = field(default_factory=list)

    @property
    def fed(self) -> List[int]:
        return self.in_flight + [task_id for task_id, _, _, _ in self.enqueue]


def queues_feed(*, connection: Redis, window: Optional[int] = None,
                queues: Optional[Sequence[str]] = None,
                max_jobs: Optional[int] = None) -> FeedReport:
    """Top up each worker queue of the running campaigns (or only `queues`) to its window.

    Args:
        window: jobs waiting per worker queue; None: settings.FEED_WINDOW, or sized from the
            live workers (feed_window).
        max_jobs: queue at most this many jobs in this call (the collector feeds in bounded
            steps between its batches, so a window of 40,000 never holds up collecting).
    """
    report = FeedReport(budget=max_jobs)
    running = Campaign.objects.filter(state=Campaign.State.RUNNING)
    if queues is not None:
        running = running.filter(queue__in=list(queues))
    for queue in sorted(set(running.values_list("queue", flat=True))):
        lock = connection.lock(feed_lock_key(queue=queue), timeout=LOCK_TIMEOUT_S, blocking=False)
        if not lock.acquire():
            log.info("feed %s: another feeder is at it; skipped", queue)
            report.busy.append(queue)
            continue
        try:
            _queue_feed(connection=connection, queue=queue, window=window, lock=lock,
                        report=report)
        finally:
            _release(lock)
    return report


def feed_window(*, connection: Redis, queue: str) -> int:
    """settings.FEED_WINDOW, else max(FEED_MIN_WINDOW, 4 x live workers listening on `queue`)."""
    if settings.FEED_WINDOW > 0:
        return settings.FEED_WINDOW
    return max(settings.FEED_MIN_WINDOW,
               WORKERS_PER_SLOT * live_workers_count(connection=connection, queue=queue))


def live_workers_count(*, connection: Redis, queue: str) -> int:
    """Workers registered on any RQ queue of `queue` whose key has not expired: a pre-empted
    worker stays in rq's sets until some worker cleans them, but its key dies with its TTL."""
    with connection.pipeline(transaction=False) as pipe:
        for name in worker_rq_queues(queue=queue):
            pipe.smembers(WORKERS_BY_QUEUE_KEY % name)
        keys = sorted(set().union(*pipe.execute()))
    if not keys:
        return 0
    with connection.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.exists(key)
        return sum(pipe.execute())


def queued_count(*, connection: Redis, queue: str) -> int:
    """Jobs waiting in the RQ queues of worker queue `queue` (not those running)."""
    with connection.pipeline(transaction=False) as pipe:
        for name in worker_rq_queues(queue=queue):
            pipe.llen(Queue(name, connection=connection).key)
        return sum(pipe.execute())


def _queue_feed(*, connection: Redis, queue: str, window: Optional[int], lock: Lock,
                report: FeedReport) -> None:
    size = window if window is not None else feed_window(connection=connection, queue=queue)
    waiting = queued_count(connection=connection, queue=queue)
    room = size - waiting
    if report.budget is not None:
        room = min(room, report.budget - report.queued)
    if room <= 0:
        return
    # Read under the lock: a campaign cancelled or paused meanwhile is not fed.
    for campaign in _running_by_priority(queue=queue):
        if room <= 0:
            break
        try:
            fed = _campaign_feed(campaign=campaign, connection=connection, room=room, lock=lock,
                                 report=report)
        except ApplicationError as exc:  # one campaign's broken store must not starve the rest
            log.error("campaign %s: not fed: %s", campaign.name, exc)
            report.errors.append(f"campaign {campaign.name}: not fed: {exc}")
            continue
        room -= fed
    for rq_queue in worker_rq_queues(queue=queue):
        if rq_queue in report.by_queue:
            log.info("fed %s: %s jobs (window %s, %s were waiting)", rq_queue,
                     f"{report.by_queue[rq_queue]:,}", f"{size:,}", f"{waiting:,}")


def _running_by_priority(*, queue: str) -> List[Campaign]:
    rank = Case(*(When(priority=name, then=Value(position))
                  for position, name in enumerate(PRIORITIES)),
                default=Value(len(PRIORITIES)), output_field=IntegerField())
    return list(Campaign.objects.filter(state=Campaign.State.RUNNING, queue=queue)
                .select_related("dataset").order_by(rank, "created_at", "pk"))


def _campaign_feed(*, campaign: Campaign, connection: Redis, room: int, lock: Lock,
                   report: FeedReport) -> int:
    """Put up to `room` of the campaign's pending tasks in Redis; return how many went there."""
    spec_key = _spec_ensure(campaign=campaign, connection=connection, report=report)
    store = store_for(campaign.dataset)
    rq_queue = Queue(campaign_rq_queue(campaign=campaign), connection=connection,
                     serializer=JSONSerializer)
    fed, after = 0, 0
    while fed < room:
        # Keyset on pk: each batch starts past the last, whatever became of that one's tasks.
        rows = list(Task.objects.filter(campaign=campaign, state=Task.State.PENDING, pk__gt=after)
                    .order_by("pk").values_list("pk", "record_id", "job_id", "delivery")
                    [:min(FEED_BATCH_SIZE, room - fed)])
        if not rows:
            break
        after = rows[-1][0]
        batch = _batch_sort(rows=rows, connection=connection, inputs=_inputs_json(
            store=store, ids=[row[1] for row in rows], projection=campaign.projection or None))
        _tasks_fail_missing(campaign=campaign, task_ids=batch.missing)
        # The ledger first: a result can come back before this function returns, and it must
        # find its task queued on the delivery its attempt id names. A feeder that dies after
        # this commit leaves queued tasks without a job, which reconcile puts back to pending.
        _tasks_mark_queued(batch=batch)
        _jobs_enqueue(campaign=campaign, queue=rq_queue, spec_key=spec_key, batch=batch)
        fed += len(batch.fed)
        report.queued += len(batch.enqueue)
        if batch.enqueue:
            by_queue = report.by_queue
            by_queue[rq_queue.name] = by_queue.get(rq_queue.name, 0) + len(batch.enqueue)
        report.already_in_redis += len(batch.in_flight)
        report.missing += len(batch.missing)
        lock.reacquire()  # a long feed (a large window) keeps its lock
    return fed


def _spec_ensure(*, campaign: Campaign, connection: Redis, report: FeedReport) -> str:
    """The campaign's spec key, published again if Redis lost it (a restart, a flush)."""
    key = campaign_spec_key(campaign=campaign)
    if not connection.exists(key):
        campaign_spec_publish(campaign=campaign, connection=connection)
        report.specs_published += 1
        log.info("campaign %s: spec %s was not in Redis; published", campaign.name, key)
    return key


def _inputs_json(*, store: RecordStore, ids: List[str],
                 projection: Optional[List[str]]) -> Dict[str, str]:
    """record id -> its input as JSON text (cut to the projection, as store.inputs cuts it).

    A SQL store with no projection hands over the stored text as it is, with no decode and
    encode per record (they were a third of a feed's time): SQLite keeps the text Django's
    JSONField wrote, PostgreSQL prints its jsonb. Ids that no longer exist are absent.
    """
    if not ids:
        return {}
    if projection or not isinstance(store, SqlRecordStore):
        return {record_id: json.dumps(data) for record_id, data in
                store.inputs(ids=ids, projection=projection).items()}
    records = (Record.objects.using(store.using).filter(dataset=store.dataset).order_by()
               .annotate(text=Cast("input", output_field=TextField())))
    size = connections[store.using].ops.bulk_batch_size(["record_id"], ids) or len(ids)
    return {record_id: text for part in chunked(ids, size)
            for record_id, text in records.filter(record_id__in=part)
            .values_list("record_id", "text")}


def _batch_sort(*, rows: List[Tuple[int, str, str, int]], connection: Redis,
                inputs: Dict[str, str]) -> _Batch:
    """Split pending rows into missing records, jobs still in Redis, and jobs to enqueue.

    A pending task can have a live job: a feeder stopped between enqueueing and marking, or a
    reconcile that raced a worker. Its job is left alone, so the same work is never queued twice.
    """
    batch = _Batch(inputs=inputs,
                   missing=[row[0] for row in rows if row[1] not in inputs])
    present = [row for row in rows if row[1] in inputs]
    statuses = _job_statuses(connection=connection, job_ids=[row[2] for row in present])
    for (pk, record_id, job_id, delivery), status in zip(present, statuses):
        if status in IN_FLIGHT:
            batch.in_flight.append(pk)
            continue
        if status is not None:
            batch.stale.append(job_id)
        batch.enqueue.append((pk, record_id, job_id, delivery + 1))
    return batch


def _job_statuses(*, connection: Redis, job_ids: List[str]) -> List[Optional[str]]:
    """The rq status of each job id (None: no such job), in one round trip and one command."""
    if not job_ids:
        return []
    statuses = connection.eval(_STATUSES_SCRIPT, len(job_ids),
                               *(Job.key_for(job_id) for job_id in job_ids))
    return [status.decode() if status else None for status in statuses]


def _jobs_enqueue(*, campaign: Campaign, queue: Queue, spec_key: str, batch: _Batch) -> None:
    """Write the batch's RQ jobs and push their ids, in one Lua script: all of them or none.

    What Queue.enqueue_many writes, at several times its speed: rq builds and serializes a Job
    object per job (with a runtime Protocol check of the serializer each time) and sends three
    commands per job. Here rq builds one prototype job of the campaign, sent once per batch;
    each job adds its own data and description, and its data is built from the stored input
    text (rq_job_data_text). test_feed checks that the hash equals the one enqueue_many writes
    for the same job.
    """
    if not batch.enqueue:
        return
    template = rq_job_hash(queue=queue, function=campaign.function, timeout=campaign.job_timeout)
    template.pop("data", None)
    template.pop("description", None)
    data = rq_job_data_text(function=campaign.function, spec_key=spec_key)
    failed = FailedJobRegistry(queue=queue)
    keys: List[str] = [queue.key, queue.redis_queues_keys, failed.key]
    args: List[object] = [len(template)]
    for name, value in template.items():
        args += [name, value]
    args.append(len(batch.stale))
    for job_id in batch.stale:
        # A retry of a failed or finished attempt: its old hash and result go first, so
        # nothing of the old attempt (exc_info, ended_at) is read as the new one's.
        keys += [Job.key_for(job_id), result_key(job_id)]
        args.append(job_id)
    name, attempt_id = campaign.name, attempt_id_maker()
    for _, record_id, job_id, delivery in batch.enqueue:
        keys.append(Job.key_for(job_id))
        # Set, so that nobody renders the whole input into a description.
        args += [job_id, data(record_id, batch.inputs[record_id],
                              attempt_id(job_id, delivery)),
                 f"{name} {record_id}"]
    queue.connection.register_script(_ENQUEUE_SCRIPT)(keys=keys, args=args)


def rq_job_hash(*, queue: Queue, function: str, timeout: int) -> Dict[str, object]:
    """The Redis hash of a queued job on `queue`, as rq writes it, less data and description."""
    job = queue.create_job(function, timeout=timeout, result_ttl=RESULT_TTL_S,
                           failure_ttl=FAILURE_TTL_S, job_id="template", status=JobStatus.QUEUED)
    job.enqueued_at = rq_now()
    return job.to_dict()


def rq_job_data(*, function: str, kwargs: dict) -> bytes:
    """rq's `data` field of a JSON job calling `function(**kwargs)` (Job.data, zlib'd by save)."""
    return zlib.compress(JSONSerializer.dumps((function, None, [], kwargs)))


def rq_job_data_text(*, function: str, spec_key: str):
    """A function (record id, input JSON text, attempt id) -> the job's `data` field: the bytes
    rq_job_data makes of kwargs {"record": {"id", "input"}, "spec_key", "reply_to", "attempt"},
    put together around the input's text instead of encoding the decoded input again."""
    # json.dumps's own separators, so the bytes are those of rq_job_data (test_feed checks).
    head = f'{json.dumps([function, None, []])[:-1]}, {{"record": {{"id": '
    tail = (f', "spec_key": {json.dumps(spec_key)}, "reply_to": {json.dumps(RESULTS_KEY)}, '
            '"attempt": ')
    compress, dumps = zlib.compress, json.dumps

    def data(record_id: str, input_text: str, attempt: str) -> bytes:
        return compress(f'{head}{dumps(record_id)}, "input": {input_text}}}{tail}'
                        f'{dumps(attempt)}}}]'.encode())
    return data


def _id_parts(ids: List[int]) -> Iterable[List[int]]:
    """`ids` in parts small enough for one statement (SQLite caps the parameters)."""
    # PostgreSQL has no cap and answers len(ids): 0 for no ids, which chunked cannot step by.
    size = connections["default"].ops.bulk_batch_size(["pk"], ids) or len(ids)
    return chunked(ids, size) if ids else iter(())


def _tasks_mark_queued(*, batch: _Batch) -> None:
    """Mark the batch's tasks queued; those to enqueue on their next delivery.

    Only pending ones, and only on the delivery read: a task cancelled or failed meanwhile keeps
    its state, and is dropped from `batch.enqueue` so that no job of it is queued.
    """
    now = timezone.now()
    with transaction.atomic():
        for part in _id_parts(batch.in_flight):  # their job is in Redis already, attempt and all
            Task.objects.filter(pk__in=part, state=Task.State.PENDING).update(
                state=Task.State.QUEUED, queued_at=now, updated_at=now)
        by_delivery: Dict[int, List[int]] = {}
        for pk, _, _, delivery in batch.enqueue:
            by_delivery.setdefault(delivery, []).append(pk)
        marked = 0
        for delivery, pks in by_delivery.items():
            for part in _id_parts(pks):
                marked += Task.objects.filter(
                    pk__in=part, state=Task.State.PENDING, delivery=delivery - 1).update(
                    state=Task.State.QUEUED, delivery=delivery, queued_at=now, updated_at=now)
        if marked != len(batch.enqueue):
            queued = set()
            for part in _id_parts([row[0] for row in batch.enqueue]):
                queued.update(Task.objects.filter(pk__in=part, state=Task.State.QUEUED)
                              .values_list("pk", "delivery"))
            batch.enqueue = [row for row in batch.enqueue if (row[0], row[3]) in queued]


def _tasks_fail_missing(*, campaign: Campaign, task_ids: List[int]) -> None:
    if not task_ids:
        return
    now = timezone.now()
    log.warning("campaign %s: %s records are no longer in dataset %s; their tasks failed",
                campaign.name, len(task_ids), campaign.dataset.name)
    failed = 0
    with transaction.atomic():
        for part in _id_parts(task_ids):
            failed += Task.objects.filter(pk__in=part, state=Task.State.PENDING).update(
                state=Task.State.FAILED, error_class="RecordMissing",
                error_message=Concat(Value("record "), F("record_id"),
                                     Value(f" is no longer in dataset {campaign.dataset.name}")),
                finished_at=now, updated_at=now)
        task_minutes_add(transitions=[(campaign.pk, now, Task.State.FAILED)] * failed)


def _release(lock: Lock) -> None:
    try:
        lock.release()
    except LockError:  # expired and maybe taken by another feeder: theirs now
        log.warning("feed lock %s had expired before it was released", lock.name)
