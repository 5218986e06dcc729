"""The worker's Redis ACL user against a real redis-server: `manage.py redis_acl` prints and
applies its rules, a real worker process logged in as that user runs a task to the end (and the
collector writes its result with the portal's connection), and everything a worker never needs
is refused with NOPERM."""
from __future__ import annotations

import hashlib
import json
import signal
import subprocess

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from redis import Redis
from redis.exceptions import NoPermissionError
from rq import Queue, Worker
from rq.serializers import JSONSerializer

from campaigns.locks import COLLECTOR_LOCK_KEY
from campaigns.models import Task
from campaigns.pipeline_keys import RESULTS_KEY
from campaigns.redis_acl import portal_rule, worker_rule
from campaigns.services.collecting import results_collect
from campaigns.services.feeding import queues_feed
from campaigns.attempts import attempt_id
from htportal.redis_credentials import redis_url_as, redis_url_credentials
from tests import servers
from tests.pipeline.collect_helpers import (Processes, age_started_registries,
                                            campaign_submitted, results_of, wait_for)
from tests.pipeline.conftest import make_campaign, make_dataset  # noqa: F401 (fixtures)

WORKER_USER = "htportal-worker"
WORKER_PASSWORD = "worker-Pa55-for-tests"
SPEC = {"function": "noop", "arg_sets": [{"name": "a", "parameters": {}}]}


@pytest.fixture(scope="module")
def acl_server():
    """A redis-server of this module's own: `default` is the admin (on nopass ~* &* +@all, as
    a fresh Redis has it); the worker user comes from `manage.py redis_acl --apply`."""
    server = servers.start_redis()
    yield server
    server.stop()


@pytest.fixture
def admin(acl_server, settings) -> Redis:
    """The portal's (admin) connection, with the worker user's rules applied over it."""
    settings.REDIS_URL = settings.REDIS_ADMIN_URL = acl_server.url
    settings.WORKER_REDIS_USER = WORKER_USER
    settings.WORKER_REDIS_PASSWORD = WORKER_PASSWORD
    conn = Redis.from_url(acl_server.url)
    conn.flushdb()
    call_command("redis_acl", "--apply", stdout=_Sink(), stderr=_Sink())
    conn.execute_command("ACL", "LOG", "RESET")
    yield conn
    conn.flushdb()
    conn.close()


@pytest.fixture
def as_worker(admin, acl_server) -> Redis:
    conn = Redis.from_url(worker_url(acl_server))
    yield conn
    conn.close()


class _Sink:
    def __init__(self):
        self.text = ""

    def write(self, text):
        self.text += text

    def flush(self):
        pass


def worker_url(server) -> str:
    return f"redis://{WORKER_USER}:{WORKER_PASSWORD}@127.0.0.1:{server.port}/0"


def denials(admin: Redis) -> list:
    """ACL LOG entries as (user, command or key) pairs, oldest first."""
    entries = []
    for entry in admin.execute_command("ACL", "LOG"):
        fields = dict(zip(entry[::2], entry[1::2]))
        entries.append((fields[b"username"].decode(), fields[b"object"].decode()))
    return entries[::-1]


# --- the rules ---------------------------------------------------------------------------------

def test_it_prints_the_worker_rules_with_the_password_as_a_hash_only(settings):
    settings.WORKER_REDIS_USER, settings.WORKER_REDIS_PASSWORD = WORKER_USER, WORKER_PASSWORD
    settings.REDIS_URL = "redis://:portal-Pa55@redis.example.org:6379/0"
    out = _Sink()
    call_command("redis_acl", stdout=out)
    digest = hashlib.sha256(WORKER_PASSWORD.encode()).hexdigest()
    lines = out.text.splitlines()
    assert lines[1].startswith(f"ACL SETUSER {WORKER_USER} reset on #{digest} resetchannels "
                               f"&rq:pubsub:* ~rq:job:* ")
    assert lines[1].endswith(' "(%W~htportal:results +rpush)" '
                             '"(%W~htportal:worker-caps:* +set +setex +expire +del)"')
    portal_digest = hashlib.sha256(b"portal-Pa55").hexdigest()
    assert lines[3] == (f"ACL SETUSER default reset on #{portal_digest} resetchannels &rq:* "
                        f"~rq:* ~htportal:* +@all -@dangerous +info +client|setname")
    assert WORKER_PASSWORD not in out.text and "portal-Pa55" not in out.text

    aclfile = _Sink()
    call_command("redis_acl", "--aclfile", stdout=aclfile)
    assert aclfile.text.splitlines()[1] == worker_rule(user=WORKER_USER,
                                                       password=WORKER_PASSWORD).aclfile_line()
    assert "(~rq:queue:* +blpop +lpop +blmove +lmove +rpush +lpush +lrem +lrange +llen +lpos)" \
        in aclfile.text


