"""A campaign's life: launch (submit + feed), pause, resume, cancel, and its end.

    draft ──launch──► running ──pause──► paused ──resume──► running
                         │  └───────cancel───────┴──► cancelled
                         └── every task finished ──► done (something succeeded) | failed

Every state change is one conditional UPDATE (`WHERE state IN (the allowed states)`) followed
by a re-read, never a save of a state held in memory: the collector ends campaigns while people
launch, pause and cancel them.

Pausing only stops the feeding: jobs already in Redis stay and run. Cancelling takes the
campaign's waiting jobs out of Redis and cancels all its unfinished tasks; jobs that a worker
has started finish, and the collector does not write their results (docs/pipeline.md).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional, Sequence

from django.db import transaction
from django.db.models import Case, Exists, F, OuterRef, Value, When
from django.utils import timezone
from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq import Queue

from campaigns.errors import ApplicationError
from campaigns.models import Campaign, Task
from campaigns import rq_layout
from campaigns.pipeline_keys import (campaign_job_prefix, campaign_rq_queue, feed_lock_key,
                                     worker_rq_queues)
from campaigns.progress import Progress
from campaigns.redis_connection import redis_connection
from campaigns.services.feeding import LOCK_TIMEOUT_S, queues_feed
from campaigns.services.specs import campaign_spec_publish
from campaigns.services.submission import SubmitReport, campaign_submit

log = logging.getLogger(__name__)

# How long a cancel waits for a feeder to finish its batch on the same queue.
CANCEL_LOCK_WAIT_S = 60
REDIS_DOWN = (RedisConnectionError, RedisTimeoutError)
UNFINISHED = (Task.State.PENDING, Task.State.QUEUED, Task.State.RUNNING)
ACTIVE = (Campaign.State.RUNNING, Campaign.State.PAUSED)


@dataclass
class CancelReport:
    removed_jobs: int  # waiting jobs taken out of Redis
    cancelled_tasks: int

    def line(self, campaign: Campaign) -> str:
        return (f"{campaign.name}: cancelled {self.cancelled_tasks:,} tasks, removed "
                f"{self.removed_jobs:,} waiting jobs from Redis")


def campaign_launch(*, campaign: Campaign, limit: Optional[int] = None, dry_run: bool = False,
                    progress: Optional[Progress] = None,
                    connection: Optional[Redis] = None) -> SubmitReport:
    """campaign_submit, then publish the spec and feed the campaign's queue once, so that work
    starts at once rather than at the feeder's next round."""
    report = campaign_submit(campaign=campaign, limit=limit, dry_run=dry_run, progress=progress)
    if dry_run or campaign.state != Campaign.State.RUNNING:
        return report
    report.queued = _feed_now(campaign=campaign, connection=connection, publish=True)
    return report


def campaign_pause(*, campaign: Campaign) -> None:
    """Stop feeding the campaign; its jobs already in Redis stay and run."""
    _state_change(campaign=campaign, allowed=(Campaign.State.RUNNING,),
                  to=Campaign.State.PAUSED, verb="paused")
    log.info("campaign %s: paused", campaign.name)


def campaign_resume(*, campaign: Campaign, connection: Optional[Redis] = None) -> int:
    """Run a paused campaign again and feed it at once; return how many jobs were queued."""
    _state_change(campaign=campaign, allowed=(Campaign.State.PAUSED,),
                  to=Campaign.State.RUNNING, verb="resumed")
    log.info("campaign %s: resumed", campaign.name)
    return _feed_now(campaign=campaign, connection=connection, publish=False)


