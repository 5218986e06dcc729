"""The portal's own background jobs: an upload's import, a campaign's launch.

A request that would outlive the web server's timeout creates a PortalJob row and returns 202;
the job is put on the portal's own RQ queue (settings.PORTAL_JOBS_QUEUE, JSON serializer, never
listened on by grid workers) once that row is committed, and `manage.py rqworker` runs it
(campaigns/portal_jobs_rq.py, a thin door onto portal_job_run). The client polls
/api/jobs/ID/ (portal_job_check). Life of a job:

    queued ──portal_job_start──► running ──portal_job_finish──► done
       └──────────────(lost, rq failed)────┴──portal_job_fail──► failed
                                           └──(no heartbeat)───► failed

While it runs, progress (done/total/fraction) and a heartbeat live in one small Redis hash, not
in the row: an abort-mode import is one database transaction, and an UPDATE made inside it
would stay invisible to the poller until the end. Writes are bounded: progress at most every
PROGRESS_EVERY_S or PROGRESS_EVERY_ITEMS items, the heartbeat every HEARTBEAT_EVERY_S from a
thread of its own (so a long silent SQL statement is not taken for a dead worker).
"""
from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
from dataclasses import asdict
from datetime import datetime, timezone as dt_timezone
from pathlib import Path
from typing import Callable, Optional

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone
from redis import Redis
from redis.exceptions import RedisError
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from campaigns.errors import ApplicationError
from campaigns.models import Campaign, Dataset, PortalJob
from campaigns.redis_connection import redis_connection
from campaigns.services.lifecycle import campaign_launch
from campaigns.services.records import records_import
from campaigns.services.submission import campaign_submit_check

log = logging.getLogger(__name__)

RQ_FUNCTION = "campaigns.portal_jobs_rq.portal_job_work"
PROGRESS_EVERY_S = 2.0
PROGRESS_EVERY_ITEMS = 10_000
HEARTBEAT_EVERY_S = 10.0
# A queued job whose RQ job is gone from Redis after this long was lost (a Redis restart).
LOST_AFTER_S = 60
PROGRESS_TTL_S = 7 * 24 * 3600
RESULT_TTL_S = 24 * 3600
MESSAGE_MAX = 2000
FINISHED_STATES = (PortalJob.State.DONE, PortalJob.State.FAILED)


def progress_key(job_id: int) -> str:
    return f"htportal:portal-job:{job_id}"


def rq_job_id(job_id: int) -> str:
    return f"htportal-portal-job-{job_id}"


def upload_directory() -> Path:
    """A new directory under settings.UPLOAD_DIR for one upload's file."""
    base = Path(settings.UPLOAD_DIR)
    base.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="job-", dir=base))


# --- selectors ---------------------------------------------------------------------------------

def portal_jobs_visible(*, user) -> QuerySet[PortalJob]:
    """The jobs `user` may see: their own, or every one for staff."""
    jobs = PortalJob.objects.select_related("owner")
    return jobs if user.is_staff else jobs.filter(owner=user)


def portal_job_progress_read(*, job: PortalJob, connection: Optional[Redis] = None) -> dict:
    """{"done", "total", "fraction", "heartbeat"} of a running job from Redis ({} when none or
    Redis does not answer); a finished job's counts are in its row."""
    try:
        raw = (connection or redis_connection()).hgetall(progress_key(job.pk))
    except RedisError:
        return {}
    values = {key.decode(): value.decode() for key, value in raw.items()}
    parsed: dict = {}
    for name, cast in (("done", int), ("total", int), ("fraction", float), ("heartbeat", float)):
        if values.get(name):
            try:
                parsed[name] = cast(values[name])
            except ValueError:
                pass
    return parsed


def portal_job_as_dict(*, job: PortalJob, live: Optional[dict] = None) -> dict:
    """The job as the API shows it; `live` is its Redis progress while it runs."""
    live = live or {}
    heartbeat = live.get("heartbeat")
    return {
        "id": job.pk, "kind": job.kind, "state": job.state, "url": f"/api/jobs/{job.pk}/",
        "owner": job.owner.username,
        "progress": {"done": live.get("done", job.done), "total": live.get("total", job.total),
                     "fraction": live.get("fraction")},
        "message": job.message, "report": job.report,
        "created_at": job.created_at, "started_at": job.started_at,
        "finished_at": job.finished_at,
        "heartbeat_at": (datetime.fromtimestamp(heartbeat, tz=dt_timezone.utc)
                         if heartbeat else None),
    }


