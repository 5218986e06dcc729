"""The django-rq side of the portal's background jobs: the job function (a thin door onto
campaigns.services.portal_jobs) and the Job class the portal's rqworker runs them with.

The worker is started as (Procfile)

    manage.py rqworker --serializer rq.serializers.JSONSerializer \\
        --job-class campaigns.portal_jobs_rq.PortalRqJob htportal-portal

django-rq's rqworker defaults to rq's pickle serializer and passes its --serializer to the
Worker, which deserializes every job it takes with it: the flag is what keeps pickle out.
PortalRqJob refuses to run any function but the ones below and ignores callbacks, so that a job
put on the queue by someone else than the portal (anyone holding a Redis credential) cannot make
the portal import and call an arbitrary dotted name.
"""
from __future__ import annotations

from rq.job import Job

from campaigns.services.portal_jobs import RQ_FUNCTION, portal_job_run

ALLOWED_FUNCTIONS = frozenset({RQ_FUNCTION})


class NotAPortalJob(Exception):
    """A job on the portal's queue that the portal did not put there."""


def portal_job_work(job_id: int) -> str:
    """Run the PortalJob `job_id`; return its state (JSON, for rq's result)."""
    if not isinstance(job_id, int) or isinstance(job_id, bool):
        raise NotAPortalJob(f"a portal job id is a whole number, got {job_id!r}")
    return portal_job_run(job_id=job_id)


class PortalRqJob(Job):
    """An RQ job that resolves only ALLOWED_FUNCTIONS, and never a callback."""

    @property
    def func(self):
        if self.instance is not None or self.func_name not in ALLOWED_FUNCTIONS:
            raise NotAPortalJob(f"the portal's queue runs only {', '.join(ALLOWED_FUNCTIONS)}, "
                                f"not {self.func_name!r}")
        return super().func

    # A callback name in the job's hash is never imported: the portal sets none.
    @property
    def success_callback(self):
        return None

    @property
    def failure_callback(self):
        return None

    @property
    def stopped_callback(self):
        return None
