"""The local pool: real worker processes on this machine, started by one scaler step."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from django.core.management import call_command
from redis import Redis
from rq import Queue
from rq.serializers import JSONSerializer

from campaigns.redis_acl import worker_rule
from tests import servers
from tests.pipeline.collect_helpers import wait_for
from workers.models import ScalerEvent, WorkerPool
from workers.scaler.base import CommandResult, ScalerError
from workers.scaler.credentials import worker_credentials
from workers.scaler.local import LocalAdapter, LocalRemote, local_pool_ensure
from workers.scaler.loop import ScaleLoop

PASSWORD = "local-Pa55"
WORKER_PASSWORD = "wkr-only-5ecret"
NOOP_SPEC = {"function": "noop", "arg_sets": [{"name": "a", "parameters": {}}]}


@pytest.fixture(scope="module")
def locked_redis():
    """A redis-server that wants a password, as a production one does."""
    server = servers.start_redis(password=PASSWORD)
    yield server
    server.stop()


@pytest.fixture
def locked_conn(locked_redis, settings):
    settings.REDIS_URL = locked_redis.url
    conn = Redis.from_url(locked_redis.url)
    conn.flushdb()
    yield conn
    conn.flushdb()
    conn.close()


@pytest.fixture
def local_pool(db, tmp_path):
    pool = WorkerPool.objects.create(name="here", kind="local", queues="scalertest",
                                     max_workers=2, max_waiting_jobs=2, max_idle=1,
                                     work_dir=str(tmp_path / "here"), removal_tries=2)
    yield pool
    for pid_file in (tmp_path / "here" / "pids").glob("*.pid"):
        try:
            os.kill(int(pid_file.read_text()), 15)
        except (ProcessLookupError, ValueError):
            pass


def wait_until(predicate, timeout: float = 30.0, what: str = ""):
    return wait_for(predicate, timeout=timeout, what=what)


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def test_it_starts_workers_that_run_jobs_and_leave_when_idle(locked_conn, local_pool):
    queue = Queue("scalertest:normal", connection=locked_conn, serializer=JSONSerializer)
    jobs = [queue.enqueue("noop", record={"id": f"mol-{i}", "input": {}}, spec=NOOP_SPEC)
            for i in range(6)]
    loop = ScaleLoop(connection=locked_conn, pool_name="here")

    loop.run(once=True)

    pids_dir = Path(local_pool.work_dir) / "pids"
    pids = [int(path.read_text()) for path in pids_dir.glob("*.pid")]
    assert len(pids) == 2
    event = ScalerEvent.objects.get(pool=local_pool, kind="submit")
    assert event.message.startswith("submitted 2 batch jobs × 1 worker (")
    assert event.message.endswith("pool here: backlog 6, live 0, waiting 0 (cap 2): "
                                  "submit 2 batch jobs × 1 worker")
    env_file = Path(local_pool.work_dir) / "worker.env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    # No worker user in this Redis: a local pool gets the portal's URL, and an event says so.
    assert env_file.read_text() == f"HTPORTAL_REDIS_URL={locked_conn_url(locked_conn)}\n"
    warning = ScalerEvent.objects.get(pool=local_pool, kind="error")
    assert warning.message == (
        "pool here: Redis refuses the worker user 'htportal-worker' (invalid username-password "
        "pair or user is disabled); workers get the portal's own Redis credentials "
        "(HTPORTAL_WORKER_REDIS_FALLBACK=local): run `manage.py redis_acl --apply` to create "
        "the worker user (docs/security-redis.md)")
    assert event.details["redis_user"] == "default"
    assert event.details["redis_warning"] == warning.message
    wait_until(lambda: "workers.runtime.worker" in cmdline(pids[0]), 10, "the worker to exec")
    assert PASSWORD not in cmdline(pids[0]) and PASSWORD not in cmdline(pids[1])

    wait_until(lambda: all(job.get_status(refresh=True) == "finished" for job in jobs),
               what="the jobs to finish")
    assert jobs[0].return_value()["status"] == "ok"
    # --max-idle 1: both leave on their own, exit 0, and the pool's view is empty again.
    adapter = LocalAdapter()  # a scaler that did not start them sees them go too
    wait_until(lambda: not adapter.view(LocalRemote(), work_dir=local_pool.work_dir).jobs,
               what="the workers to leave")
    assert not list(pids_dir.glob("*"))
    logs = list((Path(local_pool.work_dir) / "logs").glob("*.log"))
    assert len(logs) == 2
    assert PASSWORD not in "".join(log.read_text() for log in logs)


def locked_conn_url(conn: Redis) -> str:
    kwargs = conn.connection_pool.connection_kwargs
    return f"redis://:{PASSWORD}@127.0.0.1:{kwargs['port']}/0"


@pytest.fixture
def worker_user(locked_conn, settings):
    """The worker user's rules applied to the locked Redis, as `redis_acl --apply` does."""
    settings.WORKER_REDIS_USER, settings.WORKER_REDIS_PASSWORD = "htportal-worker", WORKER_PASSWORD
    rule = worker_rule(user="htportal-worker", password=WORKER_PASSWORD)
    locked_conn.execute_command("ACL", "SETUSER", rule.user, *rule.words)
    locked_conn.execute_command("ACL", "LOG", "RESET")  # earlier tests' refused logins
    yield rule.user
    locked_conn.execute_command("ACL", "DELUSER", rule.user)