# --- services ----------------------------------------------------------------------------------

def portal_job_queue(*, owner, kind: str, arguments: dict, path: str = "") -> PortalJob:
    """A new queued job; its RQ job is put on the portal's queue once the row is committed
    (a worker must find the row), with the job's id as its only argument."""
    with transaction.atomic():
        job = PortalJob.objects.create(owner=owner, kind=kind, arguments=arguments, path=path)
        transaction.on_commit(lambda: _rq_enqueue(job_id=job.pk))
    log.info("portal job %s (%s) queued for %s", job.pk, kind, owner)
    return job


def _rq_enqueue(*, job_id: int) -> None:
    try:
        queue = Queue(settings.PORTAL_JOBS_QUEUE, connection=redis_connection(),
                      serializer=JSONSerializer)
        queue.enqueue_call(RQ_FUNCTION, args=(job_id,), job_id=rq_job_id(job_id),
                           timeout=settings.PORTAL_JOB_TIMEOUT_S, result_ttl=RESULT_TTL_S,
                           failure_ttl=RESULT_TTL_S)
    except RedisError as exc:
        log.warning("portal job %s: could not be queued: %s", job_id, exc)
        portal_job_fail(job_id=job_id, message=f"could not queue the job: Redis did not answer "
                                               f"({type(exc).__name__}); nothing was done, "
                                               "send the request again")


def portal_job_start(*, job_id: int) -> Optional[PortalJob]:
    """Mark a queued job running and return it; None when it is not queued (already run, or
    failed meanwhile), so that a job delivered twice runs once."""
    now = timezone.now()
    if not PortalJob.objects.filter(pk=job_id, state=PortalJob.State.QUEUED).update(
            state=PortalJob.State.RUNNING, started_at=now):
        return None
    _beat(job_id=job_id)
    return PortalJob.objects.get(pk=job_id)


def portal_job_finish(*, job_id: int, message: str, report: dict, done: int = 0,
                      total: Optional[int] = None) -> None:
    """The job is done: its report and a one-line message; its upload is deleted."""
    _end(job_id=job_id, state=PortalJob.State.DONE, message=message, report=report, done=done,
         total=total)


def portal_job_fail(*, job_id: int, message: str, report: Optional[dict] = None,
                    only_if: tuple = (PortalJob.State.QUEUED, PortalJob.State.RUNNING)) -> bool:
    """The job failed: `message` says why; `report` what was done before. False when the job
    was no longer in one of `only_if` states (it ended meanwhile)."""
    return _end(job_id=job_id, state=PortalJob.State.FAILED, message=message,
                report=report or {}, only_if=only_if)


def _end(*, job_id: int, state: str, message: str, report: dict, done: int = 0,
         total: Optional[int] = None, only_if: Optional[tuple] = None) -> bool:
    jobs = PortalJob.objects.filter(pk=job_id)
    if only_if is not None:
        jobs = jobs.filter(state__in=only_if)
    path = jobs.values_list("path", flat=True).first()
    ended = jobs.update(state=state, message=message[:MESSAGE_MAX], report=report, done=done,
                        total=total, finished_at=timezone.now())
    if ended:
        if path:
            shutil.rmtree(Path(path).parent, ignore_errors=True)
        try:
            redis_connection().delete(progress_key(job_id))
        except RedisError:
            pass  # it expires on its own
        log.info("portal job %s: %s: %s", job_id, state, message)
    return bool(ended)


class JobProgress:
    """A campaigns.progress.Progress look-alike for services (update(done, fraction=)) that
    writes the job's progress to Redis at most every PROGRESS_EVERY_S seconds or
    PROGRESS_EVERY_ITEMS items."""

    def __init__(self, *, job_id: int, total: Optional[int] = None,
                 clock: Callable[[], float] = time.monotonic):
        self.job_id = job_id
        self.total = total
        self.clock = clock
        self.done = 0
        self.fraction: Optional[float] = None
        self.written_at = clock()
        self.written_done = 0

    def update(self, done: int, *, fraction: Optional[float] = None) -> None:
        self.done, self.fraction = done, fraction
        if (self.clock() - self.written_at >= PROGRESS_EVERY_S
                or done - self.written_done >= PROGRESS_EVERY_ITEMS):
            self.write()

    def write(self) -> None:
        self.written_at, self.written_done = self.clock(), self.done
        fields = {"done": self.done, "total": "" if self.total is None else self.total,
                  "fraction": "" if self.fraction is None else round(self.fraction, 4)}
        _beat(job_id=self.job_id, **fields)


