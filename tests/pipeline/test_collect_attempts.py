"""Exactly one outcome per delivery: forged, stale, replayed and racing results change nothing
twice, and a real success is never thrown away for a stale failure."""
from __future__ import annotations

import pytest

from campaigns.collector.dead_letters import dead_letters
from campaigns.collector.host_faults import host_faults
from campaigns.collector.ledger_writes import WORKER_FAULT_LIMIT
from campaigns.locks import COLLECTOR_LOCK_KEY, LockLost, LoopLock
from campaigns.models import Task, TaskMinute
from campaigns.pipeline_keys import RESULTS_KEY
from campaigns.services import collecting
from campaigns.services.collecting import results_collect
from campaigns.services.submission import campaign_submit
from tests.pipeline.collect_helpers import (arg_set_part, deliver, document, envelope, error,
                                            failed_part, ok, push, refresh, results_of, values)


@pytest.fixture
def submitted(make_campaign):
    """submitted(records=1, **fields) -> (campaign, its tasks queued on delivery 1)."""
    def make(records: int = 1, **fields):
        campaign = make_campaign(records=records, **fields)
        campaign_submit(campaign=campaign)
        return campaign, deliver(campaign)
    return make


def counts(campaign) -> tuple[int, int]:
    """(done, failed) summed over the campaign's rollup."""
    rows = TaskMinute.objects.filter(campaign=campaign).values_list("done", "failed")
    return sum(d for d, _ in rows), sum(f for _, f in rows)


def ledger(task: Task) -> tuple:
    task = refresh(task)
    return task.state, task.attempts, task.delivery


# --- forged -----------------------------------------------------------------------------------

def test_an_attempt_id_the_portal_did_not_issue_is_a_dead_letter(redis_conn, submitted):
    campaign, (task,) = submitted(max_attempts=1)
    forged = {**error(task), "attempt": "1-0123456789abcdef"}
    push(redis_conn, forged, {**ok(task), "attempt": None})
    report = results_collect(connection=redis_conn)
    assert (report.discarded, report.failed) == (2, 0)
    assert ledger(task) == ("queued", 0, 1)
    assert [letter.reason for letter in dead_letters(redis_conn)] == [
        f"job {task.job_id}: attempt id 'None' is not a string of ours",
        f"job {task.job_id}: attempt id '1-0123456789abcdef' was not issued for job "
        f"{task.job_id}"]
    push(redis_conn, ok(task))
    assert results_collect(connection=redis_conn).done == 1


def test_a_result_from_another_worker_than_rq_gave_the_job_to_is_refused(redis_conn, submitted):
    campaign, (task,) = submitted(max_attempts=1)
    redis_conn.hset(f"rq:job:{task.job_id}", mapping={"worker_name": "w-real", "status": "started"})
    push(redis_conn, error(task, worker="w-evil"), ok(task, worker="w-evil"))
    report = results_collect(connection=redis_conn)
    assert (report.discarded, report.done, report.failed) == (2, 0, 0)
    assert ledger(task) == ("queued", 0, 1)
    assert dead_letters(redis_conn, 1)[0].reason == (
        f"job {task.job_id}: sent by worker 'w-evil', but rq gave the job to 'w-real'")
    push(redis_conn, ok(task, worker="w-real"))
    assert results_collect(connection=redis_conn).done == 1
    assert refresh(task).worker == "w-real"
    assert not redis_conn.exists(f"rq:job:{task.job_id}")  # forgotten once done


def test_a_result_for_another_campaigns_record_is_refused_and_counts_no_attempt(
        redis_conn, submitted, make_campaign):
    campaign, (task,) = submitted(max_attempts=1)
    other = make_campaign(name="other", records=1)
    other_record = other.dataset.records.get()
    forged = envelope(task, result={**document(task), "record_id": f"{other_record.record_id}x"})
    push(redis_conn, forged, forged, forged)
    report = results_collect(connection=redis_conn)
    assert (report.discarded, report.failed, report.retried) == (3, 0, 0)
    assert ledger(task) == ("queued", 0, 1)
    assert "the result is for record 'mol-000000x', the task's is 'mol-000000'" in (
        dead_letters(redis_conn, 1)[0].reason)


# --- stale and replayed -----------------------------------------------------------------------

def test_a_failure_replayed_after_the_task_went_pending_counts_once(redis_conn, submitted):
    campaign, (task,) = submitted(max_attempts=3)
    failure = ok(task, arg_sets={"a": failed_part()})
    push(redis_conn, failure)
    assert results_collect(connection=redis_conn).retried == 1
    push(redis_conn, failure, failure)
    report = results_collect(connection=redis_conn)
    assert (report.retried, report.skipped) == (0, 2)
    assert ledger(task) == ("pending", 1, 1)


