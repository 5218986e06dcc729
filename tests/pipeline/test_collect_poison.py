"""Poison results: each one fails its own task with a clear reason (or waits, when the store
is down), and the batch and the loop go on. Real Redis, real database."""
from __future__ import annotations

import base64
import errno
import json
import tracemalloc
import zlib

import mongomock
import pymongo.errors
import pytest
from django.core.exceptions import SuspiciousFileOperation

from campaigns.collector import store_writes
from campaigns.collector.dead_letters import DEAD_LETTERS_KEEP, dead_letters, dead_letters_count
from campaigns.collector.retries import RETRY_STATE_KEY, retries_waiting, retry_list_key
from campaigns.models import ArgSet, Campaign, Dataset, Record, Task
from campaigns.pipeline_keys import RESULTS_KEY
from campaigns.services.collecting import results_collect
from campaigns.services.submission import campaign_submit
from campaigns.stores import mongodb, store_for
from campaigns.services.kept_files import kept_file_path
from tests.campaigns.test_stores import mongomock_add_update_without_sort
from tests.pipeline.collect_helpers import (arg_set_part, deliver, document, envelope, ok, push,
                                            refresh, results_of, values)
from tests.pipeline.conftest import WATER


@pytest.fixture
def submitted(make_campaign):
    """submitted(records=2, **fields) -> (campaign, its tasks queued on delivery 1)."""
    def make(records: int = 2, **fields):
        campaign = make_campaign(records=records, **fields)
        campaign_submit(campaign=campaign)
        return campaign, deliver(campaign)
    return make


def raw_envelope(task: Task, result_text: str) -> bytes:
    """An envelope whose result is `result_text`, as raw JSON text."""
    head = json.dumps(envelope(task))[:-1]
    return f'{head}, "result": {result_text}}}'.encode()


def assert_failed_alone(redis_conn, campaign, bad: Task, good: Task, reason: str) -> Task:
    """The bad task failed with BadResult and `reason`, once; the good one is done; the list
    is empty."""
    bad, good = refresh(bad), refresh(good)
    assert (bad.state, bad.error_class, bad.attempts) == ("failed", "BadResult", 1)
    assert reason in bad.error_message, bad.error_message
    assert (good.state, good.attempts) == ("done", 1)
    assert results_of(campaign)[bad.record_id] is None
    assert redis_conn.llen(RESULTS_KEY) == 0
    return bad


def test_a_result_nested_100000_levels_deep_fails_its_task(redis_conn, submitted):
    campaign, (bad, good) = submitted(max_attempts=1)
    push(redis_conn, raw_envelope(bad, "[" * 100_000 + "]" * 100_000), ok(good))
    report = results_collect(connection=redis_conn)
    assert (report.done, report.failed) == (1, 1)
    assert_failed_alone(redis_conn, campaign, bad, good,
                        "the result is nested 100,001 levels deep, over the limit of 64")


def test_brackets_inside_strings_do_not_count_as_nesting(redis_conn, submitted):
    campaign, (task, _) = submitted()
    deep_text = {"energy": {"value": -1.0, "unit": "Eh", "note": "[" * 500 + "{" * 500}}
    push(redis_conn, ok(task, arg_sets={"a": {**arg_set_part(), "values": deep_text}}))
    assert results_collect(connection=redis_conn).done == 1
    assert results_of(campaign)[task.record_id] == {"a": deep_text}


@pytest.mark.parametrize("number, reason", [
    ("NaN", "the result holds NaN, which is not a finite number"),
    ("Infinity", "the result holds Infinity, which is not a finite number"),
    ("-Infinity", "the result holds -Infinity, which is not a finite number"),
    ("1e400", "the number 1e400 is out of range (it is not a finite float)"),
    ("1" + "0" * 400, "has 401 digits, over the 19 of a 64-bit integer"),
])
def test_a_number_that_is_not_finite_fails_its_task_at_the_door(redis_conn, submitted, number,
                                                                 reason):
    campaign, (bad, good) = submitted(max_attempts=1)
    text = json.dumps(document(bad)).replace('"value": -5.07', f'"value": {number}')
    assert number in text
    push(redis_conn, raw_envelope(bad, text), ok(good))
    results_collect(connection=redis_conn)
    assert_failed_alone(redis_conn, campaign, bad, good, reason)


