"""Why nothing is running: what stands between a campaign's queued tasks and a worker.

One line each, for `campaign_status`, the campaign page and the launch: no enabled pool serves
the campaign's queue; every pool that does stops its workers (--max-runtime) before the job
timeout, so each worker would put the job back and quit; the scaler is backing off every pool
of the queue after failures. Read from the pools' settings and the scaler's state in the
database only: cheap enough for every status poll.
"""
from __future__ import annotations

from typing import List, Optional

from django.utils import timezone

from campaigns.models import Campaign
from workers.models import WorkerPool


def pools_serving(*, queue: str, pools: Optional[List[WorkerPool]] = None) -> List[WorkerPool]:
    """Enabled pools (or those of `pools`) whose queues include `queue` (as a whole name, or
    with a priority)."""
    if pools is None:
        pools = list(WorkerPool.objects.filter(enabled=True).order_by("name"))
    return [pool for pool in pools
            if any(name == queue or name.split(":", 1)[0] == queue for name in pool.queue_names)]


def campaign_blockers(*, campaign: Campaign) -> List[str]:
    """One line per reason the campaign's tasks would sit waiting; [] when a pool can take them.
    One query of the pools (and one of the scaler's events when it is backing off)."""
    enabled = list(WorkerPool.objects.filter(enabled=True).order_by("name"))
    pools = pools_serving(queue=campaign.queue, pools=enabled)
    if not pools:
        served = sorted({name for pool in enabled for name in pool.queue_names})
        known = f" (enabled pools serve: {', '.join(served)})" if served else " (no pool is enabled)"
        return [f"no enabled worker pool serves queue '{campaign.queue}'{known}: add the queue "
                f"to a pool in the admin, or start workers on it by hand"]
    blockers = []
    fitting = [pool for pool in pools if pool.max_runtime >= campaign.job_timeout]
    if not fitting:
        limits = ", ".join(f"{pool.name}: --max-runtime {pool.max_runtime:,} s" for pool in pools)
        blockers.append(
            f"every pool serving queue '{campaign.queue}' stops its workers before the job "
            f"timeout of {campaign.job_timeout:,} s ({limits}): each worker would put the job "
            f"back and quit; raise a pool's max runtime or lower the job timeout")
    now = timezone.now()
    waiting = [pool for pool in (fitting or pools) if pool.next_try_at and pool.next_try_at > now]
    if waiting and len(waiting) == len(fitting or pools):
        for pool in waiting:
            blockers.append(f"pool {pool.name}: the scaler is backing off after "
                            f"{pool.consecutive_failures} failed steps, until "
                            f"{timezone.localtime(pool.next_try_at):%H:%M:%S}"
                            + _last_error(pool))
    return blockers


def _last_error(pool: WorkerPool) -> str:
    event = pool.events.filter(kind="error").order_by("-time").first()
    return f" (last error: {event.message[:200]})" if event else ""