def test_a_result_of_an_earlier_delivery_is_skipped(redis_conn, submitted):
    campaign, (task,) = submitted(max_attempts=3)
    old = ok(task, arg_sets={"a": arg_set_part(energy=-1.0)})
    Task.objects.filter(pk=task.pk).update(state="pending")  # lost with its worker
    (task,) = deliver(campaign)
    push(redis_conn, old)
    assert results_collect(connection=redis_conn).skipped == 1
    assert ledger(task) == ("queued", 0, 2)
    push(redis_conn, ok(task))
    assert results_collect(connection=redis_conn).done == 1
    assert results_of(campaign)[task.record_id] == {"a": values()}


def test_a_success_beats_a_failure_of_the_same_batch(redis_conn, submitted):
    campaign, (task,) = submitted(max_attempts=1)
    push(redis_conn, error(task), ok(task), error(task))
    report = results_collect(connection=redis_conn)
    assert (report.done, report.failed, report.skipped) == (1, 0, 2)
    assert ledger(task) == ("done", 1, 1)
    assert counts(campaign) == (1, 0)


def test_a_success_at_max_attempts_is_kept_though_a_stale_failure_comes_with_it(
        redis_conn, submitted):
    campaign, (task,) = submitted(max_attempts=2)
    stale = error(task, "ProgramFailed", "first delivery")
    push(redis_conn, stale)
    results_collect(connection=redis_conn)
    (task,) = deliver(campaign)  # delivery 2, the last one allowed
    push(redis_conn, stale, ok(task))
    report = results_collect(connection=redis_conn)
    assert (report.done, report.failed, report.skipped) == (1, 0, 1)
    assert ledger(task) == ("done", 2, 2)
    assert counts(campaign) == (1, 0)


def test_a_late_success_of_the_same_delivery_revives_a_lost_or_failed_task(redis_conn,
                                                                           submitted):
    campaign, (lost, failed) = submitted(records=2, max_attempts=1)
    # The reconciler counted their attempt (worker lost) before the result arrived.
    Task.objects.filter(pk=lost.pk).update(state="pending", attempts=1, error_class="WorkerLost")
    Task.objects.filter(pk=failed.pk).update(state="failed", attempts=1, error_class="WorkerLost")
    push(redis_conn, ok(lost), ok(failed))
    assert results_collect(connection=redis_conn).done == 2
    assert ledger(lost) == ("done", 1, 1) and ledger(failed) == ("done", 1, 1)
    push(redis_conn, ok(lost), error(failed))
    assert results_collect(connection=redis_conn).skipped == 2


def test_a_failure_for_a_task_no_longer_out_is_not_applied(redis_conn, submitted):
    campaign, (task,) = submitted(max_attempts=3)
    Task.objects.filter(pk=task.pk).update(state="cancelled")
    push(redis_conn, error(task), ok(task))
    assert results_collect(connection=redis_conn).skipped == 2
    assert ledger(task) == ("cancelled", 0, 1)


def test_a_batch_replayed_after_a_crash_before_the_trim_changes_nothing_twice(
        redis_conn, submitted, monkeypatch):
    campaign, (good, bad) = submitted(records=2, max_attempts=3)
    push(redis_conn, ok(good), error(bad))
    real = collecting._file_away

    def crash(*args, **kwargs):
        raise SystemExit("killed after the commit")
    monkeypatch.setattr(collecting, "_file_away", crash)
    with pytest.raises(SystemExit):
        results_collect(connection=redis_conn)
    monkeypatch.setattr(collecting, "_file_away", real)
    assert redis_conn.llen(RESULTS_KEY) == 2
    report = results_collect(connection=redis_conn)
    assert (report.done, report.retried, report.skipped) == (0, 0, 2)
    assert ledger(good) == ("done", 1, 1) and ledger(bad) == ("pending", 1, 1)
    assert counts(campaign) == (1, 0)
    assert redis_conn.llen(RESULTS_KEY) == 0


# --- racing collectors ------------------------------------------------------------------------

def test_two_collectors_on_the_same_batch_never_count_twice(redis_conn, submitted, monkeypatch):
    campaign, tasks = submitted(records=3, max_attempts=3)
    push(redis_conn, ok(tasks[0]), ok(tasks[1]), error(tasks[2]))
    real, raced = collecting._check_records, []

    def racing(batch):
        if not raced:  # A has read the batch; B collects the same one meanwhile
            raced.append(None)
            raced[0] = results_collect(connection=redis_conn)
        return real(batch)
    monkeypatch.setattr(collecting, "_check_records", racing)
    first = results_collect(connection=redis_conn)  # A, without a lock to stop it
    second = raced[0]
    assert (second.done, second.retried) == (2, 1)
    assert (first.done, first.retried, first.skipped) == (0, 0, 3)
    assert [ledger(t) for t in tasks] == [("done", 1, 1), ("done", 1, 1), ("pending", 1, 1)]
    assert counts(campaign) == (2, 0)