@pytest.mark.parametrize("when, reason", [
    ("0001-01-01T00:00:00+23:59", "is not a valid ISO 8601 time in UTC range"),
    ("1970-01-01T00:00:00+00:00", "is out of range (2000 to now)"),
    ("2999-01-01T00:00:00+00:00", "is out of range (2000 to now)"),
    ("yesterday", "is not a valid ISO 8601 time"),
    (12, "finished_at is not an ISO 8601 time"),
])
def test_a_finish_time_out_of_range_fails_its_task(redis_conn, submitted, when, reason):
    campaign, (bad, good) = submitted(max_attempts=1)
    push(redis_conn, ok(bad, finished_at=when), ok(good))
    results_collect(connection=redis_conn)
    assert_failed_alone(redis_conn, campaign, bad, good, reason)


@pytest.mark.parametrize("field, value, reason", [
    ("cpu_s", 10 ** 400, "has 401 digits"),
    ("cpu_s", 1e9, "arg set 'a': cpu_s = 1000000000.0 is out of range (0 to 1e+08 s)"),
    ("wall_s", -1, "arg set 'a': wall_s = -1 is out of range"),
    ("wall_s", "fast", "arg set 'a': wall_s is not a number"),
])
def test_a_time_in_seconds_out_of_range_fails_its_task(redis_conn, submitted, field, value,
                                                       reason):
    campaign, (bad, good) = submitted(max_attempts=1)
    part = {**arg_set_part(), field: value}
    push(redis_conn, ok(bad, arg_sets={"a": part}), ok(good))
    results_collect(connection=redis_conn)
    assert_failed_alone(redis_conn, campaign, bad, good, reason)


def gzip_of_zeros(megabytes: int) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(1 << 20)
    return b"".join(packer.compress(block) for _ in range(megabytes)) + packer.flush()


