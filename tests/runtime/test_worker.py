"""The opportunistic worker as a real process against the test Redis: results, limits, refusal,
heartbeats, passwords and a Redis restart. Signals are in test_worker_signals.py."""
from __future__ import annotations

import functools
import json
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import pytest
from redis import Redis
from rq import Queue, Worker
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from tests import servers
from workers.runtime import config, registry


class PickleSerializer:
    """rq's pickle serializer, spelled out: what an attacker with the Redis URL would write."""

    dumps = staticmethod(functools.partial(pickle.dumps, protocol=pickle.HIGHEST_PROTOCOL))
    loads = staticmethod(pickle.loads)


ROOT = Path(__file__).resolve().parents[2]
NOOP_SPEC = {"function": "noop", "arg_sets": [{"name": "a", "parameters": {}}]}


def sleep_spec(seconds: float, job_timeout: int = 600) -> dict:
    return {"function": "sleep", "job_timeout": job_timeout,
            "arg_sets": [{"name": "nap", "parameters": {"seconds": seconds}}]}


class WorkerProcess:
    """`python -m workers.runtime.worker` in a subprocess, its log in a file."""

    def __init__(self, tmp_path: Path, args: list, env: Optional[dict] = None, name: str = "w1"):
        self.name = name
        self.log_path = tmp_path / f"{name}.log"
        environment = {**os.environ, "HTPORTAL_HEARTBEAT_INTERVAL": "1", **(env or {})}
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "workers.runtime.worker", "--name", name, *args],
                cwd=ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT)

    @property
    def log(self) -> str:
        return self.log_path.read_text()

    def wait(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            pytest.fail(f"worker still running after {timeout}s; its log:\n{self.log}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def start_worker(tmp_path):
    started = []

    def start(*args, env: Optional[dict] = None, name: str = "w1") -> WorkerProcess:
        started.append(WorkerProcess(tmp_path, list(args), env, name))
        return started[-1]

    yield start
    for worker in started:
        worker.stop()


def wait_until(predicate: Callable[[], object], timeout: float = 15.0, what: str = "") -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout}s waiting for {what or predicate}")


def json_queue(conn: Redis, name: str = "tasks") -> Queue:
    return Queue(name, connection=conn, serializer=JSONSerializer)


def enqueue(queue: Queue, function: str, record_id: str = "mol-1", **kwargs) -> Job:
    options = {key: kwargs.pop(key) for key in ("job_timeout",) if key in kwargs}
    kwargs.setdefault("spec", NOOP_SPEC)
    return queue.enqueue(function, record={"id": record_id, "input": {}}, **kwargs, **options)


def replies(conn: Redis, key: str = "replies") -> list:
    return [json.loads(raw) for raw in conn.lrange(key, 0, -1)]


def test_it_runs_noop_jobs_and_exits_after_max_tasks(redis_conn, redis_server, start_worker):
    queue = json_queue(redis_conn)
    jobs = [enqueue(queue, "noop", f"mol-{i}", reply_to="replies") for i in range(5)]

    worker = start_worker("--redis-url", redis_server.url, "--max-tasks", "3", "tasks")

    assert worker.wait(30) == 0, worker.log
    done, waiting = jobs[:3], jobs[3:]
    for i, job in enumerate(done):
        result = job.return_value(refresh=True)
        assert (result["status"], result["record_id"], result["function"]) == \
            ("ok", f"mol-{i}", "noop")
        assert result["arg_sets"]["a"]["status"] == "ok"
    assert [r["job_id"] for r in replies(redis_conn)] == [job.id for job in done]
    assert replies(redis_conn)[0]["result"]["record_id"] == "mol-0"
    assert queue.job_ids == [job.id for job in waiting]
    assert "finished executing 3 jobs, quitting" in worker.log


def test_it_exits_after_max_idle_seconds(redis_conn, redis_server, start_worker):
    started = time.monotonic()
    worker = start_worker("--redis-url", redis_server.url, "--max-idle", "2", "tasks")

    assert worker.wait(20) == 0, worker.log
    assert 2 <= time.monotonic() - started < 10
    assert "idle for 2 seconds, quitting" in worker.log


def test_max_runtime_puts_back_a_longer_job_untouched_and_exits(redis_conn, redis_server,
                                                                start_worker):
    queue = json_queue(redis_conn)
    long_job = enqueue(queue, "sleep", spec=sleep_spec(1), job_timeout=600)
    behind = enqueue(queue, "noop")
    before = redis_conn.hgetall(long_job.key)

    worker = start_worker("--redis-url", redis_server.url, "--max-runtime", "60", "tasks")

    assert worker.wait(20) == 0, worker.log
    assert queue.job_ids == [long_job.id, behind.id]
    assert redis_conn.hgetall(long_job.key) == before
    assert long_job.get_status(refresh=True) == JobStatus.QUEUED
    assert redis_conn.llen(queue.intermediate_queue_key) == 0
    assert f"job {long_job.id} needs up to 600s" in worker.log


@pytest.fixture
def import_trap(tmp_path):
    """A module that creates a file when imported, on the worker's PYTHONPATH."""
    (tmp_path / "htportal_trap.py").write_text(
        f"open({str(tmp_path / 'imported')!r}, 'w').close()\n"
        "def run(**kwargs):\n"
        f"    open({str(tmp_path / 'ran')!r}, 'w').close()\n"
    )
    return tmp_path


def test_it_refuses_functions_outside_the_registry(redis_conn, redis_server, start_worker,
                                                   tmp_path, import_trap):
    queue = json_queue(redis_conn)
    marker = tmp_path / "pwned"
    refused = [
        queue.enqueue("os.system", f"touch {marker}", reply_to="replies"),
        queue.enqueue("subprocess.call", ["touch", str(marker)]),
        enqueue(queue, "htportal_trap.run", reply_to="replies"),
    ]
    # An explicit pickle serializer: in this (Django) process rq's default is JSON
    # (htportal/nopickle.py), so Queue() alone would no longer write a pickle.
    pickled = Queue("tasks", connection=redis_conn, serializer=PickleSerializer).enqueue(
        "noop", record={"id": "mol-1"}, spec=NOOP_SPEC)
    good = enqueue(queue, "noop")

    worker = start_worker("--redis-url", redis_server.url, "--max-tasks", "5", "tasks",
                          env={"PYTHONPATH": str(import_trap)})

    assert worker.wait(30) == 0, worker.log
    known = ", ".join(registry.task_names())
    for job, name in zip(refused, ["os.system", "subprocess.call", "htportal_trap.run"]):
        assert job.get_status(refresh=True) == JobStatus.FAILED
        assert job.id in queue.failed_job_registry
        message = f"function '{name}' is not allowed (known: {known})"
        assert job.latest_result().exc_string == message
        assert f"job {job.id} refused: {message}" in worker.log
    assert not marker.exists()
    assert not (import_trap / "imported").exists() and not (import_trap / "ran").exists()
    assert [r["error"]["message"] for r in replies(redis_conn)] == [
        f"function 'os.system' is not allowed (known: {known})",
        f"function 'htportal_trap.run' is not allowed (known: {known})",
    ]
    assert pickled.latest_result().exc_string == (
        "job data is not RQ JSON (pickled jobs are not accepted)")
    assert good.get_status(refresh=True) == JobStatus.FINISHED
    assert "Traceback" not in worker.log


def test_it_refuses_a_job_whose_spec_is_missing(redis_conn, redis_server, start_worker):
    queue = json_queue(redis_conn)
    job = queue.enqueue("noop", record={"id": "mol-1"}, spec_key="htportal:spec:9:1")

    worker = start_worker("--redis-url", redis_server.url, "--max-tasks", "1", "tasks")

    assert worker.wait(30) == 0, worker.log
    assert job.latest_result().exc_string == (
        "spec 'htportal:spec:9:1' is not in Redis (expired, or never written)")


def test_it_fetches_a_spec_once_per_worker(redis_conn, redis_server, start_worker):
    queue = json_queue(redis_conn)
    redis_conn.set("htportal:spec:1:1", json.dumps(NOOP_SPEC))
    jobs = [queue.enqueue("noop", record={"id": f"mol-{i}"}, spec_key="htportal:spec:1:1")
            for i in range(3)]
    redis_conn.config_resetstat()

    worker = start_worker("--redis-url", redis_server.url, "--max-tasks", "3", "tasks")

    assert worker.wait(30) == 0, worker.log
    assert [job.return_value(refresh=True)["status"] for job in jobs] == ["ok"] * 3
    assert redis_conn.info("commandstats")["cmdstat_get"]["calls"] == 1


def started_expiry(conn: Redis, queue: Queue, job_id: str) -> float:
    """The StartedJobRegistry score (expiry time) of the job's execution."""
    entries = conn.zrange(queue.started_job_registry.key, 0, -1, withscores=True)
    return next(score for member, score in entries if member.decode().startswith(job_id))


def test_worker_all_shows_the_running_job_and_heartbeats_advance(redis_conn, redis_server,
                                                                  start_worker):
    queue = json_queue(redis_conn)
    job = enqueue(queue, "sleep", spec=sleep_spec(30), job_timeout=120)
    worker = start_worker("--redis-url", redis_server.url, "tasks", name="hb-worker")

    def running_worker():
        found = [w for w in Worker.all(connection=redis_conn) if w.name == "hb-worker"]
        return found and found[0].get_current_job_id() == job.id and found[0]

    seen = wait_until(running_worker, what="the worker to show its current job")
    first_beat, first_expiry = seen.last_heartbeat, started_expiry(redis_conn, queue, job.id)

    time.sleep(3)
    seen.refresh()
    assert seen.last_heartbeat > first_beat
    assert seen.get_current_job_id() == job.id
    assert float(redis_conn.hget(seen.key, "current_job_working_time")) >= 1
    assert job.get_status(refresh=True) == JobStatus.STARTED
    job.refresh()
    assert job.last_heartbeat > first_beat
    assert started_expiry(redis_conn, queue, job.id) > first_expiry
    worker.stop()


def test_a_bad_setting_stops_the_worker_with_one_line_naming_it(redis_server, start_worker):
    worker = start_worker("--redis-url", redis_server.url, "tasks",
                          env={"HTPORTAL_HEARTBEAT_INTERVAL": "often"})

    assert worker.wait(20) == 2
    assert worker.log.strip().endswith(
        "ERROR worker w1: HTPORTAL_HEARTBEAT_INTERVAL='often' is not a number of seconds")


@pytest.mark.parametrize("env, message", [
    ({"HTPORTAL_KEEP_SCRATCH": "maybe"},
     "HTPORTAL_KEEP_SCRATCH='maybe' is not a yes/no value (use 1/0, true/false, yes/no)"),
    ({"HTPORTAL_KEEP_FILE_CAP": "16M"}, "HTPORTAL_KEEP_FILE_CAP='16M' is not a whole number"),
    ({"HTPORTAL_KEEP_FILE_CAP": "0"}, "HTPORTAL_KEEP_FILE_CAP='0' must be greater than 0"),
    ({"HTPORTAL_REDIS_URL": "http://:pw@host"},
     "HTPORTAL_REDIS_URL is not a redis://, rediss:// or unix:// URL"),
])
def test_config_names_the_variable_with_a_bad_value(env, message):
    with pytest.raises(config.ConfigError) as raised:
        config.load(env)
    assert str(raised.value) == message


def test_config_defaults_with_nothing_set():
    settings = config.load({})
    assert (settings.redis_url, settings.keep_scratch, settings.keep_file_cap,
            settings.heartbeat_interval) == (None, False, 16 * 1024 * 1024, 10.0)


@pytest.fixture
def password_redis():
    server = servers.start_redis(password="s3cret-pw")
    yield server
    server.stop()


def test_it_works_with_a_password_from_the_environment(password_redis, start_worker):
    conn = Redis.from_url(password_redis.url)
    job = enqueue(json_queue(conn), "noop")

    worker = start_worker("--max-tasks", "1", "tasks",
                          env={"HTPORTAL_REDIS_URL": password_redis.url})

    assert worker.wait(30) == 0, worker.log
    assert job.return_value(refresh=True)["status"] == "ok"
    assert "s3cret-pw" not in worker.log
    conn.close()


@pytest.fixture
def tls_redis(tmp_path):
    """A redis-server that speaks TLS only (self-signed certificate for 127.0.0.1) and wants a
    password: the URL a worker gets is rediss://:PASSWORD@127.0.0.1:PORT/0?ssl_ca_certs=CERT."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    port = servers.free_port()
    process = subprocess.Popen(
        ["redis-server", "--port", "0", "--tls-port", str(port), "--tls-cert-file", str(cert),
         "--tls-key-file", str(key), "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no",
         "--requirepass", "tls-pw", "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    servers.wait_for_port(port)
    yield f"rediss://:tls-pw@127.0.0.1:{port}/0?ssl_ca_certs={cert}"
    process.terminate()
    process.wait(10)


def test_it_works_over_tls(tls_redis, start_worker):
    conn = Redis.from_url(tls_redis)
    job = enqueue(json_queue(conn), "noop")

    worker = start_worker("--max-tasks", "1", "tasks", env={"HTPORTAL_REDIS_URL": tls_redis})

    assert worker.wait(30) == 0, worker.log
    assert job.return_value(refresh=True)["status"] == "ok"
    assert "tls-pw" not in worker.log
    conn.close()


def test_a_wrong_password_gives_one_clear_error_line(password_redis, start_worker):
    url = password_redis.url.replace("s3cret-pw", "wrong-pw")

    worker = start_worker("--redis-url", url, "tasks")

    assert worker.wait(20) == 1
    lines = worker.log.strip().splitlines()
    assert len(lines) == 1, worker.log
    assert lines[0].endswith(f"ERROR worker w1: Redis at 127.0.0.1:{password_redis.port} refused "
                             "the credentials (invalid username-password pair or user is disabled)")
    assert "wrong-pw" not in worker.log


def test_it_waits_for_a_restarted_redis_and_goes_on(redis_conn, redis_server, start_worker):
    queue = json_queue(redis_conn)
    first = enqueue(queue, "noop")
    worker = start_worker("--redis-url", redis_server.url, "tasks", name="restart-worker")
    wait_until(lambda: first.get_status(refresh=True) == JobStatus.FINISHED, what="first job")

    redis_server.stop()
    unreachable = (f"worker restart-worker: Redis at 127.0.0.1:{redis_server.port} unreachable "
                   "(Connection refused); retrying in 2s")
    wait_until(lambda: unreachable in worker.log, timeout=20, what="the retry log lines")
    redis_server.restart_empty()

    second = enqueue(json_queue(redis_conn), "noop")
    wait_until(lambda: second.get_status(refresh=True) == JobStatus.FINISHED, timeout=30,
               what="a job after the restart")
    assert "worker restart-worker: registered again" in worker.log
    assert [w.name for w in Worker.all(connection=redis_conn)] == ["restart-worker"]
    assert worker.process.poll() is None
    assert "Traceback" not in worker.log


def test_a_campaign_queue_name_serves_its_priorities_highest_first(redis_conn, redis_server,
                                                                    start_worker):
    low = enqueue(json_queue(redis_conn, "xtb:low"), "noop", "low", reply_to="replies")
    high = enqueue(json_queue(redis_conn, "xtb:high"), "noop", "high", reply_to="replies")
    plain = enqueue(json_queue(redis_conn, "xtb"), "noop", "plain", reply_to="replies")

    worker = start_worker("--redis-url", redis_server.url, "--max-tasks", "3", "xtb")

    assert worker.wait(30) == 0, worker.log
    assert [r["job_id"] for r in replies(redis_conn)] == [high.id, low.id, plain.id]
