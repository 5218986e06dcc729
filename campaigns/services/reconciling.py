"""Reconciling the ledger with Redis, so that no task stays stuck in `queued` or `running`.

Every queued or running task's rq job is read (a pipelined HMGET of a few fields, never a whole
job hash: campaigns.rq_layout) and the task follows what became of it:

- **started**, with a live entry in its queue's StartedJobRegistry: `running`, with the worker's
  name.
- **started**, its heartbeat deadline (rq: last beat + heartbeat interval + 60 s) passed by
  more than RECONCILE_GRACE_S: the worker is gone (killed -9, a pre-empted grid slot). The job
  is marked failed in Redis and the task counts a failed attempt, `WorkerLost`.
- **queued** again while the ledger says running (a worker stopped on SIGTERM gave it back):
  `queued`.
- **failed, finished, stopped, canceled** for more than RECONCILE_GRACE_S and still no result
  collected (rq failed it without an envelope, the reply was lost): a failed attempt,
  `JobFailedWithoutResult` (`WorkerLost` when rq's own cleanup failed it as abandoned). A job
  of an older delivery than the ledger's (a feeder died between the ledger and the enqueue)
  sends the task back to pending with no attempt counted.
- **gone**, or a hash with no status (Redis restarted empty, a feeder died between the ledger
  and the enqueue; a worker's heartbeat re-creates a vanished job's hash for a moment): back to
  `pending` with no attempt counted, `Task.lost` + 1; past RECONCILE_LOST_LIMIT, failed,
  `LostInRedis`.
- a job hash that cannot be read (an unknown status, data that is not rq's JSON): a failed
  attempt, `BadJob`, naming what is wrong. One bad job never stops reconcile.

A failed attempt goes back to `pending` (the feeder queues a fresh job) or, at the campaign's
`max_attempts`, `failed`. Every ledger write is conditional (`WHERE id = .. AND state IN
(queued, running) AND delivery = <the delivery read>`), so a result the collector wrote
meanwhile, or a cancel, is never undone; rollup minutes and campaign ends count only the rows
that matched.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone as dt_timezone
from typing import Dict, List, Optional, Tuple

from django.conf import settings
from django.db import transaction
from django.db.models import Case, F, Value, When
from django.utils import timezone
from redis import Redis

from campaigns import rq_layout
from campaigns.attempts import BadAttempt, attempt_delivery
from campaigns.models import Campaign, Task
from campaigns.pipeline_keys import rq_queue_name, worker_rq_queues
from campaigns.services.lifecycle import campaigns_finish
from campaigns.services.rollups import task_minutes_add

log = logging.getLogger(__name__)

CHECK_BATCH_SIZE = 1000
OUT = (Task.State.QUEUED, Task.State.RUNNING)
ABANDONED = "AbandonedJobError"  # in the exc_string rq gives a job its cleanup moved
JOB_FIELDS = ("status", "worker_name", "ended_at", "last_heartbeat", "started_at", "timeout")
MESSAGE_CHARS = 2000
TASK_FIELDS = ("pk", "job_id", "state", "delivery", "worker", "attempts", "lost", "queued_at",
               "campaign_id", "campaign__queue", "campaign__state", "campaign__max_attempts")


@dataclass
class ReconcileReport:
    lost: int = 0        # job gone from Redis: back to pending, no attempt counted
    lost_failed: int = 0  # gone more than RECONCILE_LOST_LIMIT times: failed (LostInRedis)
    abandoned: int = 0   # worker lost: back to pending, attempt counted
    ended: int = 0       # the job ended without a result (or was unreadable): retried
    failed: int = 0      # any of these on the last attempt: failed
    stale: int = 0       # an older delivery's job: back to pending, no attempt counted
    running: int = 0     # newly seen running
    requeued: int = 0    # running -> queued (the worker gave the job back)
    missing_checked: bool = False
    problems: List[str] = field(default_factory=list)  # one line per job that could not be read

    def line(self) -> str:
        parts = [f"{count} {what}" for count, what in (
            (self.lost, "lost with Redis (pending again)"),
            (self.lost_failed, "lost with Redis too often (failed)"),
            (self.abandoned, "lost with their worker (retried)"),
            (self.ended, "ended without a result (retried)"),
            (self.failed, "failed for good"),
            (self.stale, "had an old job (pending again)"),
            (self.running, "now running"), (self.requeued, "given back")) if count]
        return f"reconciled: {', '.join(parts) or 'nothing to change'}"

    @property
    def changed(self) -> bool:
        return bool(self.lost or self.lost_failed or self.abandoned or self.ended or self.failed
                    or self.stale or self.running or self.requeued)


@dataclass
class _Row:
    """One queued or running task as read, and what its job says."""

    pk: int
    job_id: str
    state: str
    delivery: int
    worker: str
    attempts: int
    lost: int
    queued_at: Optional[datetime]
    campaign_id: int
    queue: str
    campaign_state: str
    max_attempts: int

    @property
    def retry_state(self) -> str:
        """Where a task that is to run again goes: pending, or cancelled when its campaign was
        cancelled while it was out (nothing feeds a cancelled campaign)."""
        return (Task.State.CANCELLED if self.campaign_state == Campaign.State.CANCELLED
                else Task.State.PENDING)


@dataclass
class _Failure:
    row: _Row
    error_class: str
    message: str
    mark_lost: Optional[Tuple[str, List[str]]] = None  # (rq queue, started members)


@dataclass
class _Plan:
    running: Dict[int, List[Tuple[_Row, str]]] = field(default_factory=dict)  # by delivery
    requeue: List[_Row] = field(default_factory=list)
    gone: List[_Row] = field(default_factory=list)
    stale: List[_Row] = field(default_factory=list)
    failures: List[_Failure] = field(default_factory=list)
    ended: List[Tuple[_Row, Dict[str, Optional[str]]]] = field(default_factory=list)


def tasks_reconcile(*, connection: Redis, check_missing: bool = True,
                    grace_s: Optional[float] = None,
                    lost_limit: Optional[int] = None) -> ReconcileReport:
    """Bring queued/running tasks in line with Redis; see the module's docstring.

    Args:
        check_missing: act on jobs that are gone or ended without a result. The collector passes
            False while results wait in the list: their envelopes are collected first.
        grace_s: settings.RECONCILE_GRACE_S unless given.
        lost_limit: settings.RECONCILE_LOST_LIMIT unless given.
    """
    grace = timedelta(seconds=settings.RECONCILE_GRACE_S if grace_s is None else grace_s)
    limit = settings.RECONCILE_LOST_LIMIT if lost_limit is None else lost_limit
    report = ReconcileReport(missing_checked=check_missing)
    started = _started_entries(connection)
    after = 0
    while True:
        rows = [_Row(*values[:-1], max_attempts=values[-1]) for values in
                Task.objects.filter(state__in=OUT, pk__gt=after).order_by("pk")
                .values_list(*TASK_FIELDS)[:CHECK_BATCH_SIZE]]
        if not rows:
            break
        after = rows[-1].pk
        now = timezone.now()
        jobs = rq_layout.job_fields(connection, [row.job_id for row in rows], JOB_FIELDS)
        plan = _Plan()
        for row, job in zip(rows, jobs):
            _classify(row, job, started, now, grace, check_missing, plan)
        _ended_without_result(connection, plan, now, grace)
        _apply(connection, plan, now, limit, report)
    return report


def _started_entries(connection: Redis) -> Dict[str, Tuple[str, List[Tuple[str, float]]]]:
    """{job id: (rq queue, [(member, deadline)])} of the StartedJobRegistries of every RQ queue
    (all priorities) of the campaigns with queued or running tasks."""
    queues = set(Campaign.objects.filter(pk__in=Task.objects.filter(state__in=OUT)
                                         .values("campaign_id")).values_list("queue", flat=True))
    entries: Dict[str, Tuple[str, List[Tuple[str, float]]]] = {}
    for queue in sorted(queues):
        for rq_queue in worker_rq_queues(queue=queue):
            for job_id, members in rq_layout.started_entries(connection, rq_queue).items():
                entries[job_id] = (rq_queue, members)
    return entries


def _classify(row: _Row, job: Optional[Dict[str, Optional[str]]],
              started: Dict[str, Tuple[str, List[Tuple[str, float]]]], now: datetime,
              grace: timedelta, check_missing: bool, plan: _Plan) -> None:
    # A hash without a status is what a worker's heartbeat leaves of a job that vanished (rq
    # writes last_heartbeat, then deletes the key it made): gone, not bad.
    if job is None or job.get("status") is None:
        if check_missing:
            plan.gone.append(row)
        return
    status = job.get("status")
    if status == rq_layout.STARTED:
        queue, members = started.get(row.job_id, ("", []))
        if any(deadline >= now.timestamp() for _, deadline in members):
            worker = (job.get("worker_name") or "")[:200]
            if row.state != Task.State.RUNNING or row.worker != worker:
                plan.running.setdefault(row.delivery, []).append((row, worker))
            return
        deadline = _started_deadline(job, members)
        if deadline is None:
            # A worker sets the status a moment before the times: only a job that stays so
            # past the deadline it would have had since it was queued is taken for bad.
            deadline = (row.queued_at or now) + timedelta(
                seconds=_timeout(job) + rq_layout.HEARTBEAT_GRACE_S)
            if now > deadline + grace:
                plan.failures.append(_Failure(
                    row, "BadJob", f"job {rq_layout.job_key(row.job_id)} is started but has "
                    "no heartbeat, start time or registry entry"))
        elif now > deadline + grace:
            worker = (job.get("worker_name") or row.worker or "?")[:200]
            plan.failures.append(_Failure(
                row, "WorkerLost", f"worker {worker} stopped heartbeating (killed or pre-empted) "
                "while running the task",
                # With no registry entry, any of its RQ queues will do: nothing to take off.
                mark_lost=(queue or rq_queue_name(queue=row.queue, priority="normal"),
                           [member for member, _ in members])))
        return
    if status in rq_layout.WAITING:
        if row.state == Task.State.RUNNING:
            plan.requeue.append(row)
        return
    if status in rq_layout.ENDED:
        if check_missing:
            plan.ended.append((row, job))
        return
    plan.failures.append(_Failure(row, "BadJob", f"job {rq_layout.job_key(row.job_id)} has "
                                  f"status {str(status)[:40]!r}, not one rq writes "
                                  f"({', '.join(sorted(rq_layout.KNOWN_STATUSES))})"))


def _started_deadline(job: Dict[str, Optional[str]],
                      members: List[Tuple[str, float]]) -> Optional[datetime]:
    """When rq gives up on a started job: its registry deadline, else its last beat + its
    timeout + 60 s (rq's SimpleWorker.get_heartbeat_ttl)."""
    if members:
        return datetime.fromtimestamp(max(deadline for _, deadline in members),
                                      tz=dt_timezone.utc)
    beat = (rq_layout.parse_time(job.get("last_heartbeat"))
            or rq_layout.parse_time(job.get("started_at")))
    return (beat + timedelta(seconds=_timeout(job) + rq_layout.HEARTBEAT_GRACE_S)
            if beat else None)


def _timeout(job: Dict[str, Optional[str]]) -> int:
    try:
        return min(max(0, int(job.get("timeout") or 0)), 10**7)
    except ValueError:
        return 0


def _ended_without_result(connection: Redis, plan: _Plan, now: datetime,
                          grace: timedelta) -> None:
    """Ended jobs whose result never came: a failure of the delivery they belong to."""
    due: List[Tuple[_Row, str, str]] = []
    for row, job in plan.ended:
        status = job["status"]
        ended = rq_layout.parse_time(job.get("ended_at"))
        if ended is not None and now <= ended + grace:
            continue  # its result may still be on its way; no need to read more yet
        exc = ""
        if status != "finished":  # one more round trip, for a job that looks lost only
            when, exc = rq_layout.latest_failure(connection, row.job_id)
            ended = ended or when
        ended = (ended or rq_layout.parse_time(job.get("last_heartbeat"))
                 or rq_layout.parse_time(job.get("started_at")) or row.queued_at or now)
        # rq's own cleanup fails a job as abandoned only once its heartbeat deadline has passed:
        # its worker has been gone for longer than any grace already.
        if now > ended + grace or ABANDONED in exc:
            due.append((row, status, exc))
    attempts = rq_layout.job_attempts(connection, [row.job_id for row, _, _ in due])
    for (row, status, exc), attempt in zip(due, attempts):
        key = rq_layout.job_key(row.job_id)
        if isinstance(attempt, ValueError):
            plan.failures.append(_Failure(row, "BadJob", f"job {key}: {attempt}"))
            continue
        try:
            delivery = attempt_delivery(job_id=row.job_id, attempt=attempt)
        except BadAttempt as problem:
            plan.failures.append(_Failure(row, "BadJob", f"job {key}: {problem}"))
            continue
        if delivery != row.delivery:
            plan.stale.append(row)
        elif ABANDONED in exc:
            plan.failures.append(_Failure(row, "WorkerLost", "rq failed the job as abandoned "
                                          "(its worker stopped heartbeating) and no result came"))
        else:
            last = exc.strip().splitlines()[-1][:MESSAGE_CHARS] if exc.strip() else ""
            plan.failures.append(_Failure(
                row, "JobFailedWithoutResult",
                f"rq marked the job {status}" + (f" ({last})" if last else "")
                + f" and no result reached the portal within {grace.total_seconds():g} s"))


# --- writing -----------------------------------------------------------------------------------

def _apply(connection: Redis, plan: _Plan, now: datetime, limit: int,
           report: ReconcileReport) -> None:
    _mark_running(plan, now, report)
    for row in plan.requeue:
        report.requeued += Task.objects.filter(
            pk=row.pk, state=Task.State.RUNNING, delivery=row.delivery).update(
            state=Task.State.QUEUED, worker="", updated_at=now)
    for row in plan.stale:
        report.stale += _back_to_pending(row, now)
    for row in plan.gone:
        if row.lost + 1 > limit:
            plan.failures.append(_Failure(
                row, "LostInRedis", f"its job vanished from Redis {row.lost + 1} times while "
                f"out (a restart that lost everything?); the limit is {limit}"))
        else:
            report.lost += _back_to_pending(row, now, lost=True)
    # Redis before the ledger, so that the feeder, seeing the task pending, queues a fresh job:
    # a lost worker's job is marked failed (not in flight), a bad hash is deleted (the feeder
    # cannot read it either). Harmless if the ledger update then finds a result got there first.
    for failure in plan.failures:
        if failure.mark_lost is not None:
            queue, members = failure.mark_lost
            rq_layout.job_mark_lost(connection, job_id=failure.row.job_id, queue=queue,
                                    ended_at=now, started_members=members)
        elif failure.error_class == "BadJob":
            connection.delete(rq_layout.job_key(failure.row.job_id),
                              rq_layout.results_key(failure.row.job_id))
    forget = _fail_attempts(plan.failures, now, report)
    if forget:
        # Failed for good: nothing of the job is needed any more (rq would keep it 7 days).
        with connection.pipeline(transaction=False) as pipe:
            for job_id, queue in forget:
                for rq_queue in worker_rq_queues(queue=queue):
                    rq_layout.job_forget(pipe, job_id=job_id, queue=rq_queue)
            pipe.execute()


def _mark_running(plan: _Plan, now: datetime, report: ReconcileReport) -> None:
    for delivery, pairs in plan.running.items():
        for start in range(0, len(pairs), 500):
            part = pairs[start:start + 500]
            newly = {row.pk for row, _ in part if row.state != Task.State.RUNNING}
            changed = Task.objects.filter(
                pk__in=[row.pk for row, _ in part], state__in=OUT, delivery=delivery).update(
                state=Task.State.RUNNING, updated_at=now,
                worker=Case(*(When(pk=row.pk, then=Value(worker)) for row, worker in part),
                            default=F("worker")))
            report.running += min(changed, len(newly))


def _back_to_pending(row: _Row, now: datetime, *, lost: bool = False) -> int:
    extra = {"lost": F("lost") + 1} if lost else {}
    if row.retry_state == Task.State.CANCELLED:
        extra["finished_at"] = now
    return Task.objects.filter(pk=row.pk, state__in=OUT, delivery=row.delivery).update(
        state=row.retry_state, worker="", updated_at=now, **extra)


def _fail_attempts(failures: List[_Failure], now: datetime,
                   report: ReconcileReport) -> List[Tuple[str, str]]:
    """Count a failed attempt on each; return the job ids of the tasks failed for good."""
    if not failures:
        return []
    transitions, campaigns, forget = [], set(), []
    with transaction.atomic():
        for failure in failures:
            row = failure.row
            final = failure.error_class == "LostInRedis" or row.attempts + 1 >= row.max_attempts
            fields = dict(error_class=failure.error_class,
                          error_message=failure.message[:MESSAGE_CHARS], output_tail="",
                          worker="", updated_at=now)
            if failure.error_class == "LostInRedis":
                fields["lost"] = F("lost") + 1
            else:
                fields["attempts"] = F("attempts") + 1
            if final:
                fields.update(state=Task.State.FAILED, finished_at=now)
            elif row.retry_state == Task.State.CANCELLED:
                fields.update(state=Task.State.CANCELLED, finished_at=now)
            else:
                fields.update(state=Task.State.PENDING)
            if not Task.objects.filter(pk=row.pk, state__in=OUT,
                                       delivery=row.delivery).update(**fields):
                continue  # a result, a cancel or another reconcile got there first
            log.warning("reconcile: task %s: %s: %s; %s", row.job_id, failure.error_class,
                        failure.message, "failed" if final else "pending again")
            if failure.error_class == "LostInRedis":
                report.lost_failed += 1
            elif final:
                report.failed += 1
            elif failure.error_class == "WorkerLost":
                report.abandoned += 1
            else:
                report.ended += 1
            if final:
                transitions.append((row.campaign_id, now, Task.State.FAILED))
                campaigns.add(row.campaign_id)
                forget.append((row.job_id, row.queue))
        task_minutes_add(transitions=transitions)
        campaigns_finish(campaign_ids=campaigns)
    return forget