def _beat(*, job_id: int, **fields) -> None:
    """Write the heartbeat (and `fields`); a Redis hiccup must not fail the job's work."""
    try:
        connection = redis_connection()
        with connection.pipeline() as pipe:
            pipe.hset(progress_key(job_id), mapping={**fields, "heartbeat": time.time()})
            pipe.expire(progress_key(job_id), PROGRESS_TTL_S)
            pipe.execute()
    except RedisError as exc:
        log.warning("portal job %s: heartbeat not written: %s", job_id, exc)


class _Heartbeat:
    """A thread that writes the job's heartbeat every HEARTBEAT_EVERY_S while its work runs."""

    def __init__(self, job_id: int):
        self.job_id = job_id
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"portal-job-{job_id}-heartbeat",
                                       daemon=True)

    def _run(self) -> None:
        while not self.stopped.wait(HEARTBEAT_EVERY_S):
            _beat(job_id=self.job_id)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stopped.set()
        self.thread.join()


def portal_job_run(*, job_id: int) -> str:
    """Run a queued job to its end and return its state: the work of its kind, then finish
    with its report, or fail saying why (and what was done before). Any exception fails the
    job, never leaves it running."""
    job = portal_job_start(job_id=job_id)
    if job is None:
        state = PortalJob.objects.filter(pk=job_id).values_list("state", flat=True).first()
        log.info("portal job %s is %s, not queued: not run again", job_id, state or "gone")
        return state or "gone"
    # Its own reason wins over a poll's "no heartbeat" that came first.
    ending = (PortalJob.State.RUNNING, PortalJob.State.FAILED)
    try:
        with _Heartbeat(job_id):
            WORK[job.kind](job)
    except ApplicationError as exc:
        portal_job_fail(job_id=job_id, message=str(exc), only_if=ending,
                        report=getattr(exc, "job_report", None))
    except Exception as exc:  # a bug or the database: still a failed job, never a running one
        log.exception("portal job %s failed", job_id)
        portal_job_fail(job_id=job_id, message=f"internal error: {type(exc).__name__}: {exc}",
                        only_if=ending, report=getattr(exc, "job_report", None))
    return PortalJob.objects.filter(pk=job_id).values_list("state", flat=True).first()


def portal_job_check(*, job: PortalJob, connection: Optional[Redis] = None) -> dict:
    """The job as the poller sees it, after failing it if it was abandoned: running with no
    heartbeat for settings.PORTAL_JOB_HEARTBEAT_S (its rqworker died), failed in RQ without
    its row knowing (killed, timed out), or queued but lost from Redis."""
    if job.state in FINISHED_STATES:
        return portal_job_as_dict(job=job)
    connection = connection or redis_connection()
    live = portal_job_progress_read(job=job, connection=connection)
    reason = _abandoned(job=job, live=live, connection=connection)
    if reason and portal_job_fail(job_id=job.pk, message=reason, report=_partial(job)):
        job.refresh_from_db()
        live = {}
    return portal_job_as_dict(job=job, live=live)


def _abandoned(*, job: PortalJob, live: dict, connection: Redis) -> str:
    """Why the job can no longer end by itself, or ''."""
    now = time.time()
    try:
        rq_job = Job.fetch(rq_job_id(job.pk), connection=connection, serializer=JSONSerializer)
        rq_status = rq_job.get_status()
    except NoSuchJobError:
        rq_job, rq_status = None, None
    except RedisError:
        return ""  # no way to tell; ask again later
    if rq_status in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED):
        if PortalJob.objects.filter(pk=job.pk, state__in=FINISHED_STATES).exists():
            return ""  # it ended between our read and now
        exc = (rq_job.latest_result().exc_string if rq_job.latest_result() else "") or ""
        last = exc.strip().splitlines()[-1] if exc.strip() else f"rq status {rq_status.value}"
        return f"the portal's job worker ended the job without finishing it: {last}"
    if job.state == PortalJob.State.QUEUED:
        if rq_job is None and (now - job.created_at.timestamp()) > LOST_AFTER_S:
            return ("the job was lost from Redis before a worker took it (was Redis restarted?); "
                    "nothing was done, send the request again")
        return ""
    beat = max(live.get("heartbeat", 0.0), job.started_at.timestamp() if job.started_at else 0)
    silent = now - beat
    if silent > settings.PORTAL_JOB_HEARTBEAT_S:
        return (f"no heartbeat from the portal's job worker for {silent:.0f} s (more than "
                f"{settings.PORTAL_JOB_HEARTBEAT_S} s): it stopped while running the job")
    return ""