def test_it_says_why_a_portal_url_without_a_password_gets_no_rule(settings):
    settings.WORKER_REDIS_PASSWORD = WORKER_PASSWORD
    settings.REDIS_URL = "redis://localhost:6379/0"
    out = _Sink()
    call_command("redis_acl", stdout=out)
    assert out.text.splitlines()[-1] == (
        "# portal user default: no rule: the portal's REDIS_URL logs in as 'default' with no "
        "password: give it one (redis://default:PASSWORD@host:6379/0) before restricting it, "
        "or anyone who reaches Redis has its rights")


def test_an_aclfile_made_from_the_rules_starts_a_redis_the_worker_logs_into(tmp_path):
    rule = worker_rule(user=WORKER_USER, password=WORKER_PASSWORD)
    (tmp_path / "users.acl").write_text(
        "user default on nopass ~* &* +@all\n" + rule.aclfile_line() + "\n")
    port = servers.free_port()
    process = subprocess.Popen(["redis-server", "--port", str(port), "--save", "",
                                "--appendonly", "no", "--aclfile", str(tmp_path / "users.acl"),
                                "--logfile", str(tmp_path / "redis.log")])
    try:
        servers.wait_for_port(port)
        conn = Redis(port=port, username=WORKER_USER, password=WORKER_PASSWORD)
        assert conn.ping()
        assert conn.rpush(RESULTS_KEY, "x") == 1
        with pytest.raises(NoPermissionError):
            conn.lrange(RESULTS_KEY, 0, -1)
        conn.close()
    finally:
        process.terminate()
        process.wait(10)


def test_apply_sends_the_rules_and_warns_that_the_default_user_is_open(acl_server, settings):
    settings.REDIS_URL = settings.REDIS_ADMIN_URL = acl_server.url
    settings.WORKER_REDIS_USER, settings.WORKER_REDIS_PASSWORD = "w-apply", "apply-Pa55"
    out, err = _Sink(), _Sink()
    call_command("redis_acl", "--apply", stdout=out, stderr=err)
    assert out.text == (f"user w-apply: rules applied\n"
                        f"user w-apply: logs in at redis://w-apply:***@127.0.0.1:"
                        f"{acl_server.port}/0\n"
                        f"portal user default: left as it is (--portal restricts it)\n")
    assert err.text.startswith("warning: Redis's default user is on with no password: ")
    admin = Redis.from_url(acl_server.url)
    listed = [line.decode() for line in admin.execute_command("ACL", "LIST")]
    [line] = [line for line in listed if line.startswith("user w-apply ")]
    assert f"#{hashlib.sha256(b'apply-Pa55').hexdigest()}" in line
    assert "(%W~htportal:results resetchannels -@all +rpush)" in line
    admin.execute_command("ACL", "DELUSER", "w-apply")
    admin.close()


def test_apply_portal_refuses_to_restrict_the_user_it_logs_in_as(acl_server, settings):
    settings.REDIS_URL = settings.REDIS_ADMIN_URL = \
        f"redis://default:admin-Pa55@127.0.0.1:{acl_server.port}/0"
    settings.WORKER_REDIS_PASSWORD = WORKER_PASSWORD
    admin = Redis.from_url(acl_server.url)
    admin.execute_command("ACL", "SETUSER", "default", ">admin-Pa55")
    try:
        with pytest.raises(CommandError, match=(
                r"^--portal: redis://default:\*\*\*@127\.0\.0\.1:\d+/0 logs in as the portal's "
                r"user 'default', which these rules take ACL rights from: set "
                r"HTPORTAL_REDIS_ADMIN_URL to another user's URL$")):
            call_command("redis_acl", "--apply", "--portal", stdout=_Sink())
    finally:
        admin.execute_command("ACL", "SETUSER", "default", "resetpass", "nopass")
        admin.close()


