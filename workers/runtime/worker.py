"""The opportunistic RQ worker: `python -m workers.runtime.worker --redis-url URL QUEUE...`.

A grid slot may vanish at any moment, so the worker is built to be pre-empted:

- It runs tasks in its own process (rq's SimpleWorker: no fork per task); the programs a task
  starts are subprocesses that programs.py stops on request.
- Jobs use RQ's JSON serializer and name a registry function. TaskJob resolves that name in the
  registry and never imports a dotted path; a job naming anything else is refused (failed with
  "function 'os.system' is not allowed (known: ...)") before any of its code could run.
- On SIGTERM/SIGINT the running program is stopped (errors.Interrupted) and the job is given back
  at the front of its queue, with no failure recorded, and the worker exits 0.
- It leaves on its own after --max-idle seconds without work, after --max-tasks tasks, or when
  the next job's timeout would outlast --max-runtime (that job goes back untouched).
- A Redis that goes away is waited for with exponential backoff, one log line per attempt; a
  Redis that comes back empty gets the worker registered again.
- A broken node does not eat the campaign: a missing program, a scratch directory that cannot
  be written or the same program failure on several records in a row (faults.py) is reported
  as the worker's fault (`"fault": "worker"` in the envelope's error), and the worker leaves
  with exit code 3. At start it checks its scratch root and the programs of --needs
  (capabilities.py) and leaves the same way before taking any job.
- Programs get a clean environment (environment.py): the worker drops the Redis URL from its
  own environment once read and makes itself non-dumpable.
"""
from __future__ import annotations

import argparse
import functools
import json
import logging
import math
import os
import signal
import socket
import sys
import time
import uuid
from collections import OrderedDict
from typing import Callable, List, Optional, Sequence

import redis
from redis import Redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry
from rq.exceptions import DequeueTimeout, DeserializationError, StopRequested
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer
from rq.timeouts import JobTimeoutException, UnixSignalDeathPenalty
from rq.utils import now
from rq.worker import SimpleWorker, WorkerStatus, signal_name

from . import capabilities, config, environment, errors, execute, faults, registry
from .programs import Control

log = logging.getLogger(__name__)

BACKOFF_FIRST_SECONDS = 1
BACKOFF_CAP_SECONDS = 30
# rq's SIGALRM backstop fires this long after the job timeout: programs.py stops a program at
# the timeout itself, and that gives a ProgramTimeout in the result instead of a failed job.
TIMEOUT_GRACE_SECONDS = 30
SPEC_CACHE_SIZE = 16
JOB_ARGUMENTS = ("record", "spec", "spec_key", "reply_to", "attempt")
REDIS_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
CAPABILITIES_FIELD = "htportal_caps"  # on rq's worker hash: what capabilities.py found
EXIT_BROKEN = 3  # the node's environment is broken (docs/runtime.md, "Exit codes")


class JobRefused(Exception):
    """A job the worker will not run: its one-line message is the job's failure."""


class WorkerFault(Exception):
    """The job failed because of this node (its envelope says so); the worker leaves."""


def allowed_task_name(name: object) -> str:
    """The registry's name for the job function `name`; JobRefused for anything else."""
    try:
        return registry.task_entry(name).name  # type: ignore[arg-type]
    except registry.UnknownNameError as exc:
        raise JobRefused(
            f"function {str(name)!r} is not allowed (known: {', '.join(exc.known)})"
        ) from None


class TaskJob(Job):
    """An RQ job that is always JSON and whose function is a registry name, never imported.

    rq's Job.func imports the job's dotted path (import_attribute); here it resolves through
    registry.task_entry and binds the worker's runner. Callbacks, which rq would import by
    name too, never run.
    """

    runner = None  # set by the worker: runner(job, function_name, **kwargs)

    def __init__(self, id: Optional[str] = None, connection: Optional[Redis] = None,
                 serializer=None):
        super().__init__(id, connection, serializer=JSONSerializer)

    @property
    def func(self):
        name = allowed_task_name(self.func_name)
        if self.runner is None:
            raise RuntimeError(f"job {self.id}: runs on htportal's worker only")
        return functools.partial(self.runner, self, name)

    @property
    def success_callback(self):
        return None

    @property
    def failure_callback(self):
        return None

    @property
    def stopped_callback(self):
        return None


