"""campaigns.rq_layout against rq itself: a new rq release that renames a key, a registry or a
field that reconcile reads fails here, not in production as tasks that stay queued forever."""
from __future__ import annotations

from datetime import datetime, timezone

from rq import Queue
from rq.executions import Execution, ExecutionRegistry
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry, FinishedJobRegistry, StartedJobRegistry
from rq.results import get_key as rq_results_key
from rq.serializers import JSONSerializer
from rq.utils import utcformat
from rq.worker import SimpleWorker

from campaigns import rq_layout
from campaigns.services.feeding import rq_job_data
from campaigns.services.reconciling import JOB_FIELDS

JOB_ID = "c12-v3-0123456789abcdef01234567"


def test_it_names_the_keys_as_rq_does(redis_conn):
    assert rq_layout.job_key(JOB_ID) == Job.key_for(JOB_ID)
    assert rq_layout.results_key(JOB_ID) == rq_results_key(JOB_ID)
    assert rq_layout.executions_key(JOB_ID) == ExecutionRegistry(JOB_ID, redis_conn).key
    assert rq_layout.execution_key(JOB_ID, "e1") == Execution("e1", JOB_ID, redis_conn).key
    for registry, name in ((StartedJobRegistry, rq_layout.started_registry_key),
                           (FailedJobRegistry, rq_layout.failed_registry_key),
                           (FinishedJobRegistry, rq_layout.finished_registry_key)):
        assert name("xtb:normal") == registry("xtb:normal", connection=redis_conn).key
    assert rq_layout.JOB_PREFIX == Job.redis_job_namespace_prefix


def test_the_fields_reconcile_reads_are_ones_rq_writes(redis_conn):
    queue = Queue("xtb:normal", connection=redis_conn, serializer=JSONSerializer)
    job = queue.create_job("noop", timeout=30, job_id=JOB_ID)
    job.started_at = job.ended_at = job.last_heartbeat = datetime.now(timezone.utc)
    job.worker_name = "w1"
    written = set(job.to_dict())
    assert set(JOB_FIELDS) | {"data"} <= written
    assert rq_layout.KNOWN_STATUSES == {status.value for status in JobStatus}
    assert rq_layout.STARTED == JobStatus.STARTED.value


def test_it_reads_rq_times_and_rq_s_heartbeat_deadline(redis_conn):
    moment = datetime(2026, 12, 1, 10, 0, 0, 123456, tzinfo=timezone.utc)
    assert rq_layout.parse_time(utcformat(moment)) == moment
    assert rq_layout.parse_time("garbage") is None
    worker = SimpleWorker(["xtb:normal"], connection=redis_conn)
    job = Queue("xtb:normal", connection=redis_conn).create_job("noop", timeout=30)
    assert worker.get_heartbeat_ttl(job) == 30 + rq_layout.HEARTBEAT_GRACE_S


def test_it_reads_started_entries_as_rq_writes_them(redis_conn):
    queue = Queue("xtb:normal", connection=redis_conn, serializer=JSONSerializer)
    job = queue.enqueue("noop", job_id=JOB_ID)
    with redis_conn.pipeline() as pipe:
        execution = Execution.create(job, ttl=90, pipeline=pipe)
        pipe.execute()
    entries = rq_layout.started_entries(redis_conn, "xtb:normal")
    [(member, deadline)] = entries[JOB_ID]
    assert member == execution.composite_key
    assert StartedJobRegistry("xtb:normal", connection=redis_conn).get_job_ids(
        cleanup=False) == [JOB_ID]
    assert abs(deadline - (datetime.now(timezone.utc).timestamp() + 90)) < 5


def test_it_reads_the_attempt_from_the_data_the_feeder_writes(redis_conn):
    redis_conn.hset(rq_layout.job_key("a"), "data", rq_job_data(
        function="noop", kwargs={"record": {"id": "r"}, "attempt": "2-x"}))
    redis_conn.hset(rq_layout.job_key("b"), "data", b"not zlib")
    a, b, gone = rq_layout.job_attempts(redis_conn, ["a", "b", "gone"])
    assert (a, gone) == ("2-x", None)
    assert isinstance(b, ValueError) and "not rq's zlib'd JSON" in str(b)
    # The feeder's data is what rq itself reads back.
    job = Job.fetch("a", connection=redis_conn, serializer=JSONSerializer)
    assert job.kwargs["attempt"] == "2-x"


def test_a_results_key_of_another_type_reads_as_no_result(redis_conn):
    redis_conn.set(rq_layout.results_key(JOB_ID), "not a stream")
    assert rq_layout.latest_failure(redis_conn, JOB_ID) == (None, "")
