"""A campaign's status for people: the ledger's counts and rates, its workers, its failures.

`campaign_status` is a selector (it reads only) built from a few aggregate queries and a few
Redis calls, never a scan of the tasks, so it costs the same for 100 tasks or 10 million; the
`campaign_status` command, the dashboard and the API all show what it returns.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import timedelta

import redis
from django.db.models import Count, Max, Q
from django.utils import timezone
from redis import Redis
from rq import Queue, Worker

from campaigns.models import Campaign, Task
from campaigns.pipeline_keys import campaign_rq_queue
from campaigns.progress import format_duration
from campaigns.serving import campaign_blockers

RATE_WINDOWS_S = (60, 600)
UNFINISHED = (Task.State.PENDING, Task.State.QUEUED, Task.State.RUNNING)
FINISHED = (Task.State.DONE, Task.State.FAILED)
EXAMPLE_CHARS = 300


@dataclass
class FailureClass:
    error_class: str
    count: int
    example: str  # one of the messages


@dataclass
class WorkerInfo:
    name: str
    state: str
    job_id: str | None


@dataclass
class CampaignStatus:
    name: str
    state: str
    queue: str
    counts: dict[str, int]       # every task state, zeros included
    rate_1m: float               # tasks finished per second over the last minute
    rate_10m: float              # ... over the last ten minutes
    eta_s: float | None          # at the ten-minute rate (the one-minute one when it is 0)
    failures: list[FailureClass] = field(default_factory=list)  # failed tasks by error class
    workers: list[WorkerInfo] | None = None   # None: Redis did not answer
    redis_used_memory: int | None = None      # bytes (INFO memory used_memory)
    redis_error: str = ""
    # Why its waiting tasks would not run (campaigns.serving), for a running campaign with
    # work left and no worker on its queue.
    blockers: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def remaining(self) -> int:
        return sum(self.counts[state] for state in UNFINISHED)

    @property
    def failed(self) -> int:
        return self.counts[Task.State.FAILED]

    @property
    def state_text(self) -> str:
        """The state as people read it, failures included: "done", "done with 3 failed of 99",
        "failed: 99 of 99 tasks failed"; a finished campaign never reads a plain "done" when
        anything failed."""
        if self.state == Campaign.State.FAILED:
            return f"failed: {self.failed:,} of {self.total:,} tasks failed"
        if self.state == Campaign.State.DONE and self.failed:
            return f"done with {self.failed:,} failed of {self.total:,}"
        return self.state

    @property
    def badge(self) -> str:
        """The badge's kind: the state, or "done-failures" (amber) for a done campaign with
        failed tasks; "failed" is red, "done" green only when nothing failed."""
        if self.state == Campaign.State.DONE and self.failed:
            return "done-failures"
        return self.state

    def as_dict(self) -> dict:
        return {**asdict(self), "total": self.total, "remaining": self.remaining,
                "state_text": self.state_text, "badge": self.badge}

    def lines(self) -> list[str]:
        """The status as a person reads it (the campaign_status command)."""
        counts = ", ".join(f"{state} {self.counts[state]:,}" for state in Task.State.values
                           if self.counts[state])
        eta = f"; eta {format_duration(self.eta_s)}" if self.eta_s is not None else ""
        lines = [f"{self.name} ({self.state_text}, queue {self.queue})",
                 f"  tasks: {self.total:,} ({counts or 'none'})",
                 f"  rate: {self.rate_1m:.2f}/s last minute, {self.rate_10m:.2f}/s last 10 "
                 f"minutes{eta}"]
        if self.workers is None:
            lines.append(f"  workers: unknown ({self.redis_error})")
        else:
            names = ", ".join(w.name for w in self.workers[:10])
            more = f" and {len(self.workers) - 10} more" if len(self.workers) > 10 else ""
            lines.append(f"  workers: {len(self.workers)}" + (f" ({names}{more})" if names else ""))
        for failure in self.failures:
            lines.append(f"  failed: {failure.error_class or 'unknown'} x{failure.count:,}, e.g. "
                         f"{failure.example!r}")
        if self.redis_used_memory is not None:
            lines.append(f"  redis memory: {self.redis_used_memory / 2**20:.1f} MiB used")
        lines.extend(f"  not running: {blocker}" for blocker in self.blockers)
        return lines


def campaign_status(*, campaign: Campaign, connection: Redis) -> CampaignStatus:
    """The campaign's status; a Redis that does not answer leaves workers and memory unknown."""
    now = timezone.now()
    rates = {f"last_{seconds}": Count("pk", filter=Q(finished_at__gte=now - timedelta(
        seconds=seconds), state__in=FINISHED)) for seconds in RATE_WINDOWS_S}
    counts = {state: 0 for state in Task.State.values}
    finished = {seconds: 0 for seconds in RATE_WINDOWS_S}
    for row in campaign.tasks.order_by().values("state").annotate(n=Count("pk"), **rates):
        counts[row["state"]] = row["n"]
        for seconds in RATE_WINDOWS_S:
            finished[seconds] += row[f"last_{seconds}"]
    rate_1m, rate_10m = (finished[s] / s for s in RATE_WINDOWS_S)
    remaining = sum(counts[state] for state in UNFINISHED)
    rate = rate_10m or rate_1m
    status = CampaignStatus(
        name=campaign.name, state=campaign.state, queue=campaign_rq_queue(campaign=campaign),
        counts=counts, rate_1m=rate_1m, rate_10m=rate_10m,
        eta_s=remaining / rate if rate and remaining else (0.0 if not remaining else None),
        failures=_failures(campaign),
    )
    try:
        status.workers = _workers(connection, status.queue)
        status.redis_used_memory = int(connection.info("memory")["used_memory"])
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        status.workers, status.redis_error = None, f"Redis unreachable: {exc}"
    if campaign.state == Campaign.State.RUNNING and remaining and not status.workers:
        status.blockers = campaign_blockers(campaign=campaign)
    return status


def _failures(campaign: Campaign) -> list[FailureClass]:
    rows = (campaign.tasks.filter(state=Task.State.FAILED).order_by().values("error_class")
            .annotate(n=Count("pk"), example=Max("error_message")).order_by("-n", "error_class"))
    return [FailureClass(row["error_class"], row["n"], (row["example"] or "")[:EXAMPLE_CHARS])
            for row in rows]


def _workers(connection: Redis, queue: str) -> list[WorkerInfo]:
    """The live rq workers registered on the campaign's RQ queue."""
    workers = Worker.all(queue=Queue(queue, connection=connection))
    return sorted((WorkerInfo(w.name, w.get_state(), w.get_current_job_id()) for w in workers),
                  key=lambda w: w.name)
