"""Collecting: results into records and the ledger in one transaction, then trimmed from Redis."""
from __future__ import annotations

import io
import logging
import threading
import time

import pytest
from django.core.files.storage import default_storage
from django.core.management import CommandError, call_command
from django.db import OperationalError, connection as db_connection
from django.test.utils import CaptureQueriesContext

from campaigns import loops
from campaigns.collector.dead_letters import dead_letters
from campaigns.locks import COLLECTOR_LOCK_KEY, LoopLock
from campaigns.loops import Backoff, CollectorLoop
from campaigns.models import Campaign, Record, Task, TaskMinute
from campaigns.pipeline_keys import RESULTS_KEY
from campaigns.services import collecting
from campaigns.locks import LockLost
from campaigns.services.collecting import results_collect
from campaigns.services.kept_files import kept_file_path
from campaigns.services.submission import campaign_submit
from tests.pipeline.collect_helpers import (arg_set_part, deliver, document, envelope, error,
                                            failed_part, ok, push, refresh, results_of,
                                            taken_by, values)
from workers.runtime.keepfiles import keep_file


@pytest.fixture
def submitted(make_campaign):
    """submitted(records=3, **fields) -> (campaign, its tasks in record order), running."""
    def make(records: int = 3, **fields):
        campaign = make_campaign(records=records, **fields)
        campaign_submit(campaign=campaign)
        campaign.refresh_from_db()
        return campaign, deliver(campaign)
    return make


