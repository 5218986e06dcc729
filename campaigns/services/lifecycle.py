"""A campaign's life: launch (submit + feed), pause, resume, cancel.

    draft ──launch──► running ──pause──► paused ──resume──► running
                         └────────cancel────────┴──► cancelled

Pausing only stops the feeding: jobs already in Redis stay and run. Cancelling takes the
campaign's waiting jobs out of Redis and cancels its pending and queued tasks; jobs that a
worker has started finish, and the collector ignores their results.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterable, List, Optional, Sequence

from django.db import transaction
from django.utils import timezone
from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq import Queue
from rq.job import Job

from campaigns.errors import ApplicationError
from campaigns.models import Campaign, Task
from campaigns.pipeline_keys import campaign_rq_queue, feed_lock_key, worker_rq_queues
from campaigns.progress import Progress
from campaigns.redis_connection import redis_connection
from campaigns.services.feeding import LOCK_TIMEOUT_S, queues_feed
from campaigns.services.specs import campaign_spec_publish
from campaigns.services.submission import SubmitReport, campaign_submit

log = logging.getLogger(__name__)

REMOVE_BATCH_SIZE = 1000
# How long a cancel waits for a feeder to finish its batch on the same queue.
CANCEL_LOCK_WAIT_S = 60
REDIS_DOWN = (RedisConnectionError, RedisTimeoutError)
UNFINISHED = (Task.State.PENDING, Task.State.QUEUED, Task.State.RUNNING)


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
    """Take the campaign's waiting jobs out of Redis; cancel its pending and queued tasks.

    Runs under the feed lock of the campaign's queue: no feeder can put a job back between the
    removal and the ledger's update.
    """
    cancellable = (Campaign.State.RUNNING, Campaign.State.PAUSED)
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
                cancelled = campaign.tasks.filter(
                    state__in=(Task.State.PENDING, Task.State.QUEUED),
                ).update(state=Task.State.CANCELLED, finished_at=now, updated_at=now)
        finally:
            lock.release()
    except REDIS_DOWN as exc:
        raise _redis_down(campaign=campaign, exc=exc, what="nothing was cancelled") from None
    report = CancelReport(removed_jobs=removed, cancelled_tasks=cancelled)
    log.info("campaign %s: cancelled (%s tasks, %s jobs removed from Redis)", campaign.name,
             cancelled, removed)
    return report


def _jobs_remove(*, campaign: Campaign, connection: Redis) -> int:
    """Remove the queued tasks' jobs from the RQ queue lists and delete their hashes.

    Only a job taken off a list is deleted: one a worker has already started keeps its hash,
    so that worker can finish and report normally.
    """
    # All three priorities: the campaign's priority may have been edited since it was fed.
    lists = [Queue(name, connection=connection).key
             for name in worker_rq_queues(queue=campaign.queue)]
    job_ids = (campaign.tasks.filter(state=Task.State.QUEUED)
               .values_list("job_id", flat=True).iterator(chunk_size=REMOVE_BATCH_SIZE))
    removed = 0
    for part in _parts(job_ids, REMOVE_BATCH_SIZE):
        with connection.pipeline(transaction=False) as pipe:
            for job_id in part:
                for key in lists:
                    pipe.lrem(key, 0, job_id)
            counts = pipe.execute()
        taken = [job_id for position, job_id in enumerate(part)
                 if any(counts[position * len(lists):(position + 1) * len(lists)])]
        if taken:
            connection.delete(*(Job.key_for(job_id) for job_id in taken))
        removed += len(taken)
    return removed


def _parts(items: Iterable[str], size: int) -> Iterable[List[str]]:
    part: List[str] = []
    for item in items:
        part.append(item)
        if len(part) == size:
            yield part
            part = []
    if part:
        yield part


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


def campaigns_finish(*, campaign_ids: set[int]) -> list[str]:
    """Mark done the running or paused campaigns among these with no task left to run (failed
    tasks count as finished); return their names."""
    names = []
    for campaign in Campaign.objects.filter(
            pk__in=campaign_ids, state__in=[Campaign.State.RUNNING, Campaign.State.PAUSED]):
        if not campaign.tasks.filter(state__in=UNFINISHED).exists():
            campaign.state = Campaign.State.DONE
            campaign.save(update_fields=["state", "updated_at"])
            names.append(campaign.name)
            log.info("campaign %s: every task finished; campaign done", campaign.name)
    return names