def test_a_gzip_bomb_declared_small_stops_at_its_declared_size(redis_conn, submitted,
                                                               settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "storage"
    campaign, (bad, good) = submitted(max_attempts=1)
    bomb = {"name": "mol-000000_a.out", "arg_set": "a", "source": "stdout", "encoding": "gzip",
            "size": 10, "compressed_size": 0, "sha256": "0" * 64,
            "data": base64.b64encode(gzip_of_zeros(200)).decode()}
    push(redis_conn, ok(bad, files=[bomb]), ok(good))
    tracemalloc.start()
    try:
        report = results_collect(connection=redis_conn)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20 * 1024 * 1024, f"peak {peak:,} bytes while refusing a 200 MB bomb"
    assert (report.done, report.failed, report.files) == (1, 1, 0)
    assert_failed_alone(redis_conn, campaign, bad, good, "kept file 'mol-000000_a.out': "
                        "at least 11 bytes, the entry says 10 (decoding stopped there)")
    assert not (tmp_path / "storage" / campaign.name).exists()


def test_a_kept_file_declared_over_the_cap_is_refused_before_decoding(redis_conn, submitted,
                                                                      settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "storage"
    campaign, (bad, good) = submitted(max_attempts=1)
    entry = {"name": "big.out", "arg_set": "a", "source": "stdout", "encoding": "gzip",
             "size": 10 ** 12, "sha256": "0" * 64, "data": base64.b64encode(b"x").decode()}
    push(redis_conn, ok(bad, files=[entry]), ok(good))
    results_collect(connection=redis_conn, max_kept_file_bytes=1 << 20)
    assert_failed_alone(redis_conn, campaign, bad, good, "kept file 'big.out': "
                        "1,000,000,000,000 bytes, over the cap of 1,048,576 bytes")


# --- bounded batches --------------------------------------------------------------------------

def test_a_batch_stops_taking_envelopes_at_its_byte_budget(redis_conn, submitted):
    campaign, tasks = submitted(records=4)
    push(redis_conn, *[ok(task, padding="x" * 300_000) for task in tasks])
    report = results_collect(connection=redis_conn, max_batch_bytes=700_000)
    assert (report.taken, report.done) == (2, 2)
    assert redis_conn.llen(RESULTS_KEY) == 2
    assert results_collect(connection=redis_conn, max_batch_bytes=100).taken == 1  # at least one


def test_an_oversized_envelope_fails_its_task_from_its_first_and_last_kilobyte(redis_conn,
                                                                             submitted):
    campaign, (bad, good) = submitted(max_attempts=1)
    push(redis_conn, ok(bad, padding="x" * 2_000_000), ok(good))
    report = results_collect(connection=redis_conn, max_result_bytes=1_000_000)
    assert report.taken == 2
    assert_failed_alone(redis_conn, campaign, bad, good, "over the cap of 1,000,000 bytes")


# --- dead letters -----------------------------------------------------------------------------

def test_an_unattributable_envelope_goes_to_the_dead_letters_not_the_head(redis_conn, submitted):
    campaign, (task, other) = submitted()
    push(redis_conn, b"\xff\xfe not even text", [1, 2, 3], {"job_id": 7}, ok(task))
    report = results_collect(connection=redis_conn, limit=2)
    assert (report.taken, report.discarded, report.done) == (2, 2, 0)
    assert redis_conn.llen(RESULTS_KEY) == 2  # the head moved on
    report = results_collect(connection=redis_conn)
    assert (report.discarded, report.done) == (1, 1)
    assert dead_letters_count(redis_conn) == 3
    newest, middle, oldest = dead_letters(redis_conn, 10)
    assert newest.reason == "no job id in the envelope" and newest.raw == '{"job_id": 7}'
    assert middle.reason == "the envelope is not a JSON object"
    assert oldest.reason.startswith("not JSON")
    assert oldest.bytes == len(b"\xff\xfe not even text")
    assert refresh(task).state == "done" and refresh(other).state == "queued"


def test_the_dead_letters_keep_only_the_newest_thousand(redis_conn, db):
    push(redis_conn, *[f"junk {n}".encode() for n in range(DEAD_LETTERS_KEEP + 5)])
    report = results_collect(connection=redis_conn, limit=2000)
    assert report.discarded == DEAD_LETTERS_KEEP + 5
    assert dead_letters_count(redis_conn) == DEAD_LETTERS_KEEP
    assert dead_letters(redis_conn, 1)[0].raw == f"junk {DEAD_LETTERS_KEEP + 4}"
    assert dead_letters(redis_conn, DEAD_LETTERS_KEEP)[-1].raw == "junk 5"
    assert redis_conn.llen(RESULTS_KEY) == 0


# --- stores and storage -----------------------------------------------------------------------

@pytest.fixture
def mongo_campaign(monkeypatch, db):
    monkeypatch.setattr(mongodb, "client_factory", mongomock.MongoClient)
    mongomock_add_update_without_sort(monkeypatch)
    dataset = Dataset.objects.create(
        name="mongo-waters", store=Dataset.Store.MONGODB,
        mongo_uri="mongodb://mongomock.invalid:27017/", mongo_database="htportal_test",
        mongo_collection="records_poison")
    store = store_for(dataset)
    store.insert(records=[{"id": f"w{i}", "input": {**WATER, "tag": i}} for i in range(2)])
    campaign = Campaign.objects.create(name="mongo-noop", dataset=dataset, function="noop",
                                       output_key="out", queue="pipe")
    ArgSet.objects.create(campaign=campaign, name="a", position=0)
    campaign_submit(campaign=campaign)
    yield campaign, store, deliver(campaign)
    store.collection.drop()


def test_a_store_that_is_down_keeps_its_results_while_other_campaigns_go_on(
        redis_conn, submitted, mongo_campaign, monkeypatch):
    campaign, (sql_task, _) = submitted()
    mongo, store, mongo_tasks = mongo_campaign

    def unreachable(*args, **kwargs):
        raise pymongo.errors.ServerSelectionTimeoutError("mongomock.invalid:27017: timed out")
    real = mongomock.collection.Collection.bulk_write
    monkeypatch.setattr(mongomock.collection.Collection, "bulk_write", unreachable)
    push(redis_conn, *[ok(task) for task in mongo_tasks], ok(sql_task))

    report = results_collect(connection=redis_conn)

    assert (report.taken, report.done, report.deferred, report.failed) == (3, 1, 2, 0)
    assert refresh(sql_task).state == "done"
    assert [(t.state, t.attempts) for t in map(refresh, mongo_tasks)] == [("queued", 0)] * 2
    assert redis_conn.llen(RESULTS_KEY) == 0
    key = retry_list_key(mongo.dataset_id)
    assert redis_conn.llen(key) == 2
    waiting = retries_waiting(redis_conn)[mongo.dataset_id]
    assert waiting.failures == 1 and "did not answer within" in waiting.reason
    # While it waits, a new result of that dataset joins its list without a try.
    Task.objects.filter(pk=mongo_tasks[0].pk).update(state="running")
    push(redis_conn, ok(mongo_tasks[0]))
    assert results_collect(connection=redis_conn).deferred == 1
    assert redis_conn.llen(key) == 3

    monkeypatch.setattr(mongomock.collection.Collection, "bulk_write", real)  # it is back
    redis_conn.hset(RETRY_STATE_KEY, str(mongo.dataset_id),
                    json.dumps({"failures": 1, "next_at": 0, "reason": "x"}))
    report = results_collect(connection=redis_conn)
    assert (report.done, report.skipped) == (2, 1)  # one task's result came twice
    assert [(t.state, t.attempts) for t in map(refresh, mongo_tasks)] == [("done", 1)] * 2
    assert store.collection.find_one({"_id": "w1"})["out"] == {"a": values()}
    assert redis_conn.llen(key) == 0 and not redis_conn.hexists(RETRY_STATE_KEY,
                                                                 str(mongo.dataset_id))


def test_a_result_the_store_refuses_fails_that_task_and_its_neighbours_are_written(
        redis_conn, submitted):
    campaign, (bad, good) = submitted(max_attempts=3)
    Record.objects.filter(dataset=campaign.dataset, record_id=bad.record_id).update(
        results={"out": 5})  # not an object: the SQL store refuses to write out.a into it
    push(redis_conn, ok(bad), ok(good))
    report = results_collect(connection=redis_conn)
    assert (report.done, report.retried) == (1, 1)
    bad, good = refresh(bad), refresh(good)
    assert (bad.state, bad.error_class, bad.attempts) == ("pending", "StoreError", 1)
    assert "holds something other than an object" in bad.error_message
    assert good.state == "done"
    assert results_of(campaign) == {bad.record_id: 5, good.record_id: {"a": values()}}


def test_an_output_key_the_store_refuses_fails_the_task_with_store_error(redis_conn, submitted):
    campaign, (bad, _) = submitted(max_attempts=1)
    Campaign.objects.filter(pk=campaign.pk).update(output_key="input")  # reserved
    push(redis_conn, ok(bad))
    report = results_collect(connection=redis_conn)
    bad = refresh(bad)
    assert (report.failed, bad.state, bad.error_class) == (1, "failed", "StoreError")
    assert "output key 'input' is reserved" in bad.error_message
    assert Record.objects.get(dataset=campaign.dataset, record_id=bad.record_id).input == {
        **WATER, "tag": 0, "note": "x" * 10}


@pytest.fixture
def kept(tmp_path):
    from workers.runtime.keepfiles import keep_file
    path = tmp_path / "stdout"
    path.write_text("output\n")
    return keep_file(path=path, name="mol-000000_a.out", arg_set="a", source="stdout",
                     cap=1 << 20)


def test_a_storage_that_is_down_keeps_the_results_and_writes_them_later(
        redis_conn, submitted, monkeypatch, kept, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "storage"
    campaign, (task, _) = submitted()
    real = store_writes.kept_file_save

    def full(**kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(store_writes, "kept_file_save", full)
    push(redis_conn, ok(task, files=[kept]))
    report = results_collect(connection=redis_conn)
    assert (report.deferred, report.done) == (1, 0)
    assert (refresh(task).state, refresh(task).attempts) == ("queued", 0)
    assert "No space left on device" in retries_waiting(redis_conn)[campaign.dataset_id].reason
    monkeypatch.setattr(store_writes, "kept_file_save", real)
    redis_conn.hset(RETRY_STATE_KEY, str(campaign.dataset_id),
                    json.dumps({"failures": 1, "next_at": 0, "reason": "x"}))
    report = results_collect(connection=redis_conn)
    assert (report.done, report.files) == (1, 1)
    stored = kept_file_path(campaign=campaign.name, record_id=task.record_id,
                            name="mol-000000_a.out")
    assert (tmp_path / "storage" / stored).read_text() == "output\n"


def test_a_kept_file_the_storage_refuses_fails_its_task_with_storage_error(
        redis_conn, submitted, monkeypatch, kept):
    campaign, (bad, good) = submitted(max_attempts=1)

    def refuse(**kwargs):
        raise SuspiciousFileOperation("Detected path traversal attempt")
    monkeypatch.setattr(store_writes, "kept_file_save", refuse)
    push(redis_conn, ok(bad, files=[kept]), ok(good))
    report = results_collect(connection=redis_conn)
    bad = refresh(bad)
    assert (report.done, report.failed) == (1, 1)
    assert (bad.state, bad.error_class) == ("failed", "StorageError")
    assert bad.error_message == ("kept file 'mol-000000_a.out' could not be stored: "
                                 "SuspiciousFileOperation: Detected path traversal attempt")