def campaign_cancel(*, campaign: Campaign, connection: Optional[Redis] = None) -> CancelReport:
    """Take the campaign's waiting jobs out of Redis; cancel its pending, queued and running
    tasks (docs/pipeline.md, "Cancelling": what becomes of the jobs already started).

    Runs under the feed lock of the campaign's queue: no feeder can put a job back between the
    removal and the ledger's update.
    """
    cancellable = (Campaign.State.RUNNING, Campaign.State.PAUSED)
    campaign.refresh_from_db(fields=["state"])  # not what a page read a while ago
    if campaign.state not in cancellable:
        raise _refused(campaign=campaign, allowed=cancellable, verb="cancelled")
    connection = connection if connection is not None else redis_connection()
    lock = connection.lock(feed_lock_key(queue=campaign.queue), timeout=LOCK_TIMEOUT_S,
                           blocking_timeout=CANCEL_LOCK_WAIT_S)
    try:
        if not lock.acquire():
            raise ApplicationError(f"campaign {campaign.name}: the feeder of queue "
                                   f"{campaign.queue} kept it busy for {CANCEL_LOCK_WAIT_S}s; "
                                   "nothing was cancelled, try again")
        try:
            removed = _jobs_remove(campaign=campaign, connection=connection)
            with transaction.atomic():
                _state_change(campaign=campaign, allowed=cancellable,
                              to=Campaign.State.CANCELLED, verb="cancelled")
                now = timezone.now()
                # Running ones too: their worker finishes, and the collector skips a result
                # for a cancelled task, so nothing arrives after the cancel.
                cancelled = campaign.tasks.filter(state__in=UNFINISHED).update(
                    state=Task.State.CANCELLED, finished_at=now, updated_at=now)
        finally:
            lock.release()
    except REDIS_DOWN as exc:
        raise _redis_down(campaign=campaign, exc=exc, what="nothing was cancelled") from None
    report = CancelReport(removed_jobs=removed, cancelled_tasks=cancelled)
    log.info("campaign %s: cancelled (%s tasks, %s jobs removed from Redis)", campaign.name,
             cancelled, removed)
    return report


# One pass over each RQ queue list: keep the ids that are not the campaign's, delete the hashes
# of those taken out. Atomic, so a worker popping meanwhile never sees a half-rebuilt list.
# (LREM per job cost O(window) each: O(window^2) for a campaign that filled the window.)
_REMOVE_CAMPAIGN_JOBS = """
local prefix, job_prefix = ARGV[1], ARGV[2]
local removed = 0
for _, key in ipairs(KEYS) do
  local ids = redis.call('LRANGE', key, 0, -1)
  local kept = {}
  for _, id in ipairs(ids) do
    if string.sub(id, 1, #prefix) == prefix then
      redis.call('DEL', job_prefix .. id)
      removed = removed + 1
    else
      kept[#kept + 1] = id
    end
  end
  if #kept < #ids then
    redis.call('DEL', key)
    for i = 1, #kept, 1000 do
      redis.call('RPUSH', key, unpack(kept, i, math.min(i + 999, #kept)))
    end
  end
end
return removed
"""


def campaign_new_version(*, campaign: Campaign) -> Campaign:
    """Put a finished campaign back to draft as its next version, so its definition (arg sets,
    output key, queue, dataset, ...) can be edited; return it.

    Only a done, failed or cancelled campaign: nothing of it is in flight. spec_version + 1
    gives the new version new job ids and a new spec key, and its spec is published when it
    is launched (campaign_launch), after the edits, so no worker ever runs the old spec for
    the new version. The old ledger and per-minute series described the old definition and go
    (the records keep their results), as with `import_campaign --replace`.
    """
    allowed = (Campaign.State.DONE, Campaign.State.FAILED, Campaign.State.CANCELLED)
    with transaction.atomic():
        changed = Campaign.objects.filter(pk=campaign.pk, state__in=allowed).update(
            state=Campaign.State.DRAFT, spec_version=F("spec_version") + 1,
            updated_at=timezone.now())
        campaign.refresh_from_db(fields=["state", "spec_version"])
        if not changed:
            raise ApplicationError(
                f"campaign {campaign.name} is {campaign.state}: only a "
                f"{', '.join(allowed)} campaign can become a new version (pause is not enough: "
                "cancel it, or wait until it is done)")
        campaign.tasks.all().delete()
        campaign.task_minutes.all().delete()
    log.info("campaign %s: version %s, a draft to edit", campaign.name, campaign.spec_version)
    return campaign