def _partial(job: PortalJob) -> dict:
    """What an abandoned job leaves behind, as far as the portal can tell."""
    if job.kind == PortalJob.Kind.RECORDS_IMPORT:
        dataset = Dataset.objects.filter(pk=job.arguments.get("dataset_id")).first()
        on_error = job.arguments.get("on_error")
        return {"record_count": dataset.record_count if dataset else None,
                "written": 0 if on_error == "abort" else None,
                "summary": ("nothing was written (on_error=abort: one transaction, rolled back)"
                            if on_error == "abort" else
                            "an unknown number of records may have been written before it "
                            "stopped; send the file again (ids already present are left as "
                            "they are)")}
    return {}


# --- the work of each kind ---------------------------------------------------------------------

def records_import_queue(*, owner, dataset: Dataset, path: Path, on_error: str) -> PortalJob:
    """Queue the import of the uploaded file at `path` (in a directory of its own under
    settings.UPLOAD_DIR) into `dataset`."""
    return portal_job_queue(owner=owner, kind=PortalJob.Kind.RECORDS_IMPORT, path=str(path),
                            arguments={"dataset_id": dataset.pk, "on_error": on_error,
                                       "file": path.name})


def campaign_launch_queue(*, owner, campaign: Campaign, limit: Optional[int] = None,
                          dry_run: bool = False) -> PortalJob:
    """Queue campaign_launch of `campaign` (checked first, so that a refused launch is refused
    at once rather than by a failed job)."""
    campaign_submit_check(campaign=campaign)
    return portal_job_queue(owner=owner, kind=PortalJob.Kind.CAMPAIGN_LAUNCH,
                            arguments={"campaign_id": campaign.pk, "limit": limit,
                                       "dry_run": dry_run})


def _records_import_work(job: PortalJob) -> None:
    dataset = Dataset.objects.filter(pk=job.arguments["dataset_id"]).first()
    if dataset is None:
        raise ApplicationError("the dataset was deleted before its upload was imported; "
                               "nothing was written")
    path = Path(job.path)
    on_error = job.arguments["on_error"]
    progress = JobProgress(job_id=job.pk)
    relative = lambda text: text.replace(f"{path.parent}/", "")  # noqa: E731
    try:
        report = records_import(dataset=dataset, paths=[path], on_error=on_error,
                                progress=progress)
    except Exception as exc:
        partial = getattr(exc, "report", None)
        if partial is None:
            raise
        what = ("nothing was written (on_error=abort)" if on_error == "abort"
                else f"{partial.summary()} before it")
        failure = ApplicationError(f"{relative(str(exc))}; {what}"
                                   if isinstance(exc, ApplicationError) else
                                   f"internal error: {type(exc).__name__}: {exc}; {what}")
        failure.job_report = {**partial.as_dict(), "error": relative(str(exc))}
        raise failure from None
    portal_job_finish(job_id=job.pk, report=report.as_dict(), done=report.read,
                      message=f"{dataset.name}: {report.summary()}; "
                              f"{report.record_count:,} records")


def _campaign_launch_work(job: PortalJob) -> None:
    campaign = Campaign.objects.filter(pk=job.arguments["campaign_id"]).first()
    if campaign is None:
        raise ApplicationError("the campaign was deleted before it was launched")
    progress = JobProgress(job_id=job.pk)
    report = campaign_launch(campaign=campaign, limit=job.arguments.get("limit"),
                             dry_run=bool(job.arguments.get("dry_run")), progress=progress)
    portal_job_finish(job_id=job.pk, report=asdict(report), message=report.line(),
                      done=report.selected, total=progress.total)


WORK: dict[str, Callable[[PortalJob], None]] = {
    PortalJob.Kind.RECORDS_IMPORT: _records_import_work,
    PortalJob.Kind.CAMPAIGN_LAUNCH: _campaign_launch_work,
}