def test_a_collector_that_lost_its_lock_mid_batch_writes_and_trims_nothing(
        redis_conn, submitted, monkeypatch):
    campaign, tasks = submitted(records=2, max_attempts=3)
    push(redis_conn, ok(tasks[0]), error(tasks[1]))
    mine = LoopLock(connection=redis_conn, key=COLLECTOR_LOCK_KEY)
    mine.acquire()
    real, expired = collecting._check_records, []

    def lock_expires(batch):
        if expired:
            return real(batch)
        expired.append(1)
        redis_conn.delete(COLLECTOR_LOCK_KEY)  # A stalled past the lock's TTL ...
        theirs = LoopLock(connection=redis_conn, key=COLLECTOR_LOCK_KEY)
        theirs.acquire()  # ... and B took over and collected the batch
        results_collect(connection=redis_conn, lock=theirs)
        push(redis_conn, ok(tasks[0]))  # one more, which A must not trim
        return real(batch)
    monkeypatch.setattr(collecting, "_check_records", lock_expires)
    with pytest.raises(LockLost):
        results_collect(connection=redis_conn, lock=mine)
    assert [ledger(t) for t in tasks] == [("done", 1, 1), ("pending", 1, 1)]
    assert counts(campaign) == (1, 0)
    assert redis_conn.llen(RESULTS_KEY) == 1


# --- worker faults ----------------------------------------------------------------------------

def test_a_worker_fault_puts_the_task_back_without_counting_an_attempt(redis_conn, submitted):
    campaign, (task,) = submitted(max_attempts=1)
    part = arg_set_part(status="failed", error={"class": "ProgramNotFound", "message": "no xtb",
                                                "fault": "worker"})
    push(redis_conn, ok(task, arg_sets={"a": part}))
    report = results_collect(connection=redis_conn)
    assert (report.faults, report.failed, report.retried) == (1, 0, 0)
    task = refresh(task)
    assert (task.state, task.attempts, task.worker_faults, task.error_class) == (
        "pending", 0, 1, "ProgramNotFound")
    (fault,) = host_faults(redis_conn)
    assert (fault.host, fault.count, fault.reason) == (
        "node17", 1, "ProgramNotFound: arg set 'a': no xtb")


def test_worker_faults_fail_the_task_after_the_limit(redis_conn, submitted):
    campaign, (task,) = submitted(max_attempts=1)
    for _ in range(WORKER_FAULT_LIMIT):
        push(redis_conn, error(task, "ScratchError", "scratch is read-only", fault="worker"))
        results_collect(connection=redis_conn)
        (task,) = deliver(campaign)
    task = refresh(task)
    assert (task.state, task.attempts, task.worker_faults, task.error_class) == (
        "failed", 0, WORKER_FAULT_LIMIT, "WorkerFault")
    assert task.error_message == ("10 results said the node's environment is broken; the last: "
                                  "ScratchError: scratch is read-only")
    assert counts(campaign) == (0, 1)
    assert host_faults(redis_conn)[0].count == WORKER_FAULT_LIMIT  # host: the worker's name


def test_one_real_failure_among_worker_faults_counts_as_an_attempt(redis_conn, submitted):
    campaign, (task,) = submitted(max_attempts=3)
    campaign.arg_sets.create(name="b", position=1)
    fault = arg_set_part(status="failed", error={"class": "ProgramNotFound", "message": "no xtb",
                                                 "fault": "worker"})
    push(redis_conn, ok(task, arg_sets={"a": fault, "b": failed_part()}))
    assert results_collect(connection=redis_conn).retried == 1
    assert (refresh(task).attempts, refresh(task).worker_faults) == (1, 0)


def test_a_result_for_a_job_no_worker_has_taken_is_a_dead_letter(redis_conn, submitted):
    """The job's hash (attempt id and all) is readable by every worker node; a result pushed for
    it before any worker took it is made up, whatever name it gives."""
    from campaigns.collector.dead_letters import dead_letters
    from campaigns.services.feeding import queues_feed
    from tests.pipeline.collect_helpers import ok, push, refresh, taken_by

    campaign, _ = submitted(records=2)
    Task.objects.filter(campaign=campaign).update(state="pending", delivery=0)
    queues_feed(connection=redis_conn, window=10)
    forged, honest = list(Task.objects.filter(campaign=campaign).order_by("record_id"))
    taken_by(redis_conn, [honest])
    push(redis_conn, ok(forged, worker="evil"), ok(honest))
    report = results_collect(connection=redis_conn)
    assert (report.done, refresh(forged).state, refresh(honest).state) == (1, "queued", "done")
    assert "for a job no worker has taken yet" in dead_letters(redis_conn)[0].reason