def _jobs_remove(*, campaign: Campaign, connection: Redis) -> int:
    """Take every waiting job of the campaign (any version, any priority) off the RQ queue
    lists and delete their hashes, in one pass per list; return how many.

    Only a job taken off a list is deleted: one a worker has already started keeps its hash,
    so that worker can finish and report (its result is not written: docs/pipeline.md).
    """
    # All three priorities: the campaign's priority may have been edited since it was fed.
    lists = [Queue(name, connection=connection).key
             for name in worker_rq_queues(queue=campaign.queue)]
    return int(connection.eval(_REMOVE_CAMPAIGN_JOBS, len(lists), *lists,
                               campaign_job_prefix(campaign_id=campaign.pk),
                               rq_layout.JOB_PREFIX))


def _feed_now(*, campaign: Campaign, connection: Optional[Redis], publish: bool) -> int:
    """Feed the campaign's worker queue once; return the jobs that went to its RQ queue."""
    try:
        connection = connection if connection is not None else redis_connection()
        if publish:  # a new version's spec before its first job, even if a feeder is busy
            campaign_spec_publish(campaign=campaign, connection=connection)
        report = queues_feed(connection=connection, queues=[campaign.queue])
    except REDIS_DOWN as exc:
        raise _redis_down(campaign=campaign, exc=exc,
                          what="its tasks are in the ledger and the feeder will queue them "
                               "when Redis answers") from None
    return report.by_queue.get(campaign_rq_queue(campaign=campaign), 0)


def _state_change(*, campaign: Campaign, allowed: Sequence[str], to: str, verb: str) -> None:
    """Move the campaign to `to` if it is in one of `allowed` states (one conditional UPDATE, so
    two clicks at once cannot both succeed); else ApplicationError naming the allowed states."""
    changed = Campaign.objects.filter(pk=campaign.pk, state__in=list(allowed)).update(
        state=to, updated_at=timezone.now())
    if not changed:
        campaign.refresh_from_db(fields=["state"])
        raise _refused(campaign=campaign, allowed=allowed, verb=verb)
    campaign.state = to


def _refused(*, campaign: Campaign, allowed: Sequence[str], verb: str) -> ApplicationError:
    return ApplicationError(f"campaign {campaign.name} is {campaign.state}: only a "
                            f"{' or '.join(allowed)} campaign can be {verb}")


def _redis_down(*, campaign: Campaign, exc: Exception, what: str) -> ApplicationError:
    return ApplicationError(f"campaign {campaign.name}: Redis did not answer ({exc}); {what}")


def campaigns_finish(*, campaign_ids: set[int], using: str = "default") -> list[str]:
    """End the running or paused campaigns among these that have no task left to run; return
    their names.

    One conditional UPDATE per campaign, `WHERE state IN (running, paused) AND NOT EXISTS (an
    unfinished task)`, so a campaign that a submit or a resubmit gave new tasks meanwhile, or
    that was cancelled, is left as it is. It ends `done` when some task is done (or none
    failed), `failed` when tasks failed and none succeeded; the failures of a `done` campaign
    are shown with it (campaigns.status).
    """
    names = []
    tasks = Task.objects.using(using).filter(campaign=OuterRef("pk"))
    campaigns = Campaign.objects.using(using)
    for campaign in campaigns.filter(pk__in=campaign_ids, state__in=ACTIVE).only("pk", "name"):
        ended = campaigns.filter(pk=campaign.pk, state__in=ACTIVE).exclude(
            Exists(tasks.filter(state__in=UNFINISHED))).update(
            state=Case(When(Exists(tasks.filter(state=Task.State.DONE)),
                            then=Value(Campaign.State.DONE)),
                       When(Exists(tasks.filter(state=Task.State.FAILED)),
                            then=Value(Campaign.State.FAILED)),
                       default=Value(Campaign.State.DONE)),
            updated_at=timezone.now())
        if ended:
            names.append(campaign.name)
            state = campaigns.values_list("state", flat=True).get(pk=campaign.pk)
            log.info("campaign %s: every task finished; campaign %s", campaign.name, state)
    return names