def test_its_workers_get_the_worker_users_url_not_the_portals_password(
        locked_redis, locked_conn, worker_user, local_pool):
    queue = Queue("scalertest:normal", connection=locked_conn, serializer=JSONSerializer)
    jobs = [queue.enqueue("noop", record={"id": f"mol-{i}", "input": {}}, spec=NOOP_SPEC,
                          reply_to="htportal:results") for i in range(2)]

    ScaleLoop(connection=locked_conn, pool_name="here").run(once=True)

    env_file = Path(local_pool.work_dir) / "worker.env"
    assert env_file.read_text() == (f"HTPORTAL_REDIS_URL=redis://htportal-worker:{WORKER_PASSWORD}"
                                    f"@127.0.0.1:{locked_redis.port}/0\n")
    assert PASSWORD not in env_file.read_text()
    [submit] = ScalerEvent.objects.filter(pool=local_pool)
    assert submit.kind == "submit" and submit.details["redis_user"] == "htportal-worker"
    assert "redis_warning" not in submit.details
    # The workers, logged in as the worker user, run the jobs and push their envelopes.
    wait_until(lambda: all(job.get_status(refresh=True) == "finished" for job in jobs),
               what="the jobs to finish")
    assert locked_conn.llen("htportal:results") == 2
    entries = locked_conn.execute_command("ACL", "LOG")
    assert {dict(zip(e[::2], e[1::2]))[b"object"] for e in entries} <= {b"client|list"}


def test_a_slurm_pool_is_refused_the_portals_password_before_anything_is_sent(
        locked_conn, db):
    pool = WorkerPool.objects.create(name="far", kind="slurm", host="127.0.0.1",
                                     port=servers.free_port(), user="me", queues="scalertest",
                                     host_key="ssh-ed25519 AAAA")
    Queue("scalertest:normal", connection=locked_conn, serializer=JSONSerializer).enqueue(
        "noop", record={"id": "mol-1", "input": {}}, spec=NOOP_SPEC)

    ScaleLoop(connection=locked_conn, pool_name="far").run(once=True)

    [error] = ScalerEvent.objects.filter(pool=pool)
    assert (error.kind, error.message) == ("error", (
        "pool far: Redis refuses the worker user 'htportal-worker' (invalid username-password "
        "pair or user is disabled); not handing its workers the portal's own Redis credentials "
        "(HTPORTAL_WORKER_REDIS_FALLBACK=local: local pools only): run `manage.py redis_acl "
        "--apply` to create the worker user (docs/security-redis.md)"))


@pytest.mark.parametrize("mode, kind, handed", [
    ("never", "local", False), ("local", "condor", False), ("always", "condor", True)])