class GraceDeathPenalty(UnixSignalDeathPenalty):
    def __init__(self, timeout, exception=JobTimeoutException, **kwargs):
        if timeout and timeout > 0:
            timeout += TIMEOUT_GRACE_SECONDS
        super().__init__(timeout, exception, **kwargs)


class SpecCache:
    """Campaign specs by Redis key, fetched once per key (a Vina receptor is in the spec)."""

    def __init__(self, connection: Redis, size: int = SPEC_CACHE_SIZE):
        self.connection = connection
        self.size = size
        self.specs: "OrderedDict[str, dict]" = OrderedDict()

    def get(self, key: str) -> dict:
        if key in self.specs:
            self.specs.move_to_end(key)
            return self.specs[key]
        raw = self.connection.get(key)
        if raw is None:
            raise JobRefused(f"spec {key!r} is not in Redis (expired, or never written)")
        try:
            spec = json.loads(raw)
        except ValueError as exc:
            raise JobRefused(f"spec {key!r} is not JSON: {exc}") from None
        if not isinstance(spec, dict):
            raise JobRefused(f"spec {key!r} is not a JSON object")
        self.specs[key] = spec
        if len(self.specs) > self.size:
            self.specs.popitem(last=False)
        return spec


def redis_location(connection: Redis) -> str:
    """HOST:PORT (or the socket path) of a connection: never its password."""
    kwargs = connection.connection_pool.connection_kwargs
    if kwargs.get("path"):
        return str(kwargs["path"])
    return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"


def redis_reason(exc: BaseException) -> str:
    """The OS's words for a connection failure ("Connection refused"), else redis-py's."""
    seen = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.strerror:
            return seen.strerror
        seen = seen.__cause__ or seen.__context__
    return str(exc).rstrip(".") or type(exc).__name__


def connect(url: str) -> Redis:
    """A Redis client for the worker: TLS with rediss://, password from the URL, short retries."""
    return Redis.from_url(
        url,
        socket_connect_timeout=10,
        socket_keepalive=True,
        health_check_interval=30,
        # redis-py's own retries absorb a blip; an outage is the worker's backoff loop's job.
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.1), 2),
    )