@pytest.fixture
def storage_dir(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "storage"
    return settings.MEDIA_ROOT


def kept_entry(tmp_path, text: str, name: str = "mol-000000_a.out") -> dict:
    path = tmp_path / "stdout"
    path.write_text(text)
    return keep_file(path=path, name=name, arg_set="a", source="stdout", cap=1 << 20)


def test_it_writes_values_into_records_and_marks_tasks_done(redis_conn, submitted):
    campaign, tasks = submitted(records=3)
    push(redis_conn, *[ok(task) for task in tasks])
    report = results_collect(connection=redis_conn)
    assert (report.taken, report.done, report.retried, report.failed) == (3, 3, 0, 0)
    assert results_of(campaign) == {t.record_id: {"a": values()} for t in tasks}
    task = refresh(tasks[0])
    assert (task.state, task.attempts, task.worker, task.host, task.wall_s, task.cpu_s) == (
        "done", 1, "w-test", "node17", 1.5, 1.25)
    assert task.finished_at.isoformat() == "2026-11-26T10:00:02+00:00"
    assert redis_conn.llen(RESULTS_KEY) == 0


def test_the_campaign_is_done_when_every_task_finished_with_failures_counted(redis_conn, submitted):
    campaign, tasks = submitted(records=2, max_attempts=1)
    push(redis_conn, ok(tasks[0]), ok(tasks[1], arg_sets={"a": failed_part()}))
    report = results_collect(connection=redis_conn)
    assert report.finished_campaigns == [campaign.name]
    assert Campaign.objects.get(pk=campaign.pk).state == "done"
    assert sorted(campaign.tasks.values_list("state", flat=True)) == ["done", "failed"]


def test_a_campaign_with_work_left_stays_running(redis_conn, submitted):
    campaign, tasks = submitted(records=2)
    push(redis_conn, ok(tasks[0]))
    assert results_collect(connection=redis_conn).finished_campaigns == []
    assert Campaign.objects.get(pk=campaign.pk).state == "running"


def test_a_result_delivered_twice_is_written_once(redis_conn, submitted):
    campaign, tasks = submitted(records=1)
    push(redis_conn, ok(tasks[0]), ok(tasks[0], arg_sets={"a": arg_set_part(energy=-1.0)}))
    report = results_collect(connection=redis_conn)
    assert (report.done, report.skipped) == (1, 1)
    push(redis_conn, ok(tasks[0], arg_sets={"a": arg_set_part(energy=-2.0)}))
    assert results_collect(connection=redis_conn).skipped == 1
    assert results_of(campaign)[tasks[0].record_id] == {"a": values(-5.07)}
    assert refresh(tasks[0]).attempts == 1
    assert redis_conn.llen(RESULTS_KEY) == 0


def test_a_failed_result_is_retried_then_failed_after_max_attempts(redis_conn, submitted):
    campaign, tasks = submitted(records=1, max_attempts=2)
    push(redis_conn, ok(tasks[0], arg_sets={"a": failed_part("xtb: exit code 1", "SCF failed")}))
    report = results_collect(connection=redis_conn)
    task = refresh(tasks[0])
    assert (report.retried, task.state, task.attempts) == (1, "pending", 1)
    assert (task.error_class, task.error_message, task.output_tail) == (
        "ProgramFailed", "arg set 'a': xtb: exit code 1", "SCF failed")
    (task,) = deliver(campaign)
    push(redis_conn, error(task, "JobRefused", "spec is not in Redis"))
    report = results_collect(connection=redis_conn)
    task = refresh(task)
    assert (report.failed, task.state, task.attempts, task.error_class, task.error_message) == (
        1, "failed", 2, "JobRefused", "spec is not in Redis")
    assert task.finished_at is not None


@pytest.mark.parametrize("error", [
    {"job_id": None, "result": {"a": {"class": "InputError", "message": "multiplicity 2 is impossible"}}},
    {"job_id": None, "error": {"class": "JobRefused", "message": "function 'os.system' is not allowed"}},
], ids=["input error", "refused job"])
def test_a_failure_another_attempt_would_repeat_fails_at_once(redis_conn, submitted, error):
    campaign, tasks = submitted(records=1, max_attempts=3)
    if "result" in error:
        part = arg_set_part(status="failed", error={**error["result"]["a"], "output_tail": ""})
        push(redis_conn, ok(tasks[0], arg_sets={"a": part}))
    else:
        push(redis_conn, envelope(tasks[0], error=error["error"]))
    report = results_collect(connection=redis_conn)
    task = refresh(tasks[0])
    assert (report.failed, report.retried, task.state, task.attempts) == (1, 0, "failed", 1)


def test_ok_arg_sets_of_a_failed_result_are_written(redis_conn, submitted):
    campaign, tasks = submitted(records=1)
    campaign.arg_sets.create(name="b", position=1)
    push(redis_conn, ok(tasks[0], arg_sets={"a": arg_set_part(), "b": failed_part()}))
    results_collect(connection=redis_conn)
    assert results_of(campaign)[tasks[0].record_id] == {"a": values()}
    assert refresh(tasks[0]).state == "pending"


@pytest.mark.parametrize("make, reason", [
    (lambda t: envelope(t, result="not an object"), "not a JSON object"),
    (lambda t: envelope(t, result=document(t, arg_sets={"zz": arg_set_part()})),
     "unknown arg set 'zz' (known: a)"),
    (lambda t: envelope(t, result=document(t, arg_sets={"a": {"status": "ok"}})),
     "arg set 'a': 'values' is not an object"),
    (lambda t: envelope(t), "the envelope needs exactly one of 'result' and 'error'"),
])
def test_a_malformed_result_fails_its_task_with_the_reason(redis_conn, submitted, make, reason):
    campaign, tasks = submitted(records=2, max_attempts=1)
    push(redis_conn, make(tasks[0]), ok(tasks[1]))
    report = results_collect(connection=redis_conn)
    task = refresh(tasks[0])
    assert (task.state, task.error_class) == ("failed", "BadResult")
    assert reason in task.error_message
    assert (report.done, report.failed) == (1, 1)
    assert results_of(campaign)[tasks[0].record_id] is None


def test_unreadable_results_and_unknown_jobs_are_dead_letters_and_the_batch_goes_on(
        redis_conn, submitted, caplog):
    campaign, tasks = submitted(records=1)
    push(redis_conn, b"{not json", {"job_id": "c999-v1-abc", "result": {}}, ok(tasks[0]))
    with caplog.at_level(logging.WARNING):
        report = results_collect(connection=redis_conn)
    assert (report.taken, report.discarded, report.done) == (3, 2, 1)
    assert "no task has job id 'c999-v1-abc'" in caplog.text
    assert "not JSON" in caplog.text
    assert redis_conn.llen(RESULTS_KEY) == 0
    assert [letter.reason for letter in dead_letters(redis_conn)] == [
        "no task has job id 'c999-v1-abc'",
        "not JSON (Expecting property name enclosed in double quotes: line 1 column 2 (char 1)); "
        "no job id found in it"]


def test_a_result_over_the_cap_fails_its_task(redis_conn, submitted):
    campaign, tasks = submitted(records=1, max_attempts=1)
    push(redis_conn, ok(tasks[0], padding="x" * 5000))
    results_collect(connection=redis_conn, max_result_bytes=4000)
    task = refresh(tasks[0])
    assert (task.state, task.error_class) == ("failed", "BadResult")
    assert "over the cap of 4,000 bytes" in task.error_message


def test_a_record_deleted_meanwhile_fails_its_task_for_good(redis_conn, submitted):
    campaign, tasks = submitted(records=2, max_attempts=3)
    Record.objects.filter(record_id=tasks[0].record_id).delete()
    push(redis_conn, ok(tasks[0]), ok(tasks[1]))
    report = results_collect(connection=redis_conn)
    task = refresh(tasks[0])
    assert (task.state, task.error_class, task.attempts) == ("failed", "RecordMissing", 1)
    assert task.error_message == (f"record 'mol-000000' is no longer in dataset "
                                  f"'{campaign.dataset.name}'")
    assert refresh(tasks[1]).state == "done"
    assert report.finished_campaigns == [campaign.name]


def test_kept_files_are_stored_and_a_second_delivery_overwrites_them(
        redis_conn, submitted, storage_dir, tmp_path):
    campaign, tasks = submitted(records=1)
    push(redis_conn, ok(tasks[0], files=[kept_entry(tmp_path, "first run\n")]))
    assert results_collect(connection=redis_conn).files == 1
    path = kept_file_path(campaign=campaign.name, record_id="mol-000000", name="mol-000000_a.out")
    # docs/stores.md, "Kept files": the record's folder is its id plus a hash of the raw id.
    assert path == f"{campaign.name}/mol-000000-41b8880aaed29932/mol-000000_a.out"
    Task.objects.filter(pk=tasks[0].pk).update(state="pending")  # as after a lost worker
    (task,) = deliver(campaign)  # and the next delivery
    push(redis_conn, ok(task, files=[kept_entry(tmp_path, "second run\n")]))
    results_collect(connection=redis_conn)
    with default_storage.open(path) as stored:
        assert stored.read() == b"second run\n"
    assert sorted(p.name for p in (storage_dir / campaign.name / "mol-000000-41b8880aaed29932")
                  .iterdir()) == [
        "mol-000000_a.out"]


def test_a_kept_file_that_fails_its_checksum_fails_the_task(redis_conn, submitted, storage_dir,
                                                           tmp_path):
    campaign, tasks = submitted(records=1, max_attempts=1)
    entry = kept_entry(tmp_path, "output\n")
    entry["sha256"] = "0" * 64
    push(redis_conn, ok(tasks[0], files=[entry]))
    results_collect(connection=redis_conn)
    task = refresh(tasks[0])
    assert (task.state, task.error_class) == ("failed", "BadResult")
    assert "sha256 does not match" in task.error_message
    assert results_of(campaign)[tasks[0].record_id] is None
    assert not (storage_dir / campaign.name).exists()


def test_a_kept_file_the_worker_could_not_keep_is_passed_over(redis_conn, submitted, storage_dir):
    campaign, tasks = submitted(records=1)
    push(redis_conn, ok(tasks[0], files=[{"name": "x.gbw", "arg_set": "a", "source": "x.gbw",
                                          "error": "not found: x.gbw"}]))
    report = results_collect(connection=redis_conn)
    assert (report.done, report.files) == (1, 0)


def test_hundreds_of_results_take_a_bounded_number_of_queries(redis_conn, submitted):
    campaign, tasks = submitted(records=600)
    push(redis_conn, *[ok(task) for task in tasks])
    with CaptureQueriesContext(db_connection) as queries:
        report = results_collect(connection=redis_conn, limit=500)
    assert (report.taken, report.done) == (500, 500)
    assert len(queries) < 40
    assert redis_conn.llen(RESULTS_KEY) == 100
    assert results_collect(connection=redis_conn, limit=500).done == 100
    assert campaign.tasks.filter(state="done").count() == 600


# --- the per-minute rollup ---------------------------------------------------------------------

def rollup(campaign: Campaign) -> list[tuple[str, int, int]]:
    """(minute as HH:MM in UTC, done, failed) of the campaign's rollup rows, in order."""
    return [(f"{minute:%H:%M}", done, failed) for minute, done, failed in
            TaskMinute.objects.filter(campaign=campaign).order_by("minute")
            .values_list("minute", "done", "failed")]


def test_done_and_failed_for_good_tasks_count_in_the_minute_they_finished(redis_conn, submitted):
    campaign, tasks = submitted(records=4, max_attempts=1)
    push(redis_conn, ok(tasks[0]), ok(tasks[1], finished_at="2026-11-26T10:00:59.9+00:00"),
         ok(tasks[2], arg_sets={"a": failed_part()}),
         ok(tasks[3], finished_at="2026-11-26T10:01:00+00:00"))
    results_collect(connection=redis_conn)
    assert rollup(campaign) == [("10:00", 2, 1), ("10:01", 1, 0)]


def test_a_later_batch_adds_to_the_minute(redis_conn, submitted):
    campaign, tasks = submitted(records=3, max_attempts=1)
    push(redis_conn, ok(tasks[0]))
    results_collect(connection=redis_conn)
    push(redis_conn, ok(tasks[1]), ok(tasks[2], arg_sets={"a": failed_part()}))
    results_collect(connection=redis_conn)
    assert rollup(campaign) == [("10:00", 2, 1)]


def test_a_retried_failure_is_not_counted_until_it_fails_for_good(redis_conn, submitted):
    campaign, tasks = submitted(records=1, max_attempts=2)
    push(redis_conn, ok(tasks[0], arg_sets={"a": failed_part()}))
    assert results_collect(connection=redis_conn).retried == 1
    assert rollup(campaign) == []
    tasks = deliver(campaign)
    push(redis_conn, ok(tasks[0], arg_sets={"a": failed_part()},
                        finished_at="2026-11-26T10:07:00+00:00"))
    assert results_collect(connection=redis_conn).failed == 1
    assert rollup(campaign) == [("10:07", 0, 1)]


def test_a_result_delivered_twice_counts_once(redis_conn, submitted):
    campaign, tasks = submitted(records=1)
    push(redis_conn, ok(tasks[0]), ok(tasks[0]))
    results_collect(connection=redis_conn)
    push(redis_conn, ok(tasks[0]))
    assert results_collect(connection=redis_conn).skipped == 1
    assert rollup(campaign) == [("10:00", 1, 0)]


def test_results_stay_in_redis_when_the_database_fails_mid_batch(redis_conn, submitted,
                                                                 monkeypatch):
    campaign, tasks = submitted(records=3)
    push(redis_conn, *[ok(task) for task in tasks])

    def locked(*args, **kwargs):
        raise OperationalError("database is locked")
    monkeypatch.setattr(collecting, "campaigns_finish", locked)
    with pytest.raises(OperationalError):
        results_collect(connection=redis_conn)
    # Rolled back: the records and the ledger as before, the batch still in Redis.
    assert redis_conn.llen(RESULTS_KEY) == 3
    assert results_of(campaign) == {t.record_id: None for t in tasks}
    assert set(campaign.tasks.values_list("state", flat=True)) == {"queued"}
    assert rollup(campaign) == []
    monkeypatch.undo()
    assert results_collect(connection=redis_conn).done == 3
    assert rollup(campaign) == [("10:00", 3, 0)]


def test_the_batch_is_not_trimmed_by_a_collector_that_lost_its_lock(redis_conn, submitted):
    campaign, tasks = submitted(records=1)
    push(redis_conn, ok(tasks[0]))
    lock = LoopLock(connection=redis_conn, key=COLLECTOR_LOCK_KEY)
    redis_conn.set(COLLECTOR_LOCK_KEY, "otherhost:1:abc")
    with pytest.raises(LockLost):
        results_collect(connection=redis_conn, lock=lock)
    assert redis_conn.llen(RESULTS_KEY) == 1


# --- the loop ---------------------------------------------------------------------------------

def test_the_loop_waits_out_a_database_outage_and_then_writes(redis_conn, submitted, monkeypatch,
                                                             caplog):
    campaign, tasks = submitted(records=3)
    push(redis_conn, *[ok(task) for task in tasks])
    real, failures = collecting.ledger_apply, []

    def flaky(outcomes):
        if len(failures) < 2:
            failures.append(1)
            raise OperationalError("database is locked")
        return real(outcomes)
    monkeypatch.setattr(collecting, "ledger_apply", flaky)
    loop = CollectorLoop(connection=redis_conn, name="t1")
    loop.backoff = Backoff(first=0.05)
    with caplog.at_level(logging.INFO):
        totals = loop.run(once=True)
    assert (totals.results, totals.done) == (3, 3)
    outage = [r.getMessage() for r in caplog.records if "database unavailable" in r.getMessage()]
    assert outage == [
        "collector t1: database unavailable (database is locked); results stay in Redis; "
        "retrying in 0.05 s",
        "collector t1: database unavailable (database is locked); results stay in Redis; "
        "retrying in 0.1 s"]
    assert "collector t1: collected 3 results (3 done) in" in caplog.text
    assert redis_conn.llen(RESULTS_KEY) == 0


def test_the_loop_takes_the_lock_again_after_losing_it_and_loses_no_result(
        redis_conn, submitted, monkeypatch, caplog):
    campaign, tasks = submitted(records=3)
    push(redis_conn, *[ok(task) for task in tasks])
    real, lost = loops.results_collect, []

    def losing(**kwargs):
        if not lost:  # the lock expired during a long step: the first batch must not be trimmed
            lost.append(1)
            redis_conn.delete(COLLECTOR_LOCK_KEY)
            raise LockLost("collector t2: lost the lock")
        return real(**kwargs)
    monkeypatch.setattr(loops, "results_collect", losing)
    loop = CollectorLoop(connection=redis_conn, name="t2")

    def stop_when_collected():
        deadline = time.monotonic() + 20
        while redis_conn.llen(RESULTS_KEY) and time.monotonic() < deadline:
            time.sleep(0.05)
        loop.signals.stopping = True
    stopper = threading.Thread(target=stop_when_collected)
    stopper.start()
    with caplog.at_level(logging.INFO):
        totals = loop.run()
    stopper.join()

    assert lost and (totals.results, totals.done) == (3, 3)
    assert "collector t2: lost the lock; the batch stays in Redis; taking the lock again" in caplog.text
    assert campaign.tasks.filter(state="done").count() == 3


def test_collect_once_says_so_when_another_collector_runs(portal_redis, submitted):
    portal_redis.set(COLLECTOR_LOCK_KEY, "elsewhere:1:abc", ex=60)
    with pytest.raises(CommandError, match=r"another collector \(elsewhere:1:abc\) is running "
                                           r"\(lock htportal:collector-lock\); not collecting"):
        call_command("collect", "--once")


def test_collect_once_collects_and_reports(portal_redis, submitted):
    campaign, tasks = submitted(records=2)
    push(portal_redis, *[ok(task) for task in tasks])
    out = io.StringIO()
    call_command("collect", "--once", "--batch", "1", stdout=out)
    assert out.getvalue().splitlines() == [
        "collected 2 results in 2 batches (2 done, 0 retried, 0 failed)", "Done."]
    assert portal_redis.get(COLLECTOR_LOCK_KEY) is None


def test_a_stale_lock_of_a_dead_process_on_this_host_is_taken_over(redis_conn):
    import socket
    import subprocess
    dead = subprocess.Popen(["true"])
    dead.wait()
    redis_conn.set(COLLECTOR_LOCK_KEY, f"{socket.gethostname()}:{dead.pid}:abc", ex=60)
    lock = LoopLock(connection=redis_conn, key=COLLECTOR_LOCK_KEY)
    lock.acquire()
    assert lock.holder() == lock.token



def test_finished_jobs_leave_nothing_in_redis_and_retried_ones_stay(redis_conn, submitted):
    from campaigns.services.feeding import queues_feed

    campaign, (done, retried) = submitted(records=2)
    queues_feed(connection=redis_conn, window=10)
    taken_by(redis_conn, (done, retried))
    for task in (done, retried):  # as a worker leaves them: finished, in the registry, a result
        redis_conn.hset(f"rq:job:{task.job_id}", "status", "finished")
        redis_conn.zadd("rq:finished:pipe:normal", {task.job_id: 1})
        redis_conn.xadd(f"rq:results:{task.job_id}", {"type": "1"})
    push(redis_conn, ok(done), ok(retried, arg_sets={"a": failed_part()}))

    results_collect(connection=redis_conn)

    assert not redis_conn.exists(f"rq:job:{done.job_id}", f"rq:results:{done.job_id}")
    assert redis_conn.zrange("rq:finished:pipe:normal", 0, -1) == [retried.job_id.encode()]
    assert redis_conn.exists(f"rq:job:{retried.job_id}")