def test_the_portal_user_collects_but_may_not_flush_or_configure(acl_server, settings,
                                                                 make_campaign):
    admin = Redis.from_url(acl_server.url)
    admin.flushdb()
    rule = portal_rule(user="htportal-portal", password="portal-Pa55")
    admin.execute_command("ACL", "SETUSER", rule.user, *rule.words)
    portal = Redis(port=acl_server.port, username="htportal-portal", password="portal-Pa55")
    try:
        campaign = campaign_submitted(make_campaign, records=1)
        queues_feed(connection=portal)
        task = Task.objects.get(campaign=campaign)
        assert task.state == "queued"
        # As a worker would answer: its name on the job, the attempt id it was handed.
        admin.hset(f"rq:job:{task.job_id}", "worker_name", "w1")
        portal.rpush(RESULTS_KEY, json.dumps({
            "job_id": task.job_id, "worker": "w1",
            "attempt": attempt_id(job_id=task.job_id, delivery=task.delivery), "result": {
            "record_id": task.record_id, "function": "noop", "host": "n", "status": "ok",
            "started_at": "2026-11-26T10:00:00+00:00", "finished_at": "2026-11-26T10:00:01+00:00",
            "arg_sets": {"a": {"status": "ok", "values": {}, "error": None}}, "files": []}}))
        report = results_collect(connection=portal)
        assert (report.taken, report.done, portal.llen(RESULTS_KEY)) == (1, 1, 0)
        for command in (("FLUSHALL",), ("FLUSHDB",), ("CONFIG", "GET", "*"), ("KEYS", "*"),
                        ("ACL", "LIST"), ("GET", "not-htportal")):
            with pytest.raises(NoPermissionError):
                portal.execute_command(*command)
    finally:
        portal.close()
        admin.execute_command("ACL", "DELUSER", "htportal-portal")
        admin.flushdb()
        admin.close()


# --- a real worker as the worker user ----------------------------------------------------------

@pytest.fixture
def processes(acl_server, tmp_path):
    started = Processes(redis_url=worker_url(acl_server), tmp_path=tmp_path)
    yield started
    started.stop_all()


def test_a_worker_as_the_worker_user_runs_a_task_and_the_collector_writes_it(
        admin, make_campaign, processes):
    campaign = campaign_submitted(make_campaign, records=1, seconds=3)
    assert queues_feed(connection=admin).queued == 1
    task = Task.objects.get(campaign=campaign)
    worker = processes.worker("pipe", name="w-acl", extra=("--max-tasks", "1"))

    # Registered and seen as a worker by the portal, heartbeating while the task runs.
    wait_for(lambda: "w-acl" in [w.name for w in Worker.all(connection=admin)], timeout=20,
             what="the worker to register", processes=(worker,))
    key = "rq:worker:w-acl"
    wait_for(lambda: admin.hget(key, "current_job"), timeout=20, what="the task to start",
             processes=(worker,))
    first = admin.hget(key, "last_heartbeat")
    wait_for(lambda: admin.hget(key, "last_heartbeat") != first, timeout=10,
             what="a heartbeat", processes=(worker,))
    assert worker.wait(30) == 0, worker.log()

    [raw] = admin.lrange(RESULTS_KEY, 0, -1)
    envelope = json.loads(raw)
    assert (envelope["job_id"], envelope["worker"]) == (task.job_id, "w-acl")
    assert envelope["attempt"] and envelope["result"]["status"] == "ok"
    assert "finished executing 1 jobs, quitting" in worker.log()
    # rq asks for CLIENT LIST (every client's address) and copes without it; nothing else.
    assert set(denials(admin)) <= {(WORKER_USER, "client|list")}
    assert not admin.sismember("rq:workers", "rq:worker:w-acl")  # unregistered on the way out

    report = results_collect(connection=admin)
    assert (report.taken, report.done) == (1, 1)
    task.refresh_from_db()
    assert task.state == "done"
    assert results_of(campaign)[task.record_id] == {
        "a": envelope["result"]["arg_sets"]["a"]["values"]}
    assert admin.llen(RESULTS_KEY) == 0


