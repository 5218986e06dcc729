"""The ledger's side of a batch: which delivery an outcome may change, and conditional updates
that never apply one twice.

An outcome belongs to one delivery of its task (the attempt id names it). It is applied only
to a ledger row still on that delivery, and only from these states:
- a success: queued or running (an attempt counted), or pending or failed (already counted,
  by a failure or a lost worker of that same delivery: a late real result beats them);
- a failure or a worker fault: queued or running.
Done and cancelled tasks take nothing. Each row is updated `WHERE id = ... AND delivery = ...
AND state = ... AND attempts = ... AND worker_faults = ...` (the row as read), so a replayed
batch, a duplicate or a second collector racing on the same batch changes nothing twice; rows
that changed since they were read are read again (locked: SELECT ... FOR UPDATE on
PostgreSQL; SQLite has one writer) and decided again. The rollup and the finished campaigns
count only rows whose update matched.
"""
from __future__ import annotations

import logging
from datetime import datetime

from django.utils import timezone

from campaigns.bulk import rows_update_if
from campaigns.collector.outcomes import Outcome
from campaigns.models import Task

log = logging.getLogger(__name__)

WORKER_FAULT_LIMIT = 10
# Failures that another attempt would repeat exactly: the record or the arg set cannot make a
# valid input, or the worker refused the job. They fail at once instead of costing retries.
UNMENDABLE = frozenset({"InputError", "JobRefused"})
SUCCESS_FROM = (Task.State.PENDING, Task.State.QUEUED, Task.State.RUNNING, Task.State.FAILED)
FAILURE_FROM = (Task.State.QUEUED, Task.State.RUNNING)
COUNTED_FROM = (Task.State.QUEUED, Task.State.RUNNING)  # an attempt of these is not counted yet
LEDGER_FIELDS = ["state", "attempts", "worker_faults", "error_class", "error_message",
                 "output_tail", "worker", "host", "wall_s", "cpu_s", "finished_at",
                 "updated_at"]
ROUNDS = 2


def applicable(outcome: Outcome, task: Task, delivery: int) -> bool:
    """Whether the outcome of `delivery` may change the task as it is now."""
    if task.delivery != delivery:
        return False
    return task.state in (SUCCESS_FROM if outcome.success else FAILURE_FROM)


def transition(outcome: Outcome, task: Task, now: datetime) -> Task:
    """A copy of the task with the outcome applied (the caller checked `applicable`)."""
    new = Task.__new__(Task)  # a shallow copy: copy.copy of a model instance cost 10x more
    new.__dict__.update(task.__dict__)
    new.worker = outcome.worker or task.worker
    new.host = outcome.host or task.host
    new.wall_s, new.cpu_s, new.updated_at = outcome.wall_s, outcome.cpu_s, now
    if outcome.success:
        new.attempts += task.state in COUNTED_FROM
        new.state, new.finished_at = Task.State.DONE, outcome.finished_at
        return new
    new.error_class, new.error_message, new.output_tail = outcome.error
    if outcome.fault:
        new.worker_faults += 1
        if new.worker_faults >= WORKER_FAULT_LIMIT:
            new.state, new.finished_at = Task.State.FAILED, outcome.finished_at
            new.error_class = "WorkerFault"
            new.error_message = (f"{new.worker_faults} results said the node's environment is "
                                 f"broken; the last: {outcome.error[0]}: {outcome.error[1]}")
        else:
            new.state = Task.State.PENDING
        return new
    new.attempts += 1
    if (outcome.final or outcome.error[0] in UNMENDABLE
            or new.attempts >= task.campaign.max_attempts):
        new.state, new.finished_at = Task.State.FAILED, outcome.finished_at
    else:
        new.state = Task.State.PENDING
    return new


def ledger_apply(outcomes: list[Outcome]) -> list[tuple[Outcome, Task]]:
    """Apply each outcome its delivery still allows; return (outcome, the task as written) of
    those whose conditional update matched. Call inside the batch's transaction."""
    now = timezone.now()
    applied: list[tuple[Outcome, Task]] = []
    todo = list(outcomes)
    for round_ in range(ROUNDS):
        if round_:  # rows changed since they were read: read them again, locked, and decide
            fresh = _locked({o.task.pk for o in todo})
            todo = [o for o in todo if o.task.pk in fresh]
            for outcome in todo:
                fresh[outcome.task.pk].campaign = outcome.task.campaign
                outcome.task = fresh[outcome.task.pk]
        todo = [o for o in todo if applicable(o, o.task, o.delivery)]
        if not todo:
            break
        written = [transition(o, o.task, now) for o in todo]
        matched = rows_update_if(objects=written, fields=LEDGER_FIELDS, expected=[
            {"delivery": o.delivery, "state": o.task.state, "attempts": o.task.attempts,
             "worker_faults": o.task.worker_faults} for o in todo])
        applied += [(o, new) for o, new, hit in zip(todo, written, matched) if hit]
        todo = [o for o, hit in zip(todo, matched) if not hit]
        if not todo:
            break
    for outcome in todo:
        log.warning("collector: task %s changed under the batch twice; its result of delivery "
                    "%d is left out", outcome.task.job_id, outcome.delivery)
    return applied


def _locked(pks: set[int]) -> dict[int, Task]:
    return {task.pk: task for task in Task.objects.select_for_update().filter(pk__in=pks)
            .order_by("pk")}
