"""How much work waits for a pool, and how many workers already serve it.

The backlog of a pool is the larger of two counts over its queues: the ledger's pending and
queued tasks of running campaigns (the source of truth, most of it not yet in Redis), and the
jobs waiting in the RQ queues (which also holds jobs enqueued without a ledger, as benchmarks
do). Live workers are rq's registered workers on those queues whose key has not expired: a
pre-empted worker stays in rq's sets until cleaned, but its key dies with its heartbeat TTL.

These are selectors (reads only): the scaler reads the ledger and Redis through them and never
imports the collector (campaigns.loops, campaigns.services.collecting) or the feeder.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Set

from redis import Redis
from rq import Queue
from rq.worker_registration import WORKERS_BY_QUEUE_KEY

from campaigns.models import Campaign, Task
from campaigns.pipeline_keys import worker_rq_queues
from workers.models import WorkerPool

WAITING_STATES = (Task.State.PENDING, Task.State.QUEUED)


@dataclass(frozen=True)
class PoolBacklog:
    ledger: int     # pending + queued tasks of running campaigns on the pool's queues
    redis: int      # jobs waiting in the pool's RQ queues
    live: int       # workers heartbeating on any of them

    @property
    def tasks(self) -> int:
        return max(self.ledger, self.redis)


def pool_backlog(*, pool: WorkerPool, connection: Redis) -> PoolBacklog:
    queues = pool.queue_names
    return PoolBacklog(
        ledger=ledger_backlog(queues=queues),
        redis=redis_backlog(connection=connection, queues=queues),
        live=live_workers(connection=connection, queues=queues),
    )


def ledger_backlog(*, queues: List[str]) -> int:
    """Pending and queued tasks of the running campaigns on `queues`."""
    campaign_ids = list(Campaign.objects.filter(state=Campaign.State.RUNNING, queue__in=queues)
                        .values_list("pk", flat=True))
    if not campaign_ids:
        return 0
    return Task.objects.filter(campaign_id__in=campaign_ids, state__in=WAITING_STATES).count()


def redis_backlog(*, connection: Redis, queues: List[str]) -> int:
    """Jobs waiting in the RQ queues of worker queues `queues` (not those running)."""
    with connection.pipeline(transaction=False) as pipe:
        for queue in queues:
            for name in worker_rq_queues(queue=queue):
                pipe.llen(Queue(name, connection=connection).key)
        return sum(pipe.execute())


def live_workers(*, connection: Redis, queues: List[str]) -> int:
    """Workers with a live key listening on any RQ queue of `queues`, each counted once."""
    rq_queues = [name for queue in queues for name in worker_rq_queues(queue=queue)]
    with connection.pipeline(transaction=False) as pipe:
        for name in rq_queues:
            pipe.smembers(WORKERS_BY_QUEUE_KEY % name)
        registered: Set[bytes] = set().union(*pipe.execute())
    keys = sorted(registered)
    with connection.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.exists(key)
        return sum(pipe.execute())
