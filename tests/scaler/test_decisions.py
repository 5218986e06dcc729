"""decisions.decide and the backoff: pure functions, checked against a table."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from workers.scaler.base import BatchJob, BatchView
from workers.scaler.decisions import (Limits, PoolDemand, Situation, backlog_split,
                                      backoff_delay, backoff_waiting, decide)


def jobs(state: str, count: int, workers: int = 1, start: int = 0):
    return [BatchJob(f"{state}{start + i}", state, workers=workers) for i in range(count)]


# (id, limits, backlog, live, batch jobs, expected batch jobs, expected code)
TABLE = [
    ("empty backlog: nothing", Limits(), 0, 0, [], 0, "idle"),
    ("empty backlog, live workers: nothing", Limits(), 0, 3, [], 0, "idle"),
    ("backlog 5, max 10: 5 jobs", Limits(max_workers=10), 5, 0, [], 5, "submit"),
    ("backlog over max: up to max", Limits(max_workers=8, max_waiting_jobs=50), 5000, 0, [], 8,
     "submit"),
    ("live workers count", Limits(max_workers=10), 5000, 7, [], 3, "submit"),
    ("waiting jobs count", Limits(max_workers=10), 5000, 2, jobs("waiting", 4), 4, "submit"),
    ("running but not yet registered count", Limits(max_workers=10), 5000, 2,
     jobs("running", 5), 5, "submit"),
    ("at max: nothing", Limits(max_workers=10), 5000, 10, [], 0, "full"),
    ("enough for the backlog", Limits(max_workers=10), 3, 3, [], 0, "enough"),
    ("workers per job: rounded up", Limits(max_workers=10, workers_per_job=4), 5000, 0, [], 3,
     "submit"),
    ("workers per job, small backlog", Limits(max_workers=10, workers_per_job=4), 5, 0, [], 2,
     "submit"),
    ("waiting workers per job", Limits(max_workers=10, workers_per_job=4), 5000, 0,
     jobs("waiting", 2, workers=4), 1, "submit"),
    ("capped by max waiting jobs", Limits(max_workers=100, max_waiting_jobs=5), 5000, 10,
     jobs("waiting", 3), 2, "submit"),
    ("waiting cap reached: nothing", Limits(max_workers=100, max_waiting_jobs=5), 5000, 10,
     jobs("waiting", 5), 0, "capped"),
    ("min workers with an empty backlog", Limits(min_workers=3, max_workers=10), 0, 1, [], 2,
     "submit"),
    ("min workers beats the waiting cap", Limits(min_workers=4, max_workers=10,
                                                 max_waiting_jobs=1), 0, 0, [], 4, "submit"),
    ("min workers already reached", Limits(min_workers=2, max_workers=10), 0, 0,
     jobs("waiting", 2), 0, "idle"),
    ("held and failed jobs are no capacity", Limits(max_workers=10), 5000, 0,
     jobs("held", 3) + jobs("failed", 2), 10, "submit"),
    ("done jobs are no capacity", Limits(max_workers=4), 5000, 0, jobs("done", 4), 4, "submit"),
]


@pytest.mark.parametrize("limits, backlog, live, batch, expected, code",
                         [row[1:] for row in TABLE], ids=[row[0] for row in TABLE])
def test_it_submits_what_the_backlog_needs(limits, backlog, live, batch, expected, code):
    decision = decide(pool="osg", limits=limits,
                      situation=Situation(backlog=backlog, live=live, view=BatchView(batch)))
    assert (decision.batch_jobs, decision.code) == (expected, code), decision.reason
    assert decision.workers_per_job == limits.workers_per_job


def test_its_reason_names_the_numbers():
    decision = decide(pool="osg", limits=Limits(max_workers=60, max_waiting_jobs=50),
                      situation=Situation(backlog=5000, live=10, view=BatchView(
                          jobs("waiting", 40))))
    assert decision.reason == ("pool osg: backlog 5,000, live 10, waiting 40 (cap 50): "
                               "submit 10 batch jobs × 1 worker")


def test_its_reason_says_when_the_cap_cut_the_submission():
    decision = decide(pool="osg", limits=Limits(max_workers=100, max_waiting_jobs=5),
                      situation=Situation(backlog=5000, live=0, view=BatchView(
                          jobs("waiting", 3))))
    assert decision.reason.endswith("submit 2 batch jobs × 1 worker (of 97 workers wanted; "
                                    "the waiting cap allows no more)")


def test_an_empty_backlog_says_so():
    decision = decide(pool="osg", limits=Limits(), situation=Situation(backlog=0, live=0))
    assert decision.reason == ("pool osg: backlog 0, live 0, waiting 0 (cap 10): nothing to "
                               "submit: the backlog is empty")


def test_broken_jobs_are_reported_once_and_removed_after_n_steps():
    limits = Limits(max_workers=0, removal_tries=3)
    view = BatchView([BatchJob("7.0", "held", "Error from slot: out of disk"),
                      BatchJob("8_1", "failed", "FAILED, exit code 3"),
                      BatchJob("9", "running")])
    seen: dict = {}
    steps = []
    for _ in range(3):
        decision = decide(pool="p", limits=limits,
                          situation=Situation(backlog=0, live=0, view=view, seen=seen))
        steps.append(([j.job_id for j in decision.newly_broken],
                      [j.job_id for j in decision.remove]))
        seen = decision.seen
    assert steps == [(["7.0", "8_1"], []), ([], []), ([], ["7.0", "8_1"])]
    assert seen == {}
    assert decision.numbers["broken"] == 2
    assert "held/failed 2" in decision.reason


def test_removal_counts_only_jobs_still_broken():
    limits = Limits(removal_tries=2)
    first = decide(pool="p", limits=limits, situation=Situation(
        backlog=0, live=0, view=BatchView([BatchJob("1", "held"), BatchJob("2", "held")])))
    # Job 1 was released by a person and runs; job 2 is still held.
    second = decide(pool="p", limits=limits, situation=Situation(
        backlog=0, live=0, seen=first.seen,
        view=BatchView([BatchJob("1", "running"), BatchJob("2", "held")])))
    assert [job.job_id for job in second.remove] == ["2"]


def test_one_try_removes_at_first_sight():
    decision = decide(pool="p", limits=Limits(removal_tries=1), situation=Situation(
        backlog=0, live=0, view=BatchView([BatchJob("5", "failed", "exit code 1")])))
    assert [job.job_id for job in decision.remove] == ["5"]
    assert [job.job_id for job in decision.newly_broken] == ["5"]


@pytest.mark.parametrize("failures, seconds", [
    (0, 0), (1, 30), (2, 60), (3, 120), (6, 960), (7, 1920), (8, 3600), (50, 3600),
])
def test_backoff_doubles_up_to_an_hour(failures, seconds):
    assert backoff_delay(failures) == timedelta(seconds=seconds)


def test_backoff_waits_until_the_next_try():
    now = datetime(2026, 11, 26, 10, 0, tzinfo=timezone.utc)
    assert backoff_waiting(next_try_at=now + timedelta(seconds=1), now=now)
    assert not backoff_waiting(next_try_at=now, now=now)
    assert not backoff_waiting(next_try_at=None, now=now)


def demand(name: str, preference: int, max_workers: int, backlog: int = 5000,
           queues: str = "xtb") -> PoolDemand:
    return PoolDemand(name=name, preference=preference, queues=frozenset(queues.split()),
                      backlog=backlog, max_workers=max_workers)


def test_the_backlog_fills_the_local_pool_then_the_cluster_then_the_ospool():
    pools = [demand("ospool", 30, 2000), demand("local", 10, 4), demand("cluster", 20, 50)]

    assert backlog_split(pools) == {"local": 5000, "cluster": 4996, "ospool": 4946}
    decisions = {d.name: decide(pool=d.name, limits=Limits(max_workers=d.max_workers,
                                                           max_waiting_jobs=5000),
                                situation=Situation(backlog=share, live=0, queue_backlog=5000))
                 for d in pools for share in [backlog_split(pools)[d.name]]}
    assert {name: d.workers for name, d in decisions.items()} == {
        "local": 4, "cluster": 50, "ospool": 2000}
    assert decisions["ospool"].reason.startswith(
        "pool ospool: backlog 4,946 of 5,000 (the rest is for preferred pools), live 0")


def test_a_small_backlog_stays_in_the_preferred_pools():
    shares = backlog_split([demand("ospool", 30, 2000, backlog=30), demand("local", 10, 4, 30),
                            demand("cluster", 20, 50, backlog=30)])

    assert shares == {"local": 30, "cluster": 26, "ospool": 0}
    assert decide(pool="ospool", limits=Limits(max_workers=2000), situation=Situation(
        backlog=shares["ospool"], live=0, queue_backlog=30)).code == "idle"


def test_pools_on_other_queues_do_not_share_and_ties_go_by_name():
    shares = backlog_split([demand("b", 10, 3, backlog=10), demand("a", 10, 3, backlog=10),
                            demand("orca", 5, 100, backlog=7, queues="orca")])

    assert shares == {"orca": 7, "a": 10, "b": 7}
