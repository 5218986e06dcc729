"""What one scaler step does for one pool, decided from numbers alone (no I/O, no clock).

    target   = max(min_workers, min(max_workers, backlog))
    have     = live + starting + waiting      (starting: running in the batch system, not yet
                                               heartbeating in Redis = max(0, running - live))
    jobs     = ceil((target - have) / workers_per_job), at most max_waiting_jobs minus the jobs
               already waiting, but never fewer than it takes to reach min_workers

Pools sharing a queue split its backlog in their order of preference (backlog_split): the
most preferred pool's share is the backlog up to its max_workers, the next one's is what is
left, and so on; `backlog` above is a pool's share.

Held and failed batch jobs are no capacity: each is reported when first seen and removed once
seen in `removal_tries` steps. A pool whose step failed waits 30 s, 60 s, 120 s ... (at most an
hour) before its next try.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import AbstractSet, Dict, List, Mapping, Optional, Sequence, Tuple

from workers.scaler.base import BatchJob, BatchView

BACKOFF_FIRST_S = 30.0
BACKOFF_CAP_S = 3600.0
BROKEN_STATES = ("held", "failed")


@dataclass(frozen=True)
class Limits:
    min_workers: int = 0
    max_workers: int = 10
    workers_per_job: int = 1
    max_waiting_jobs: int = 10
    removal_tries: int = 3


@dataclass(frozen=True)
class PoolDemand:
    """What the split needs of one pool: its place in the order, its queues and its backlog."""

    name: str
    preference: int                 # lower first
    queues: AbstractSet[str]
    backlog: int                    # the tasks waiting on the pool's queues
    max_workers: int


def backlog_split(demands: Sequence[PoolDemand]) -> Dict[str, int]:
    """{pool name: its share of the backlog}, filling the preferred pools first.

    Pools are taken by (preference, name); a pool's share is its backlog minus what the pools
    before it that serve one of its queues take (each takes its share up to its max_workers).
    A pool serving queues a preferred pool does not is charged that pool's whole take, a
    cautious approximation when queue sets overlap only in part.
    """
    order = sorted(demands, key=lambda demand: (demand.preference, demand.name))
    shares: Dict[str, int] = {}
    taken: Dict[str, int] = {}
    for index, demand in enumerate(order):
        claimed = sum(taken[before.name] for before in order[:index]
                      if before.queues & demand.queues)
        shares[demand.name] = max(0, demand.backlog - claimed)
        taken[demand.name] = min(demand.max_workers, shares[demand.name])
    return shares


@dataclass(frozen=True)
class Situation:
    """What the scaler sees of one pool at the start of a step."""

    backlog: int                    # tasks waiting for a worker
    live: int                       # workers heartbeating on the pool's queues
    view: BatchView = field(default_factory=BatchView)
    seen: Mapping[str, int] = field(default_factory=dict)  # broken job id -> earlier sightings
    queue_backlog: Optional[int] = None  # the whole backlog when `backlog` is a pool's share


@dataclass(frozen=True)
class Decision:
    code: str                       # submit | idle | enough | full | capped
    reason: str                     # one line for the log and the events
    batch_jobs: int = 0
    workers_per_job: int = 1
    remove: Tuple[BatchJob, ...] = ()
    newly_broken: Tuple[BatchJob, ...] = ()
    seen: Dict[str, int] = field(default_factory=dict)  # what to remember for the next step
    numbers: Dict[str, int] = field(default_factory=dict)

    @property
    def workers(self) -> int:
        return self.batch_jobs * self.workers_per_job


def decide(*, pool: str, limits: Limits, situation: Situation) -> Decision:
    """The step's decision for pool `pool`: what to submit and which broken jobs to remove."""
    view = situation.view
    waiting_jobs = sum(1 for job in view.jobs if job.state == "waiting")
    starting = max(0, view.count("running") - situation.live)
    have = situation.live + starting + view.count("waiting")
    target = max(limits.min_workers, min(limits.max_workers, situation.backlog))
    room = max(0, limits.max_waiting_jobs - waiting_jobs)
    wpj = limits.workers_per_job
    jobs = min(_jobs_for(target - have, wpj), room)
    jobs = max(jobs, _jobs_for(limits.min_workers - have, wpj))
    broken = [job for job in view.jobs if job.state in BROKEN_STATES]
    seen = {job.job_id: situation.seen.get(job.job_id, 0) + 1 for job in broken}
    remove = tuple(job for job in broken if seen[job.job_id] >= limits.removal_tries)
    numbers = {"backlog": situation.backlog, "live": situation.live, "starting": starting,
               "queue_backlog": (situation.backlog if situation.queue_backlog is None
                                 else situation.queue_backlog),
               "waiting_jobs": waiting_jobs, "waiting_cap": limits.max_waiting_jobs,
               "broken": len(broken), "target": target, "have": have}
    code, outcome = _outcome(limits=limits, numbers=numbers, jobs=jobs, room=room)
    return Decision(
        code=code, reason=f"pool {pool}: {_summary(numbers)}: {outcome}", batch_jobs=jobs,
        workers_per_job=wpj, remove=remove,
        newly_broken=tuple(job for job in broken if not situation.seen.get(job.job_id)),
        seen={job_id: count for job_id, count in seen.items()
              if count < limits.removal_tries},
        numbers=numbers)