def test_the_fallback_setting_decides_who_gets_the_portals_password(
        locked_conn, db, settings, mode, kind, handed):
    settings.WORKER_REDIS_FALLBACK = mode
    pool = WorkerPool(name="p", kind=kind)
    if not handed:
        with pytest.raises(ScalerError, match=f"HTPORTAL_WORKER_REDIS_FALLBACK={mode}: "):
            worker_credentials(pool=pool)
        return
    credentials = worker_credentials(pool=pool)
    assert credentials.url == settings.REDIS_URL
    assert "workers get the portal's own Redis credentials" in credentials.warning


def test_a_pool_url_with_the_portals_password_counts_as_the_portals(locked_conn, db):
    pool = WorkerPool(name="p", kind="slurm", redis_url=locked_conn_url(locked_conn))
    with pytest.raises(ScalerError, match=r"^pool p: the pool's Redis URL holds the portal's own "
                                          r"user and password \(blank it to hand the worker "
                                          r"user's\); not handing"):
        worker_credentials(pool=pool)
    other = WorkerPool(name="q", kind="slurm", redis_url="redis://w:other@127.0.0.1:1/0")
    assert worker_credentials(pool=other).url == "redis://w:other@127.0.0.1:1/0"


def test_a_portal_url_without_a_password_is_handed_out_with_a_warning(redis_server, db,
                                                                        settings):
    settings.REDIS_URL = redis_server.url
    credentials = worker_credentials(pool=WorkerPool(name="p", kind="condor"))
    assert credentials.url == redis_server.url
    assert credentials.warning.endswith(
        "workers get the portal's own Redis URL, which needs no password: anyone who reaches "
        "Redis has every right. Give Redis a password and run `manage.py redis_acl --apply` to "
        "create the worker user (docs/security-redis.md)")


def test_a_worker_that_fails_is_reported_and_removed(locked_redis, locked_conn, local_pool):
    local_pool.redis_url = f"redis://:wrong@127.0.0.1:{locked_redis.port}/0"
    local_pool.max_workers = 1
    local_pool.save()
    Queue("scalertest:normal", connection=locked_conn, serializer=JSONSerializer).enqueue(
        "noop", record={"id": "mol-1", "input": {}}, spec=NOOP_SPEC)
    loop = ScaleLoop(connection=locked_conn, pool_name="here")
    with loop.signals:
        loop.step()  # submits one worker, which Redis refuses (exit 1)
        state = loop.states[local_pool.pk]
        wait_until(lambda: [j for j in state.adapter.view(state.remote,
                                                          work_dir=local_pool.work_dir).jobs
                            if j.state == "failed"], 15, "the worker to fail")
        local_pool.refresh_from_db()
        loop.pool_step(pool=local_pool)  # first sighting: reported
        local_pool.refresh_from_db()
        loop.pool_step(pool=local_pool)  # second: removed (removal_tries 2)
    errors = ScalerEvent.objects.filter(pool=local_pool, kind="error")
    assert errors.count() == 1
    assert "held or failed (removed after 2 steps):" in errors.get().message
    assert "failed: exit code 1: " in errors.get().message
    assert "refused the credentials" in errors.get().message
    removal = ScalerEvent.objects.get(pool=local_pool, kind="remove")
    assert removal.message.startswith("removed 1 batch job held or failed in 2 steps: ")
    assert not list(Path(local_pool.work_dir, "pids").glob("*.failed"))


def test_local_pool_ensure_creates_the_demo_pool_once(db, capsys):
    pool, created = local_pool_ensure()
    assert created
    assert (pool.name, pool.kind, pool.queues, pool.min_workers, pool.max_workers) == \
        ("local", "local", "xtb", 0, 2)
    pool.max_workers = 5
    pool.save()
    call_command("setup_local_pool")
    assert capsys.readouterr().out == ("worker pool local: already there (local, queues xtb, "
                                       "at most 5 workers)\n")
    assert WorkerPool.objects.count() == 1


def test_local_remote_writes_files_with_their_mode(tmp_path):
    remote = LocalRemote()
    path = tmp_path / "secret"
    old_umask = os.umask(0o077)
    try:
        remote.put(str(path), b"x", mode=0o644)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert remote.sha256(str(path)) == \
        "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881"
    assert remote.sha256(str(tmp_path / "none")) is None
    assert remote.run("echo $A; exit 4", env={"A": "b"}) == CommandResult(4, "b\n", "")
