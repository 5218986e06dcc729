"""What the dashboard shows beyond campaign_status: who sees which campaign, the per-minute
series, failure examples, and the workers' and Redis's own view.

Everything reads aggregates (GROUP BY over the task ledger's indexes, or the per-minute rollup
the collector keeps) or Redis; no page walks the tasks one by one, so a page costs about the
same for a thousand tasks or ten million.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone as dt_timezone

import redis
from django.db.models import Max
from django.utils import timezone
from redis import Redis
from rq import Worker

from campaigns.models import Campaign, Task
from campaigns.services.ownership import campaigns_visible
from workers.models import ScalerEvent, WorkerPool

SERIES_SPANS = {"hour": timedelta(hours=1), "start": None}
DEFAULT_SPAN = "hour"
RECENT_FAILURES = 20
RECENT_EVENTS = 20
TAIL_CHARS = 2000
REDIS_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


# -- who sees what (campaigns.services.ownership decides) -----------------------------------

def campaign_visible(*, user, pk: int) -> Campaign | None:
    return campaigns_visible(user=user).filter(pk=pk).first()


def campaign_task(*, campaign: Campaign, pk: int) -> Task | None:
    return campaign.tasks.filter(pk=pk).first()


# -- the per-minute series -----------------------------------------------------------------

@dataclass
class Series:
    """Tasks finished per minute: `minutes` are epoch seconds, one per minute, gaps as zeros."""

    span: str
    minutes: list[int] = field(default_factory=list)
    done: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"span": self.span, "minutes": self.minutes, "done": self.done,
                "failed": self.failed}


def campaign_series(*, campaign: Campaign, span: str = DEFAULT_SPAN,
                    now: datetime | None = None) -> Series:
    """Done and failed tasks per minute over the last hour (span "hour") or since the first
    minute with any (span "start"): a range of the campaign's per-minute rollup (TaskMinute)."""
    now = now or timezone.now()
    window = SERIES_SPANS[span]
    rows = campaign.task_minutes.order_by("minute")
    if window is not None:
        rows = rows.filter(minute__gte=_moment(_minute(now - window) + 60))
    counts = {int(minute.timestamp()): (done, failed)
              for minute, done, failed in rows.values_list("minute", "done", "failed")}
    series = Series(span=span)
    if window is not None:
        first = _minute(now - window) + 60
    elif counts:
        first = min(counts)
    else:
        return series
    for minute in range(first, _minute(now) + 60, 60):
        done, failed = counts.get(minute, (0, 0))
        series.minutes.append(minute)
        series.done.append(done)
        series.failed.append(failed)
    return series


def _minute(moment: datetime) -> int:
    return int(moment.timestamp()) // 60 * 60


def _moment(epoch: int) -> datetime:
    return datetime.fromtimestamp(epoch, tz=dt_timezone.utc)


# -- failures ------------------------------------------------------------------------------

def failure_examples(*, campaign: Campaign) -> dict[str, Task]:
    """The latest failed task of each error class (to show its message and output tail)."""
    failed = campaign.tasks.filter(state=Task.State.FAILED).order_by()
    latest = failed.values("error_class").annotate(example=Max("pk")).values_list("example",
                                                                                  flat=True)
    return {task.error_class: task for task in Task.objects.filter(pk__in=list(latest))}


def failures_recent(*, campaign: Campaign, limit: int = RECENT_FAILURES) -> list[Task]:
    return list(campaign.tasks.filter(state=Task.State.FAILED)
                .order_by("-finished_at", "-pk")
                .only("pk", "campaign_id", "record_id", "error_class", "error_message", "attempts", "worker",
                      "finished_at")[:limit])


# -- workers and Redis ---------------------------------------------------------------------

@dataclass
class WorkerRow:
    name: str
    host: str
    pool: str
    queues: list[str]
    state: str
    current_job: str | None
    done: int
    failed: int
    last_heartbeat: datetime | None


@dataclass
class WorkerGroup:
    pool: str
    host: str
    workers: list[WorkerRow]

    @property
    def busy(self) -> int:
        return sum(1 for worker in self.workers if worker.current_job)


@dataclass
class RedisMemory:
    used: int           # bytes (INFO memory used_memory)
    bound: int | None   # maxmemory, None when Redis has no bound
    policy: str

    @property
    def share(self) -> float | None:
        return self.used / self.bound if self.bound else None


@dataclass
class WorkersView:
    groups: list[WorkerGroup] = field(default_factory=list)
    memory: RedisMemory | None = None
    error: str = ""  # Redis did not answer

    @property
    def count(self) -> int:
        return sum(len(group.workers) for group in self.groups)


def workers_view(*, connection: Redis) -> WorkersView:
    """Live rq workers grouped by pool and host, and Redis's memory against its bound."""
    pools = _pools_by_queue()
    try:
        rows = [_worker_row(worker, pools) for worker in Worker.all(connection=connection)]
        memory = redis_memory(connection=connection)
    except REDIS_DOWN as exc:
        return WorkersView(error=f"Redis unreachable: {exc}")
    groups: dict[tuple[str, str], list[WorkerRow]] = {}
    for row in sorted(rows, key=lambda row: (row.pool, row.host, row.name)):
        groups.setdefault((row.pool, row.host), []).append(row)
    return WorkersView(groups=[WorkerGroup(pool, host, workers)
                               for (pool, host), workers in groups.items()], memory=memory)


def redis_memory(*, connection: Redis) -> RedisMemory:
    info = connection.info("memory")
    bound = int(info.get("maxmemory") or 0)
    return RedisMemory(used=int(info["used_memory"]), bound=bound or None,
                       policy=str(info.get("maxmemory_policy", "")))


def scaler_events_recent(*, limit: int = RECENT_EVENTS) -> list[ScalerEvent]:
    return list(ScalerEvent.objects.select_related("pool").order_by("-time", "-pk")[:limit])


def _pools_by_queue() -> dict[str, list[str]]:
    """{worker queue: names of the pools that serve it}."""
    pools: dict[str, list[str]] = {}
    for name, queues in WorkerPool.objects.order_by("name").values_list("name", "queues"):
        for queue in queues.split():
            pools.setdefault(queue, []).append(name)
    return pools


def _worker_row(worker: Worker, pools: dict[str, list[str]]) -> WorkerRow:
    queues = worker.queue_names()
    return WorkerRow(
        name=worker.name, host=worker.hostname or "?", pool=_pool_of(queues, pools),
        queues=queues,
        state=worker.get_state(), current_job=worker.get_current_job_id(),
        done=worker.successful_job_count, failed=worker.failed_job_count,
        last_heartbeat=worker.last_heartbeat,
    )


def _pool_of(queues: list[str], pools: dict[str, list[str]]) -> str:
    """The pools serving the worker's queues (its RQ queues are QUEUE:PRIORITY); a worker
    started by hand, on a queue no pool serves, is shown under "no pool (QUEUE)"."""
    served = sorted({queue.rpartition(":")[0] or queue for queue in queues})
    names = sorted({pool for queue in served for pool in pools.get(queue, [])})
    return ", ".join(names) if names else f"no pool ({', '.join(served)})"