class OpportunisticWorker(SimpleWorker):
    """rq's SimpleWorker with registry-only jobs, give-back on stop and Redis outage handling."""

    job_class = TaskJob
    death_penalty_class = GraceDeathPenalty
    log_result_lifespan = False

    def __init__(self, queues: Sequence[str], *, connection: Redis, name: str,
                 max_runtime: Optional[float] = None,
                 heartbeat_interval: float = config.DEFAULT_HEARTBEAT_INTERVAL,
                 capabilities: Optional[dict] = None,
                 repeated_failures: int = config.DEFAULT_REPEATED_FAILURES):
        super().__init__(list(queues), name=name, connection=connection,
                         serializer=JSONSerializer, job_class=TaskJob,
                         log_job_description=False,
                         job_monitoring_interval=max(1, int(heartbeat_interval)))
        self.started = time.monotonic()
        self.max_runtime = max_runtime
        self.heartbeat_interval = heartbeat_interval
        self.specs = SpecCache(connection)
        self.location = redis_location(connection)
        self._interruptible = False  # a signal may raise StopRequested (blocked waiting only)
        self._running: Optional[TaskJob] = None  # inside the task function
        self._giving_back: Optional[str] = None
        self._task_started = self._last_beat = 0.0
        self._heartbeat_failing = False
        self.capabilities = capabilities
        self.streak = faults.FailureStreak(repeated_failures)
        self.broken: Optional[str] = None  # why the node's environment is broken
        self._faulted: Optional[str] = None  # the job that found it out

    # --- life cycle -------------------------------------------------------------------------

    def time_left(self) -> Optional[float]:
        if self.max_runtime is None:
            return None
        return self.max_runtime - (time.monotonic() - self.started)

    def fits(self, job: Job) -> bool:
        """Whether `job` can run to its timeout before --max-runtime is up."""
        left = self.time_left()
        if left is None:
            return True
        timeout = job.timeout or self.queue_class.DEFAULT_TIMEOUT
        return 0 < timeout <= left

    def request_stop(self, signum, frame):
        """SIGTERM/SIGINT: stop the running program and give its job back, or stop waiting."""
        name = signal_name(signum)
        again = self._stop_requested
        self._stop_requested = True
        if self._running is not None and self._giving_back is None:
            if again:  # the task did not notice the first one: stop it where it is
                raise errors.Interrupted(f"{name} again")
            log.info("worker %s: %s, giving back job %s", self.name, name, self._running.id)
        elif self._interruptible:
            log.info("worker %s: %s, stopping", self.name, name)
            raise StopRequested()
        else:
            log.info("worker %s: %s, stopping after this step", self.name, name)

    def dequeue_job_and_maintain_ttl(self, timeout, max_idle_time=None):
        """rq's, plus --max-runtime, the backoff below and an interruptible wait only."""
        self.set_state(WorkerStatus.IDLE)
        self.procline("Listening on " + ",".join(self.queue_names()))
        idle_since = time.monotonic()
        while True:
            if self._stop_requested:
                raise StopRequested()
            wait = timeout
            if max_idle_time is not None:
                idle_left = max_idle_time - (time.monotonic() - idle_since)
                if idle_left <= 0:
                    return None
                wait = min(wait, math.ceil(idle_left))
            runtime_left = self.time_left()
            if runtime_left is not None:
                if runtime_left <= 0:
                    log.info("worker %s: --max-runtime reached, quitting", self.name)
                    raise StopRequested()
                wait = min(wait, math.ceil(runtime_left))
            try:
                self.heartbeat()
                if self.should_run_maintenance_tasks:
                    self.run_maintenance_tasks()
                self._interruptible = True
                try:
                    result = self.queue_class.dequeue_any(
                        self._ordered_queues, wait, connection=self.connection,
                        job_class=self.job_class, serializer=self.serializer,
                        death_penalty_class=self.death_penalty_class,
                    )
                finally:
                    self._interruptible = False
                if result is not None:
                    self.reorder_queues(reference_queue=result[1])
                    log.info("worker %s: job %s from %s", self.name, result[0].id, result[1].name)
                    return result
            except DequeueTimeout:
                continue
            except REDIS_ERRORS as exc:
                self.wait_for_redis(exc)

    def wait_for_redis(self, exc: BaseException) -> None:
        """Wait out a Redis outage (see wait_for_answer), then make sure we are registered."""
        wait_for_answer(self.connection, self.name, exc, lambda: self._stop_requested)
        log.info("worker %s: Redis at %s is back", self.name, self.location)
        self.ensure_registered()

    def register_birth(self):
        """rq's registration, plus what this node can run (capabilities.py) in the same hash."""
        super().register_birth()
        if self.capabilities is not None:
            self.connection.hset(self.key, CAPABILITIES_FIELD, json.dumps(self.capabilities))

    def leave_broken(self, reason: str) -> None:
        """Log the one line, stop taking jobs; main() then exits with EXIT_BROKEN."""
        log.error("worker %s: environment broken (%s); leaving", self.name, reason)
        self.broken = reason
        self._stop_requested = True

    def ensure_registered(self) -> None:
        """Register again when Redis lost us (it restarted empty), as rq does at start."""
        if self.connection.sismember(self.redis_workers_keys, self.key):
            return
        self.connection.delete(self.key)
        self.register_birth()
        self.set_state(WorkerStatus.IDLE)
        log.info("worker %s: registered again", self.name)

    def _pubsub_exception_handler(self, exc, pubsub, pubsub_thread):
        # The command channel reconnects by itself; the main loop already logs the outage.
        if isinstance(exc, redis.exceptions.ConnectionError):
            time.sleep(2.0)
        else:
            super()._pubsub_exception_handler(exc, pubsub, pubsub_thread)

    def teardown(self):
        try:
            super().teardown()
        except REDIS_ERRORS as exc:
            log.warning("worker %s: could not unregister: Redis at %s unreachable (%s)",
                        self.name, self.location, redis_reason(exc))

    # --- one job ----------------------------------------------------------------------------

    def execute_job(self, job, queue):
        try:
            self._execute_job(job, queue)
        except REDIS_ERRORS as exc:
            log.warning("worker %s: lost Redis during job %s; its outcome is not recorded",
                        self.name, job.id)
            self.wait_for_redis(exc)

    def _execute_job(self, job, queue):
        if self._stop_requested:
            self.put_back(job, queue)
            return
        if not self.fits(job):
            log.info("worker %s: job %s needs up to %ss, more than the %.0fs left of "
                     "--max-runtime: putting it back and quitting",
                     self.name, job.id, job.timeout, self.time_left())
            self.put_back(job, queue)
            self._stop_requested = True
            return
        try:
            self.check_job(job)
        except JobRefused as exc:
            self.refuse(job, queue, str(exc))
            return
        job.runner = self.run_task
        super().execute_job(job, queue)

    def check_job(self, job: TaskJob) -> None:
        """JobRefused unless the job is one we run: JSON, registry function, known arguments."""
        try:
            name, args, kwargs = job.func_name, job.args, job.kwargs
        except DeserializationError:
            raise JobRefused("job data is not RQ JSON (pickled jobs are not accepted)") from None
        allowed_task_name(name)
        if args:
            raise JobRefused("positional arguments are not accepted (use record, spec or spec_key)")
        unknown = sorted(set(kwargs) - set(JOB_ARGUMENTS))
        if unknown:
            raise JobRefused(f"unknown job argument(s) {', '.join(map(repr, unknown))} "
                             f"(known: {', '.join(JOB_ARGUMENTS)})")
        if not isinstance(kwargs.get("record"), dict):
            raise JobRefused("the job has no 'record' object")
        if isinstance(kwargs.get("spec"), dict) == isinstance(kwargs.get("spec_key"), str):
            raise JobRefused("the job needs either a 'spec' object or a 'spec_key'")
        if kwargs.get("spec_key") is not None:
            self.specs.get(kwargs["spec_key"])  # fetched now, so a missing spec is a refusal

    def run_task(self, job: TaskJob, function: str, *, record: dict, spec: Optional[dict] = None,
                 spec_key: Optional[str] = None, reply_to: Optional[str] = None,
                 attempt: Optional[str] = None) -> dict:
        """The job function: execute.execute, the result also pushed to reply_to."""
        control = Control(should_stop=lambda: self._stop_requested,
                          heartbeat=functools.partial(self.beat, job),
                          deadline=self.job_deadline(job),
                          heartbeat_interval=self.heartbeat_interval)
        self._running, self._task_started = job, time.monotonic()
        try:
            document = execute.execute(function=function, record=record,
                                       spec=spec if spec is not None else self.specs.get(spec_key),
                                       control=control)
        except errors.Interrupted:
            self._giving_back = job.id
            raise
        except Exception as exc:
            self.reply(reply_to, job.id, attempt,
                       error={"class": type(exc).__name__, "message": str(exc)})
            raise
        finally:
            self._running = None
        fault = faults.worker_fault(document) or self.streak.observe(document)
        if fault is not None:
            # The task goes back to the portal without an attempt counted; another node runs it.
            self.reply(reply_to, job.id, attempt, error={
                "class": fault["class"], "message": fault["message"], "fault": fault["fault"]})
            self._faulted = job.id
            self.leave_broken(fault["message"])
            raise WorkerFault(fault["message"])
        self.reply(reply_to, job.id, attempt, result=document)
        return document

    def job_deadline(self, job: Job) -> Optional[float]:
        timeout = job.timeout or self.queue_class.DEFAULT_TIMEOUT
        return time.monotonic() + timeout if timeout > 0 else None

    def reply(self, reply_to: Optional[str], job_id: str, attempt: Optional[str],
              **outcome) -> None:
        """Push the envelope: the job, the attempt id it was handed and this worker's name, so
        the collector can apply it to that delivery only (docs/runtime.md, "Result envelope")."""
        if isinstance(reply_to, str) and reply_to:
            envelope = dict(job_id=job_id, worker=self.name, **outcome)
            if isinstance(attempt, str):
                envelope["attempt"] = attempt
            self.connection.rpush(reply_to, json.dumps(envelope))

    def beat(self, job: Job) -> None:
        """Control.heartbeat: keep the worker, the job and its StartedJobRegistry entry alive.

        A Redis outage must not kill a task that has hours of CPU in it: log it once, go on.
        """
        if time.monotonic() - self._last_beat < self.heartbeat_interval / 2:
            return
        try:
            self.maintain_heartbeats(job)
            self.set_current_job_working_time(time.monotonic() - self._task_started)
        except REDIS_ERRORS as exc:
            if not self._heartbeat_failing:
                log.warning("worker %s: heartbeat failed: Redis at %s unreachable (%s); "
                            "job %s goes on", self.name, self.location, redis_reason(exc), job.id)
            self._heartbeat_failing = True
            return
        self._heartbeat_failing = False
        self._last_beat = time.monotonic()

    def refuse(self, job: TaskJob, queue, message: str) -> None:
        """Fail the job with `message` alone (no traceback), as rq records a failed job."""
        log.warning("worker %s: job %s refused: %s", self.name, job.id, message)
        self.prepare_execution(job)
        queue.intermediate_queue.remove(job.id)
        job.started_at = job.ended_at = now()
        self.handle_job_failure(job, queue, exc_string=message)
        try:
            reply_to, attempt = job.kwargs.get("reply_to"), job.kwargs.get("attempt")
        except DeserializationError:
            reply_to = attempt = None
        self.reply(reply_to, job.id, attempt, error={"class": "JobRefused", "message": message})
        self.set_state(WorkerStatus.IDLE)

    def put_back(self, job: Job, queue) -> None:
        """Return a job we dequeued but never started to the front of its queue, untouched."""
        with self.connection.pipeline() as pipe:
            pipe.lrem(queue.intermediate_queue_key, 1, job.id)
            queue.push_job_id(job.id, pipeline=pipe, at_front=True)
            pipe.execute()

    def give_back(self, job: Job, queue) -> None:
        """Requeue a started job at the front of its queue, out of StartedJobRegistry, unfailed."""
        with self.connection.pipeline() as pipe:
            self.cleanup_execution(job, pipeline=pipe)
            job.set_status(JobStatus.QUEUED, pipeline=pipe)
            queue.push_job_id(job.id, pipeline=pipe, at_front=True)
            pipe.execute()
        log.info("worker %s: job %s is back at the front of queue %s", self.name, job.id,
                 queue.name)

    # rq's perform_job treats every exception as a failure; Interrupted is a give-back.
    def handle_exception(self, job, *exc_info):
        if job.id not in (self._giving_back, self._faulted):  # both logged one line already
            super().handle_exception(job, *exc_info)

    def handle_job_failure(self, job, queue, started_job_registry=None, exc_string=""):
        if job.id == self._giving_back:
            self._giving_back = None
            self.give_back(job, queue)
            return
        super().handle_job_failure(job, queue, started_job_registry=started_job_registry,
                                   exc_string=exc_string)


