"""Poison results against a real `manage.py collect` process: it stays up, and the good result
pushed after the poison is written."""
from __future__ import annotations

import base64
import json
import zlib

import pytest

from campaigns.collector.dead_letters import dead_letters_count
from campaigns.models import Campaign, Task
from campaigns.pipeline_keys import RESULTS_KEY
from tests.pipeline.collect_helpers import (Processes, campaign_submitted, envelope,
                                            ok, push, results_of, states, taken_by, values,
                                            wait_for)

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def processes(redis_server, redis_conn, tmp_path):
    started = Processes(redis_url=redis_server.url, tmp_path=tmp_path)
    yield started
    started.stop_all()


def queued(processes: Processes, campaign: Campaign):
    """A collector that has fed every task of the campaign (attempt ids issued)."""
    collector = processes.collector()
    count = campaign.tasks.count()
    wait_for(lambda: states(campaign) == {"queued": count}, timeout=30,
             what="the tasks to be queued", processes=(collector,))
    tasks = list(campaign.tasks.order_by("record_id"))
    taken_by(processes_redis(processes), tasks)  # as workers taking the jobs would
    return collector, tasks


def processes_redis(processes: Processes):
    from redis import Redis
    return Redis.from_url(processes.redis_url)


def poison(tasks: list[Task]) -> list[bytes]:
    """One poison envelope per task but the last (a 100,000-deep result, NaN, a 200 MB gzip
    bomb declared 10 bytes, a finish time that overflows), and junk nobody can attribute."""
    deep, nan, bomb, when = tasks[:4]
    head = json.dumps(envelope(deep))[:-1]
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = b"".join(packer.compress(bytes(1 << 20)) for _ in range(200)) + packer.flush()
    entry = {"name": "x.out", "arg_set": "a", "source": "stdout", "encoding": "gzip",
             "size": 10, "sha256": "0" * 64, "data": base64.b64encode(zeros).decode()}
    return [
        f'{head}, "result": {"[" * 100_000}{"]" * 100_000}}}'.encode(),
        json.dumps(ok(nan)).replace("-5.07", "NaN").encode(),
        json.dumps(ok(bomb, files=[entry])).encode(),
        json.dumps(ok(when, finished_at="0001-01-01T00:00:00+23:59")).encode(),
        b"\x00junk", b'{"job_id": "c999-v9-nothing", "result": {}}',
    ]


def test_the_collector_process_survives_poison_and_writes_the_next_good_result(
        make_campaign, processes, redis_conn):
    campaign = campaign_submitted(make_campaign, records=5, max_attempts=1)
    collector, tasks = queued(processes, campaign)
    push(redis_conn, *poison(tasks))
    wait_for(lambda: redis_conn.llen(RESULTS_KEY) == 0, timeout=60,
             what="the poison to be taken", processes=(collector,))
    push(redis_conn, ok(tasks[4]))
    wait_for(lambda: Campaign.objects.get(pk=campaign.pk).state == "done", timeout=60,
             what="the good result to be written", processes=(collector,))
    assert collector.popen.poll() is None, collector.log()
    assert results_of(campaign)[tasks[4].record_id] == {"a": values()}
    failed = {t.record_id: (t.error_class, t.attempts) for t in campaign.tasks.filter(
        state="failed")}
    assert failed == {t.record_id: ("BadResult", 1) for t in tasks[:4]}
    assert dead_letters_count(redis_conn) == 2
    log = collector.log()
    assert "Traceback" not in log
    assert "no task has job id 'c999-v9-nothing'" in log


def test_the_collector_process_survives_the_same_poison_after_a_restart(
        make_campaign, processes, redis_conn):
    campaign = campaign_submitted(make_campaign, records=5, max_attempts=1)
    first, tasks = queued(processes, campaign)
    first.stop()
    push(redis_conn, *poison(tasks), ok(tasks[4]))  # waiting at the head when it starts
    second = processes.collector(log_name="collector-second.log")
    wait_for(lambda: Campaign.objects.get(pk=campaign.pk).state == "done", timeout=60,
             what="the campaign to finish", processes=(second,))
    assert second.popen.poll() is None, second.log()
    assert redis_conn.llen(RESULTS_KEY) == 0
    assert set(campaign.tasks.values_list("attempts", flat=True)) == {1}
