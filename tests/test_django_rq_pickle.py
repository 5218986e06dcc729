"""No django-rq page unpickles what someone with the Redis URL wrote (htportal/nopickle.py).

The attack: a job hash whose `data` and `meta` are pickles that would create a file when loaded,
pushed onto the default queue and into every registry, a worker whose current job it is; then a
staff user opens every page of the admin's RQ dashboard.
"""
from __future__ import annotations

import pickle
import time
import zlib
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import Client, override_settings
from rq import serializers

from htportal.nopickle import JSON_SERIALIZER, check_rq_queues, forbid_pickle, pickle_forbidden

DASHBOARD = "/admin/django_rq/dashboard/"
JOB = "evil"
WORKER = "evilworker"


class Payload:
    """A pickle that creates `marker` when it is loaded."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def plant_pickled_job(conn, marker: Path) -> None:
    """What an attacker with the Redis URL does: a pickled job on the queue and in every registry."""
    now = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
    conn.hset(f"rq:job:{JOB}", mapping={
        "data": zlib.compress(pickle.dumps(Payload(marker))),
        "meta": pickle.dumps(Payload(marker)),
        "origin": "default", "status": "queued", "created_at": now, "enqueued_at": now,
        "description": "evil()", "timeout": "180",
    })
    conn.rpush("rq:queue:default", JOB)
    conn.sadd("rq:queues", "rq:queue:default")
    future = time.time() + 3600
    for registry in ("finished", "failed", "started", "deferred", "scheduled"):
        conn.zadd(f"rq:{registry}:default", {JOB: future})
    conn.hset(f"rq:worker:{WORKER}", mapping={
        "name": WORKER, "queues": "default", "state": "busy", "current_job": JOB,
        "birth": now, "last_heartbeat": now, "pid": "1", "hostname": "node",
    })
    conn.sadd("rq:workers", f"rq:worker:{WORKER}")
    conn.sadd("rq:workers:default", f"rq:worker:{WORKER}")


PAGES = [
    "", "stats.json/", "queues/0/", "queues/0/details/", "queues/0/finished/", "queues/0/failed/",
    "queues/0/failed/clear/", "queues/0/scheduled/", "queues/0/started/", "queues/0/deferred/",
    "queues/0/empty/", "queues/0/requeue-all/", f"queues/0/{JOB}/",
    f"queues/0/{JOB}/results/nope/", f"queues/0/{JOB}/delete/", f"queues/0/{JOB}/requeue/",
    "workers/0/", f"workers/0/rq:worker:{WORKER}/", "cron-schedulers/0/nope/",
]


@pytest.fixture
def rq_on_test_redis(redis_server, redis_conn):
    queues = {"default": {"URL": redis_server.url, "DEFAULT_TIMEOUT": 60,
                          "SERIALIZER": JSON_SERIALIZER}}
    with override_settings(RQ_QUEUES=queues):
        yield redis_conn


@pytest.fixture
def staff_client(django_user_model) -> Client:
    client = Client(raise_request_exception=False)
    client.force_login(django_user_model.objects.create_user("root", is_staff=True,
                                                             is_superuser=True))
    return client


@pytest.mark.django_db
@pytest.mark.parametrize("page", PAGES)
def test_it_opens_every_rq_page_without_unpickling(page, rq_on_test_redis, staff_client, tmp_path):
    marker = tmp_path / "pwned"
    plant_pickled_job(rq_on_test_redis, marker)
    response = staff_client.get(DASHBOARD + page)
    assert response.status_code in (200, 404), (page, response.status_code)
    assert not marker.exists()


@pytest.mark.django_db
def test_it_deletes_failed_jobs_without_unpickling(rq_on_test_redis, staff_client, tmp_path):
    # This action fetches the jobs with no serializer at all: only the guard stops pickle here.
    marker = tmp_path / "pwned"
    plant_pickled_job(rq_on_test_redis, marker)
    response = staff_client.post(DASHBOARD + "queues/0/failed/clear/")
    assert response.status_code in (200, 302, 404)
    assert not marker.exists()


@pytest.mark.django_db
def test_the_planted_job_does_run_code_without_the_guards(rq_on_test_redis, staff_client,
                                                           tmp_path, redis_server):
    """The control: the same job and page with pickle back in place create the marker, so the
    tests above would see it if a guard were missing."""
    marker = tmp_path / "pwned"
    plant_pickled_job(rq_on_test_redis, marker)
    unsafe = {"default": {"URL": redis_server.url}}
    original = serializers.DefaultSerializer.loads
    serializers.DefaultSerializer.loads = staticmethod(pickle.loads)
    try:
        with override_settings(RQ_QUEUES=unsafe):
            staff_client.get(DASHBOARD + f"queues/0/{JOB}/")
    finally:
        serializers.DefaultSerializer.loads = original
    assert marker.exists()


def test_the_portal_runs_with_pickle_forbidden():
    assert pickle_forbidden()
    assert serializers.DefaultSerializer.loads(b'{"a": 1}') == {"a": 1}
    with pytest.raises(UnicodeDecodeError):
        serializers.DefaultSerializer.loads(pickle.dumps(object()))


def test_forbidding_pickle_twice_is_harmless():
    forbid_pickle()
    assert pickle_forbidden()


@pytest.mark.parametrize("queues, rq, place", [
    ({"default": {"URL": "redis://x"}}, {"SERIALIZER": JSON_SERIALIZER}, "RQ_QUEUES['default']"),
    ({"default": {"SERIALIZER": JSON_SERIALIZER},
      "xtb": {"SERIALIZER": "rq.serializers.DefaultSerializer"}},
     {"SERIALIZER": JSON_SERIALIZER}, "RQ_QUEUES['xtb']"),
    ({"default": {"SERIALIZER": JSON_SERIALIZER}}, {}, "RQ"),
])
def test_it_refuses_to_start_with_a_queue_that_is_not_json(queues, rq, place):
    with pytest.raises(ImproperlyConfigured) as caught:
        check_rq_queues(queues=queues, rq=rq)
    assert str(caught.value).startswith(f"{place}['SERIALIZER'] is ")
    assert "rq.serializers.JSONSerializer" in str(caught.value)


def test_it_starts_with_the_shipped_settings():
    from django.conf import settings

    check_rq_queues(queues=settings.RQ_QUEUES, rq=settings.RQ)
    assert settings.RQ_QUEUES["default"]["SERIALIZER"] == JSON_SERIALIZER


@pytest.mark.django_db
def test_the_rqstats_command_reads_the_queue_without_unpickling(rq_on_test_redis, tmp_path,
                                                              capsys):
    from django.core.management import call_command

    marker = tmp_path / "pwned"
    plant_pickled_job(rq_on_test_redis, marker)
    call_command("rqstats", "--json")  # it prints with print(), not self.stdout
    assert '"jobs": 1' in capsys.readouterr().out
    assert not marker.exists()