def test_a_stopped_worker_gives_its_job_back_and_cleans_registries_as_the_worker_user(
        admin, processes):
    queue = Queue("acl:normal", connection=admin, serializer=JSONSerializer)
    job = queue.enqueue("sleep", record={"id": "mol-1", "input": {}}, spec={
        "function": "sleep", "arg_sets": [{"name": "nap", "parameters": {"seconds": 60}}]})
    # What a pre-empted worker leaves: a job stuck in the intermediate list and an expired
    # StartedJobRegistry entry; the next worker's maintenance cleans both up.
    stuck = queue.enqueue("noop", record={"id": "mol-2", "input": {}}, spec=SPEC)
    admin.lrem(queue.key, 1, stuck.id)
    admin.rpush(queue.intermediate_queue_key, stuck.id)
    admin.zadd("rq:wip:acl:normal", {"gone-job:execution": 1})
    worker = processes.worker("acl:normal", name="w-stop")
    wait_for(lambda: job.get_status(refresh=True) == "started", timeout=20,
             what="the job to start", processes=(worker,))

    worker.signal(signal.SIGTERM)

    assert worker.wait(30) == 0, worker.log()
    assert queue.get_job_ids() == [job.id]
    assert job.get_status(refresh=True) == "queued"
    assert "cleaning registries for queue: acl:normal" in worker.log()
    assert admin.exists(f"{queue.intermediate_queue_key}:first_seen:{stuck.id}")
    assert admin.zcard("rq:wip:acl:normal") == 0
    assert set(denials(admin)) <= {(WORKER_USER, "client|list")}


def test_a_worker_fails_a_job_abandoned_by_a_killed_one_as_the_worker_user(admin, processes):
    queue = Queue("acl:normal", connection=admin, serializer=JSONSerializer)
    job = queue.enqueue("sleep", record={"id": "mol-1", "input": {}}, spec={
        "function": "sleep", "arg_sets": [{"name": "nap", "parameters": {"seconds": 60}}]})
    killed = processes.worker("acl:normal", name="w-killed")
    wait_for(lambda: job.get_status(refresh=True) == "started", timeout=20,
             what="the job to start", processes=(killed,))
    killed.signal(signal.SIGKILL)
    killed.wait(10)
    assert age_started_registries(admin) == 1  # its heartbeat deadline has gone by
    # And a job the next worker refuses to run: failed by that worker, with an envelope.
    bad = queue.enqueue("os.system", record={"id": "mol-2", "input": {}}, spec=SPEC,
                        reply_to=RESULTS_KEY, attempt="a-1")

    second = processes.worker("acl:normal", name="w-next", extra=("--max-idle", "1"))

    assert second.wait(30) == 0, second.log()
    # rq's maintenance, run by the second worker as the worker user, fails the abandoned job.
    assert job.get_status(refresh=True) == "failed"
    assert admin.zcard("rq:wip:acl:normal") == 0
    failed = {raw.decode().partition(":")[0]
              for raw in admin.zrange("rq:failed:acl:normal", 0, -1)}
    assert failed == {job.id, bad.id}
    assert bad.get_status(refresh=True) == "failed"
    [envelope] = [json.loads(raw) for raw in admin.lrange(RESULTS_KEY, 0, -1)]
    assert (envelope["job_id"], envelope["attempt"], envelope["error"]["class"]) == \
        (bad.id, "a-1", "JobRefused")
    assert set(denials(admin)) <= {(WORKER_USER, "client|list")}


# --- what a worker may not do ------------------------------------------------------------------

