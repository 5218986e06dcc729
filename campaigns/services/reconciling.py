"""Reconciling the ledger with Redis, so that no task stays stuck in `queued` or `running`.

- A task whose job is no longer in Redis (Redis restarted empty, or a feeder died between the
  ledger and the enqueue) goes back to `pending`, with no attempt counted: it was never run.
- A job whose worker stopped heartbeating (killed -9, a pre-empted grid slot) is moved by rq's
  StartedJobRegistry cleanup to the FailedJobRegistry as abandoned; its task goes back to
  `pending` with the attempt counted and error class `WorkerLost` (failed at max_attempts).
- A task seen in a StartedJobRegistry is marked `running` with the worker's name; a `running`
  task whose job was given back to its queue (the worker stopped on SIGTERM) is `queued` again.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone
from redis import Redis
from rq.job import Job
from rq.registry import FailedJobRegistry, StartedJobRegistry
from rq.serializers import JSONSerializer

from campaigns.models import Campaign, Task
from campaigns.pipeline_keys import campaign_rq_queue
from campaigns.services.lifecycle import campaigns_finish
from campaigns.services.rollups import task_minutes_add, transitions_of
from campaigns.stores import chunked

log = logging.getLogger(__name__)

CHECK_BATCH_SIZE = 1000
OUT = (Task.State.QUEUED, Task.State.RUNNING)
ABANDONED = "AbandonedJobError"  # in the exc_info rq gives a job its cleanup moved


@dataclass
class ReconcileReport:
    lost: int = 0        # job gone from Redis: back to pending, no attempt counted
    abandoned: int = 0   # worker lost: back to pending, attempt counted
    failed: int = 0      # worker lost on the last attempt: failed
    running: int = 0     # newly seen running
    requeued: int = 0    # running -> queued (the worker gave the job back)
    missing_checked: bool = False

    def line(self) -> str:
        parts = [f"{count} {what}" for count, what in (
            (self.lost, "lost with Redis (pending again)"),
            (self.abandoned, "lost with their worker (retried)"),
            (self.failed, "lost with their worker (failed)"),
            (self.running, "now running"), (self.requeued, "given back")) if count]
        return f"reconciled: {', '.join(parts) or 'nothing to change'}"

    @property
    def changed(self) -> bool:
        return bool(self.lost or self.abandoned or self.failed or self.running or self.requeued)


def tasks_reconcile(*, connection: Redis, check_missing: bool = True) -> ReconcileReport:
    """Bring queued/running tasks in line with Redis; see the module's docstring.

    Args:
        check_missing: look for jobs gone from Redis. The collector passes False while results
            wait in the list: a finished job whose result is still there but whose rq hash has
            expired would otherwise be run again (harmless, as it is written once, but wasted).
    """
    report = ReconcileReport(missing_checked=check_missing)
    queues = _queues_in_use()
    _abandoned_to_pending(connection, queues, report)
    if check_missing:
        _missing_to_pending(connection, report)
    _running_from_registries(connection, queues, report)
    return report


def _queues_in_use() -> list[str]:
    campaigns = Campaign.objects.filter(pk__in=Task.objects.filter(state__in=OUT)
                                        .values("campaign_id"))
    return sorted({campaign_rq_queue(campaign=campaign) for campaign in campaigns})


def _abandoned_to_pending(connection: Redis, queues: list[str], report: ReconcileReport) -> None:
    for queue in queues:
        StartedJobRegistry(name=queue, connection=connection, serializer=JSONSerializer).cleanup()
        # rq's own worker maintenance may have moved some earlier: read the failed registry.
        failed = FailedJobRegistry(name=queue, connection=connection, serializer=JSONSerializer)
        ids = failed.get_job_ids(cleanup=False)
        for part in chunked(ids, CHECK_BATCH_SIZE):
            tasks = list(Task.objects.select_related("campaign")
                         .filter(job_id__in=part, state__in=OUT))
            jobs = {job.id: job for job in Job.fetch_many([t.job_id for t in tasks], connection,
                                                          serializer=JSONSerializer) if job}
            lost = [t for t in tasks if t.job_id in jobs and _abandoned(jobs[t.job_id])]
            if lost:
                _worker_lost(lost, jobs, report)
                for task in lost:
                    failed.remove(jobs[task.job_id], delete_job=True)


def _abandoned(job: Job) -> bool:
    result = job.latest_result()
    return result is not None and ABANDONED in (result.exc_string or "")


def _worker_lost(tasks: list[Task], jobs: dict[str, Job], report: ReconcileReport) -> None:
    now = timezone.now()
    for task in tasks:
        worker = jobs[task.job_id].worker_name or task.worker or "?"
        task.attempts += 1
        task.error_class = "WorkerLost"
        task.error_message = (f"worker {worker} stopped heartbeating (killed or pre-empted) "
                              "while running the task")
        task.output_tail, task.worker, task.updated_at = "", "", now
        if task.attempts >= task.campaign.max_attempts:
            task.state, task.finished_at = Task.State.FAILED, now
            report.failed += 1
        else:
            task.state = Task.State.PENDING
            report.abandoned += 1
        log.warning("reconcile: task %s (record %s): %s; %s", task.job_id, task.record_id,
                    task.error_message, task.state)
    with transaction.atomic():
        Task.objects.bulk_update(tasks, ["state", "attempts", "error_class", "error_message",
                                         "output_tail", "worker", "finished_at", "updated_at"])
        task_minutes_add(transitions=transitions_of(tasks))
        campaigns_finish(campaign_ids={task.campaign_id for task in tasks})


def _missing_to_pending(connection: Redis, report: ReconcileReport) -> None:
    """Tasks out in Redis whose rq job hash is gone: pending again (checked in pipelined
    batches of EXISTS, walking the ledger by primary key)."""
    after = 0
    while True:
        batch = list(Task.objects.filter(state__in=OUT, pk__gt=after).order_by("pk")
                     .values_list("pk", "job_id")[:CHECK_BATCH_SIZE])
        if not batch:
            return
        after = batch[-1][0]
        with connection.pipeline(transaction=False) as pipe:
            for _, job_id in batch:
                pipe.exists(Job.key_for(job_id))
            exists = pipe.execute()
        gone = [pk for (pk, _), there in zip(batch, exists) if not there]
        if gone:
            # The state filter again: a result collected meanwhile keeps its task done.
            report.lost += Task.objects.filter(pk__in=gone, state__in=OUT).update(
                state=Task.State.PENDING, worker="", updated_at=timezone.now())


def _running_from_registries(connection: Redis, queues: list[str],
                             report: ReconcileReport) -> None:
    started: dict[str, str] = {}
    for queue in queues:
        registry = StartedJobRegistry(name=queue, connection=connection, serializer=JSONSerializer)
        ids = registry.get_job_ids(cleanup=False)
        for job_id, job in zip(ids, Job.fetch_many(ids, connection, serializer=JSONSerializer)):
            started[job_id] = (job.worker_name if job else "") or ""
    now = timezone.now()
    changed = []
    for part in chunked(sorted(started), CHECK_BATCH_SIZE):
        # Only queued ones: a pending task's old execution may linger a moment after its
        # failed result was collected, and marking that running would leave it stuck.
        for task in Task.objects.filter(job_id__in=part, state__in=OUT):
            if task.state != Task.State.RUNNING or task.worker != started[task.job_id]:
                report.running += task.state != Task.State.RUNNING
                task.state, task.worker, task.updated_at = (Task.State.RUNNING,
                                                            started[task.job_id], now)
                changed.append(task)
    # Running in the ledger, no longer started in Redis, its job queued again: given back.
    running = Task.objects.filter(state=Task.State.RUNNING).only("pk", "job_id")
    idle = [task for task in running if task.job_id not in started]
    if idle:
        with connection.pipeline(transaction=False) as pipe:
            for task in idle:
                pipe.hget(Job.key_for(task.job_id), "status")
            statuses = pipe.execute()
        for task, status in zip(idle, statuses):
            if status in (b"queued", "queued"):
                task.state, task.worker, task.updated_at = Task.State.QUEUED, "", now
                changed.append(task)
                report.requeued += 1
    if changed:
        Task.objects.bulk_update(changed, ["state", "worker", "updated_at"], batch_size=500)