# --- command line ---------------------------------------------------------------------------

def default_name() -> str:
    return f"{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:6]}"


def positive_number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be greater than 0")
    return value


PRIORITIES = ("high", "normal", "low")  # campaigns.pipeline_keys uses the same


def rq_queue_names(queues: Sequence[str]) -> List[str]:
    """The RQ queues to listen on: a campaign queue ("xtb") is its three priorities, highest
    first, then the plain RQ queue of that name; a name with a priority ("xtb:high") is taken
    as it is."""
    names: List[str] = []
    for queue in queues:
        expanded = [queue] if ":" in queue else [*(f"{queue}:{p}" for p in PRIORITIES), queue]
        names += [name for name in expanded if name not in names]
    return names


def positive_int(text: str) -> int:
    value = positive_number(text)
    if value != int(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number")
    return int(value)


def needs_list(text: str) -> List[str]:
    try:
        return capabilities.needed_programs([p.strip() for p in text.split(",") if p.strip()])
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="htportal-worker",
        description="htportal's opportunistic RQ worker: runs registry tasks from QUEUEs.")
    parser.add_argument("queues", nargs="+", metavar="QUEUE",
                        help="a campaign queue such as xtb (served as xtb:high, xtb:normal, "
                             "xtb:low, then plain xtb, in that order) or one RQ queue such as "
                             "xtb:high")
    parser.add_argument("--redis-url", help=f"redis:// or rediss:// URL (default: "
                        f"${config.REDIS_URL}, which keeps a password off the command line)")
    parser.add_argument("--max-idle", type=positive_number, metavar="S",
                        help="quit after S seconds without work")
    parser.add_argument("--max-tasks", type=positive_int, metavar="N", help="quit after N tasks")
    parser.add_argument("--max-runtime", type=positive_number, metavar="S",
                        help="quit before a task that could not finish within S seconds of start")
    parser.add_argument("--needs", type=needs_list, default=[], metavar="NAME,NAME",
                        help="programs (orca, xtb, vina, obabel) or task functions (xtb.run) "
                             "this worker's queues need: checked at start, leaving with exit "
                             "code 3 when one is missing (default: check none)")
    parser.add_argument("--name", help="worker name (default: HOST.PID.RANDOM)")
    parser.add_argument("--log-level", default="INFO",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"], type=str.upper)
    return parser.parse_args(argv)


def nap(seconds: float, stopped: Callable[[], bool]) -> None:
    """Sleep in short steps; StopRequested as soon as stopped() is true."""
    end = time.monotonic() + seconds
    while not stopped() and time.monotonic() < end:
        time.sleep(min(0.2, max(0.0, end - time.monotonic())))
    if stopped():
        raise StopRequested()


def wait_for_answer(connection: Redis, name: str, exc: BaseException,
                    stopped: Callable[[], bool]) -> None:
    """Ping with exponential backoff (1, 2, 4 ... 30 s) until Redis answers, one log line per
    attempt. Wrong credentials are not an outage: AuthenticationError goes up at once."""
    delay = BACKOFF_FIRST_SECONDS
    while True:
        if isinstance(exc, redis.exceptions.AuthenticationError):
            raise exc
        log.warning("worker %s: Redis at %s unreachable (%s); retrying in %ds",
                    name, redis_location(connection), redis_reason(exc), delay)
        nap(delay, stopped)
        try:
            connection.ping()
            return
        except REDIS_ERRORS as again:
            exc = again
            delay = min(delay * 2, BACKOFF_CAP_SECONDS)


def wait_for_first_contact(connection: Redis, name: str) -> None:
    """Wait until Redis answers before starting; SIGTERM/SIGINT end the wait (StopRequested)."""
    try:
        connection.ping()
        return
    except REDIS_ERRORS as exc:
        first = exc
    stop: List[int] = []
    signals = (signal.SIGTERM, signal.SIGINT)
    previous = [signal.signal(s, lambda signum, frame: stop.append(signum)) for s in signals]

    try:
        wait_for_answer(connection, name, first, lambda: bool(stop))
    finally:
        for s, old in zip(signals, previous):
            signal.signal(s, old)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(message)s")
    name = args.name or default_name()
    try:
        settings = config.load()
    except config.ConfigError as exc:
        log.error("worker %s: %s", name, exc)
        return 2
    # Nothing this process starts may inherit or read the Redis credential.
    environment.forget(config.REDIS_URL_NAMES)
    environment.protect_process()
    url = args.redis_url or settings.redis_url
    if not url:
        log.error("worker %s: no Redis: give --redis-url or set %s", name, config.REDIS_URL)
        return 2
    try:
        connection = connect(url)
    except ValueError as exc:  # redis-py names the scheme problem; never echo the URL itself
        log.error("worker %s: bad Redis URL: %s", name, str(exc).replace(url, "<url>"))
        return 2
    try:  # before any Redis traffic: a broken node takes nothing
        found = capabilities.capabilities_probe(needs=args.needs)
    except capabilities.EnvironmentBroken as exc:
        log.error("worker %s: environment broken (%s); leaving", name, exc)
        return EXIT_BROKEN
    location = redis_location(connection)
    worker: Optional[OpportunisticWorker] = None
    try:
        wait_for_first_contact(connection, name)
        worker = OpportunisticWorker(rq_queue_names(args.queues), connection=connection, name=name,
                                     max_runtime=args.max_runtime,
                                     heartbeat_interval=settings.heartbeat_interval,
                                     capabilities=found,
                                     repeated_failures=settings.repeated_failures)
        worker.work(logging_level=args.log_level, max_jobs=args.max_tasks,
                    max_idle_time=args.max_idle)
    except StopRequested:
        log.info("worker %s: stopped before starting work", name)
    except redis.exceptions.AuthenticationError as exc:
        log.error("worker %s: Redis at %s refused the credentials (%s)", name, location,
                  redis_reason(exc))
        return 1
    except ValueError as exc:  # rq: "There exists an active worker named ... already"
        log.error("worker %s: %s", name, exc)
        return 1
    return EXIT_BROKEN if worker is not None and worker.broken else 0


if __name__ == "__main__":
    sys.exit(main())
