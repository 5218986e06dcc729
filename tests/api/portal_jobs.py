"""Running the portal's background jobs in tests through the real RQ machinery: the request's
on_commit callbacks run (the job is enqueued on the test Redis), then a real rq SimpleWorker
with the JSON serializer and the portal's Job class works the queue in burst mode."""
from __future__ import annotations

from django.conf import settings
from redis import Redis
from rq import Queue, SimpleWorker
from rq.serializers import JSONSerializer

from campaigns.portal_jobs_rq import PortalRqJob


def portal_queue(connection: Redis) -> Queue:
    return Queue(settings.PORTAL_JOBS_QUEUE, connection=connection, serializer=JSONSerializer)


def work_portal_jobs(connection: Redis) -> None:
    """Work every job on the portal's queue, in this process, until it is empty."""
    worker = SimpleWorker([portal_queue(connection)], connection=connection,
                          serializer=JSONSerializer, job_class=PortalRqJob)
    worker.work(burst=True, logging_level="WARNING")


def submit(capture, send) -> dict:
    """Send a request that starts a job (`send()`), with its on_commit callbacks run: the
    202's {"job": ...}."""
    with capture(execute=True):
        response = send()
    assert response.status_code == 202, response.content[:500]
    return response.json()["job"]


def run_job(api, capture, connection: Redis, send) -> dict:
    """Start a job, work it, and return it as GET /api/jobs/ID/ shows it then."""
    job = submit(capture, send)
    work_portal_jobs(connection)
    response = api.get(job["url"])
    assert response.status_code == 200, response.content[:500]
    return response.json()["job"]