REFUSED = [
    ("FLUSHALL",), ("FLUSHDB",), ("CONFIG", "GET", "*"), ("CONFIG", "SET", "maxmemory", "1"),
    ("KEYS", "*"), ("SCAN", "0"), ("INFO", "keyspace"), ("INFO",), ("CLIENT", "LIST"),
    ("CLIENT", "KILL", "ID", "1"), ("ACL", "LIST"), ("MONITOR",), ("SAVE",), ("SWAPDB", "0", "1"),
    ("EVAL", "return redis.call('FLUSHALL')", "0"),
    ("LTRIM", RESULTS_KEY, "1", "0"), ("DEL", RESULTS_KEY), ("LRANGE", RESULTS_KEY, "0", "-1"),
    ("LPOP", RESULTS_KEY), ("RENAME", RESULTS_KEY, "rq:job:x"), ("UNLINK", RESULTS_KEY),
    ("SET", COLLECTOR_LOCK_KEY, "mine"), ("DEL", COLLECTOR_LOCK_KEY),
    ("GET", COLLECTOR_LOCK_KEY), ("SET", "htportal:feed-lock:pipe", "mine"),
    ("RPUSH", "htportal:dead-letters", "x"), ("LRANGE", "htportal:dead-letters", "0", "-1"),
    ("GET", "someone-elses-key"), ("SET", "htportal:spec:1:1", "{}"),
    ("DEL", "htportal:spec:1:1"), ("GET", "htportal:worker-caps:other"),
    ("DEL", "rq:queue:pipe:normal"), ("LTRIM", "rq:queue:pipe:normal", "1", "0"),
    ("RENAME", "rq:queue:pipe:normal", "rq:queue:mine"), ("SET", "rq:suspended", "1"),
    ("PUBLISH", "rq:pubsub:w-other", '{"command": "shutdown"}'),
]


@pytest.mark.parametrize("command", REFUSED, ids=[" ".join(c)[:40] for c in REFUSED])
def test_the_worker_user_is_refused(admin, as_worker, command):
    admin.rpush(RESULTS_KEY, "an envelope")
    admin.set(COLLECTOR_LOCK_KEY, "collector")
    admin.rpush("rq:queue:pipe:normal", "job-1")
    admin.set("someone-elses-key", "secret")
    admin.set("htportal:spec:1:1", json.dumps(SPEC))

    with pytest.raises(NoPermissionError, match="^this user has no permissions"):
        as_worker.execute_command(*command)

    assert admin.lrange(RESULTS_KEY, 0, -1) == [b"an envelope"]
    assert admin.get(COLLECTOR_LOCK_KEY) == b"collector"
    assert admin.lrange("rq:queue:pipe:normal", 0, -1) == [b"job-1"]
    assert json.loads(admin.get("htportal:spec:1:1")) == SPEC
    assert admin.dbsize() == 5


def test_the_worker_user_may_do_what_a_worker_does_outside_rq(admin, as_worker):
    admin.set("htportal:spec:1:1", json.dumps(SPEC))
    assert json.loads(as_worker.get("htportal:spec:1:1")) == SPEC
    assert as_worker.rpush(RESULTS_KEY, "envelope") == 1
    caps = "htportal:worker-caps:w-1"
    assert as_worker.set(caps, json.dumps({"xtb": "6.6"}), ex=60)
    assert as_worker.setex(caps, 60, json.dumps({"xtb": "6.6"}))
    assert as_worker.expire(caps, 120)
    assert as_worker.delete(caps) == 1


def test_a_rule_is_a_reset_then_the_words_so_applying_twice_changes_nothing(admin):
    before = admin.execute_command("ACL", "GETUSER", WORKER_USER)
    call_command("redis_acl", "--apply", stdout=_Sink(), stderr=_Sink())
    assert admin.execute_command("ACL", "GETUSER", WORKER_USER) == before


def test_the_worker_url_is_the_portals_with_the_worker_user(settings):
    url = redis_url_as("rediss://:portal-Pa55@redis.example.org:6380/2?ssl_cert_reqs=required",
                       user=WORKER_USER, password="w/p@ss")
    assert url == ("rediss://htportal-worker:w%2Fp%40ss@redis.example.org:6380/2"
                   "?ssl_cert_reqs=required")
    assert redis_url_credentials(url) == (WORKER_USER, "w/p@ss")
