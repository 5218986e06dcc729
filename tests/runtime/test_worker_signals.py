"""A worker pre-empted mid-task (SIGTERM from the batch system, SIGINT from a person) gives its
job back at the front of the queue and exits 0; another worker then completes it."""
from __future__ import annotations

import json
import signal
import time

import pytest
from rq import Worker
from rq.job import JobStatus

from tests import servers
from tests.runtime.test_worker import (  # noqa: F401  (start_worker is a fixture)
    NOOP_SPEC, json_queue, sleep_spec, start_worker, wait_until)

SPEC_KEY = "htportal:spec:7:1"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stopped_worker_gives_its_job_back_and_another_completes_it(
        signum, redis_conn, redis_server, start_worker):
    queue = json_queue(redis_conn)
    redis_conn.set(SPEC_KEY, json.dumps(sleep_spec(60)))
    job = queue.enqueue("sleep", record={"id": "mol-1"}, spec_key=SPEC_KEY, job_timeout=300)
    worker = start_worker("--redis-url", redis_server.url, "tasks", name="preempted")
    wait_until(lambda: job.get_status(refresh=True) == JobStatus.STARTED, what="the job to start")
    behind = queue.enqueue("noop", record={"id": "mol-2"}, spec=NOOP_SPEC)
    time.sleep(0.5)

    stopped_at = time.monotonic()
    worker.process.send_signal(signum)

    assert worker.wait(10) == 0, worker.log
    assert time.monotonic() - stopped_at < 5
    assert f"worker preempted: {signum.name}, giving back job {job.id}" in worker.log
    assert queue.job_ids == [job.id, behind.id]
    assert job.get_status(refresh=True) == JobStatus.QUEUED
    assert job.id not in queue.failed_job_registry
    assert job.id not in queue.started_job_registry
    assert job.latest_result() is None
    assert "Traceback" not in worker.log
    assert Worker.all(connection=redis_conn) == []

    # The campaign's spec is shortened so the test need not wait a minute: the job (its id,
    # record and spec key) is the one given back.
    redis_conn.set(SPEC_KEY, json.dumps(sleep_spec(0.2)))
    second = start_worker("--redis-url", redis_server.url, "--max-tasks", "1", "tasks",
                          name="second")
    assert second.wait(30) == 0, second.log
    assert job.get_status(refresh=True) == JobStatus.FINISHED
    assert job.return_value(refresh=True)["arg_sets"]["nap"]["status"] == "ok"
    assert queue.job_ids == [behind.id]


def test_an_idle_worker_stops_at_once_on_sigterm(redis_conn, redis_server, start_worker):
    worker = start_worker("--redis-url", redis_server.url, "tasks", name="idle")
    wait_until(lambda: "Listening on tasks" in worker.log, what="the worker to listen")
    time.sleep(0.3)

    stopped_at = time.monotonic()
    worker.process.send_signal(signal.SIGTERM)

    assert worker.wait(10) == 0, worker.log
    assert time.monotonic() - stopped_at < 3
    assert "worker idle: SIGTERM, stopping" in worker.log
    assert Worker.all(connection=redis_conn) == []


def test_a_worker_waiting_for_redis_at_start_stops_on_sigterm(start_worker):
    port = servers.free_port()
    worker = start_worker("--redis-url", f"redis://127.0.0.1:{port}/0", "tasks", name="early")
    wait_until(lambda: "retrying in 2s" in worker.log, what="two connection attempts")

    worker.process.send_signal(signal.SIGTERM)

    assert worker.wait(5) == 0, worker.log
    assert (f"worker early: Redis at 127.0.0.1:{port} unreachable (Connection refused); "
            "retrying in 1s") in worker.log
    assert "worker early: stopped before starting work" in worker.log
    assert "Traceback" not in worker.log