def _jobs_for(workers: int, workers_per_job: int) -> int:
    return math.ceil(workers / workers_per_job) if workers > 0 else 0


def _summary(numbers: Dict[str, int]) -> str:
    backlog = f"backlog {numbers['backlog']:,}"
    if numbers["queue_backlog"] != numbers["backlog"]:
        backlog += f" of {numbers['queue_backlog']:,} (the rest is for preferred pools)"
    parts = [backlog, f"live {numbers['live']:,}"]
    if numbers["starting"]:
        parts.append(f"starting {numbers['starting']:,}")
    parts.append(f"waiting {numbers['waiting_jobs']:,} (cap {numbers['waiting_cap']:,})")
    if numbers["broken"]:
        parts.append(f"held/failed {numbers['broken']:,}")
    return ", ".join(parts)


def _outcome(*, limits: Limits, numbers: Dict[str, int], jobs: int, room: int
             ) -> Tuple[str, str]:
    have, target = numbers["have"], numbers["target"]
    if jobs:
        line = (f"submit {plural(jobs, 'batch job')} × "
                f"{plural(limits.workers_per_job, 'worker')}")
        if numbers["backlog"] < limits.min_workers:
            line += f" (to keep the minimum of {limits.min_workers} workers)"
        elif jobs * limits.workers_per_job < target - have:
            line += f" (of {target - have:,} workers wanted; the waiting cap allows no more)"
        return "submit", line
    if have >= limits.max_workers and numbers["backlog"] > have:
        return "full", f"nothing to submit: at the pool's maximum of {limits.max_workers} workers"
    if target > have and room == 0:
        return "capped", (f"nothing to submit: {numbers['waiting_jobs']:,} batch jobs already "
                          f"waiting (cap {limits.max_waiting_jobs:,})")
    if numbers["backlog"] == 0:
        return "idle", "nothing to submit: the backlog is empty"
    return "enough", f"nothing to submit: {have:,} workers are enough for the backlog"


def plural(count: int, noun: str) -> str:
    """ "1 batch job", "2 batch jobs", "5,000 workers"."""
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def backoff_delay(failures: int) -> timedelta:
    """How long a pool waits after its `failures`-th failure in a row: 30 s, 60 s ... 1 h."""
    if failures < 1:
        return timedelta(0)
    return timedelta(seconds=min(BACKOFF_CAP_S, BACKOFF_FIRST_S * 2 ** min(failures - 1, 20)))


def backoff_waiting(*, next_try_at: Optional[datetime], now: datetime) -> bool:
    """True while a pool that failed must not be tried again."""
    return next_try_at is not None and now < next_try_at


def broken_lines(jobs: List[BatchJob]) -> List[str]:
    """ "1234_7 held: <the batch system's reason>" for each job."""
    return [f"{job.job_id} {job.state}: {job.reason or 'no reason given'}" for job in jobs]
