"""The collector loop: nothing a batch raises ends it, and its lock outlives a long batch."""
from __future__ import annotations

import logging
import time

from campaigns import loops
from campaigns.collector import store_writes
from campaigns.locks import COLLECTOR_LOCK_KEY, LoopLock
from campaigns.loops import Backoff, CollectorLoop
from campaigns.pipeline_keys import RESULTS_KEY
from campaigns.services import collecting
from campaigns.services.collecting import results_collect
from campaigns.services.submission import campaign_submit
from tests.pipeline.collect_helpers import deliver, ok, push, refresh


def queued(make_campaign, records: int):
    campaign = make_campaign(records=records)
    campaign_submit(campaign=campaign)
    return campaign, deliver(campaign)


def test_an_unforeseen_error_in_a_turn_is_logged_and_the_loop_goes_on(
        redis_conn, make_campaign, monkeypatch, caplog):
    campaign, tasks = queued(make_campaign, 2)
    push(redis_conn, *[ok(task) for task in tasks])
    real, raised = loops.results_collect, []

    def buggy(**kwargs):
        if not raised:
            raised.append(1)
            raise KeyError("a bug nobody foresaw")
        return real(**kwargs)
    monkeypatch.setattr(loops, "results_collect", buggy)
    loop = CollectorLoop(connection=redis_conn, name="t3")
    loop.backoff = Backoff(first=0.05)
    with caplog.at_level(logging.INFO):
        totals = loop.run(once=True)
    assert raised and (totals.results, totals.done) == (2, 2)
    assert ("collector t3: collector error ('a bug nobody foresaw'); results stay in Redis; "
            "retrying in 0.05 s") in caplog.text
    assert redis_conn.llen(RESULTS_KEY) == 0


def test_the_lock_is_renewed_inside_a_long_batch(redis_conn, make_campaign, monkeypatch,
                                                 tmp_path, settings):
    settings.MEDIA_ROOT = tmp_path / "storage"
    from workers.runtime.keepfiles import keep_file
    campaign, tasks = queued(make_campaign, 3)
    path = tmp_path / "out"
    path.write_text("x\n")
    push(redis_conn, *[ok(task, files=[keep_file(path=path, name=f"{task.record_id}.out",
                                                 arg_set="a", source="stdout", cap=1 << 20)])
                       for task in tasks])
    real = store_writes.kept_file_save

    def slow(**kwargs):  # a slow storage: each file takes most of the lock's TTL
        time.sleep(0.8)
        return real(**kwargs)
    monkeypatch.setattr(store_writes, "kept_file_save", slow)
    monkeypatch.setattr(collecting, "RENEW_EVERY_S", 0.2)
    lock = LoopLock(connection=redis_conn, key=COLLECTOR_LOCK_KEY, ttl=1)
    lock.acquire()
    report = results_collect(connection=redis_conn, lock=lock)  # ~2.4 s, over twice the TTL
    assert (report.done, report.files) == (3, 3)
    assert lock.holder() == lock.token
    assert redis_conn.llen(RESULTS_KEY) == 0
    assert {refresh(t).state for t in tasks} == {"done"}
