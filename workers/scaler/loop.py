"""The scaler: `manage.py scale`. Every `interval` seconds, one step per enabled pool.

A step reads the pool's backlog and live workers (backlog.py) and the batch system's own view
(the adapter), decides (decisions.py), logs the decision with its reason, reports and removes
held or failed batch jobs, and submits what the decision asks for after bringing the bundle
and the env file up to date. A pool whose step fails gets an error event and backs off
(30 s, 60 s ... 1 h) while the loop goes on with the other pools. Connections stay open
between steps (one per pool) and are opened again after a failure. Pools are served in their
order of preference, and pools sharing a queue split its backlog in that order
(decisions.backlog_split). When the loop stops, the local workers it started stop with it.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from django.utils import timezone
from redis import Redis

from campaigns.loop_signals import DB_ERRORS, REDIS_ERRORS, StopSignals, loop_name
from campaigns.pipeline_keys import worker_rq_queues
from workers.models import ScalerEvent, WorkerPool
from workers.scaler.adapters import (adapter_for, pool_template, pool_work_dir, remote_key,
                                     remote_open)
from workers.scaler.backlog import PoolBacklog, pool_backlog
from workers.scaler.base import (AuthenticationFailed, BatchAdapter, HostKeyError, Remote,
                                 ScalerError, Submission, UnreachableError)
from workers.scaler.bundle_upload import PoolFiles, bundle_build_once, pool_files_ensure
from workers.scaler.condor import input_files, submit_settings
from workers.scaler.credentials import WorkerCredentials, worker_credentials
from workers.scaler.decisions import (Decision, Limits, PoolDemand, Situation, backlog_split,
                                      backoff_delay, backoff_waiting, broken_lines, decide,
                                      plural)
from workers.scaler.events import event_record
from workers.scaler.templates import TemplateValues, template_render

log = logging.getLogger(__name__)

STEP_INTERVAL_S = 30.0
# After these, the connection itself is suspect: the next step opens a new one.
CONNECTION_ERRORS = (UnreachableError, AuthenticationFailed, HostKeyError)
EVENT_JOB_LINES = 10


@dataclass
class ScaleTotals:
    steps: int = 0
    batch_jobs: int = 0
    workers: int = 0
    removed: int = 0
    errors: int = 0

    def line(self) -> str:
        return (f"{plural(self.steps, 'step')}: submitted {plural(self.batch_jobs, 'batch job')} "
                f"({plural(self.workers, 'worker')}), removed {self.removed:,}, "
                f"{plural(self.errors, 'error')}")


@dataclass
class PoolState:
    """What the loop keeps of one pool between steps."""

    key: tuple
    remote: Remote
    adapter: BatchAdapter
    files: Optional[PoolFiles] = None
    last_code: str = ""
    credentials: Optional[WorkerCredentials] = None

    def close(self) -> None:
        self.remote.close()

    def stop_workers(self) -> None:
        """Stop the workers the scaler itself runs (a local pool's); batch jobs stay."""
        stop = getattr(self.adapter, "stop", None)
        if stop is not None:
            stop()


def pool_limits(*, pool: WorkerPool) -> Limits:
    return Limits(min_workers=pool.min_workers, max_workers=pool.max_workers,
                  workers_per_job=pool.workers_per_job, max_waiting_jobs=pool.max_waiting_jobs,
                  removal_tries=pool.removal_tries)


def pool_template_values(*, pool: WorkerPool, files: PoolFiles, jobs: int,
                         workers_per_job: int) -> TemplateValues:
    """What the pool's template is filled with for a submission of `jobs` batch jobs."""
    queues = " ".join(name for queue in pool.queue_names
                      for name in worker_rq_queues(queue=queue))
    return TemplateValues(
        bundle=files.bundle, env_file=files.env_file, queues=queues, max_idle=pool.max_idle,
        max_runtime=pool.max_runtime, max_tasks=pool.max_tasks, jobs=jobs,
        workers_per_job=workers_per_job, work_dir=files.work_dir, log_dir=files.log_dir,
        setup=pool.setup,
        submit_settings=submit_settings(pool=pool, workers_per_job=workers_per_job),
        input_files=input_files(pool=pool, bundle=files.bundle, env_file=files.env_file))


class ScaleLoop:
    def __init__(self, *, connection: Redis, pool_name: Optional[str] = None,
                 dry_run: bool = False, interval: float = STEP_INTERVAL_S,
                 name: Optional[str] = None) -> None:
        self.connection = connection
        self.pool_name = pool_name
        self.dry_run = dry_run
        self.interval = interval
        self.name = name or loop_name("scaler")
        self.signals = StopSignals(name=f"scaler {self.name}", doing="stopping after this pool")
        self.states: Dict[int, PoolState] = {}
        self.totals = ScaleTotals()
        self.own_workers = True

    def run(self, *, once: bool = False) -> ScaleTotals:
        """Step until SIGTERM/SIGINT (once=True: one step); return the totals."""
        dry = " (dry run: nothing is submitted or removed)" if self.dry_run else ""
        # A loop's local workers end with it; those of one step stay until their idle timeout.
        self.own_workers = not once
        log.info("scaler %s: a step every %g s%s", self.name, self.interval, dry)
        with self.signals:
            try:
                while not self.signals.stopping:
                    self.step()
                    if once:
                        break
                    self.signals.nap(self.interval)
            finally:
                for state in self.states.values():
                    if self.own_workers:
                        state.stop_workers()
                    state.close()
                self.states.clear()
        return self.totals

    def step(self) -> None:
        """One step for every pool in turn; a Redis or database outage ends it early."""
        self.totals.steps += 1
        try:
            pools = self._pools()
            backlogs = self._backlogs(pools)
            failed: set = set()
            for pool in pools:  # in order of preference
                if self.signals.stopping:
                    break
                share = None
                if pool.pk in backlogs:
                    shares = backlog_split([
                        PoolDemand(name=other.name, preference=other.preference,
                                   queues=frozenset(other.queue_names),
                                   backlog=backlogs[other.pk].tasks,
                                   max_workers=other.max_workers)
                        for other in pools if other.pk in backlogs and other.pk not in failed])
                    share = (backlogs[pool.pk], shares[pool.name])
                if self.pool_step(pool=pool, share=share) is None:
                    failed.add(pool.pk)  # its share goes to the next pools in this step
        except REDIS_ERRORS + DB_ERRORS as exc:
            log.warning("scaler %s: %s (%s); trying again next step", self.name,
                        "Redis unreachable" if isinstance(exc, REDIS_ERRORS)
                        else "database unavailable", exc)

    def _backlogs(self, pools: List[WorkerPool]) -> Dict[int, PoolBacklog]:
        """{pool pk: its backlog} of the pools served this step (a pool backing off, or one
        whose step fails, takes no share: the next pools in preference get its work)."""
        now = timezone.now()
        return {pool.pk: pool_backlog(pool=pool, connection=self.connection) for pool in pools
                if not backoff_waiting(next_try_at=pool.next_try_at, now=now)}

    def pool_step(self, *, pool: WorkerPool, share: Optional[Tuple[PoolBacklog, int]] = None
                  ) -> Optional[Decision]:
        """Serve one pool; None when it is backing off or failed (then it backs off).
        `share`: its backlog and its share of it (else the whole backlog is its own)."""
        if backoff_waiting(next_try_at=pool.next_try_at, now=timezone.now()):
            log.debug("pool %s: backing off until %s", pool.name, pool.next_try_at)
            return None
        try:
            decision = self._serve(pool, share)
        except REDIS_ERRORS + DB_ERRORS:
            raise
        except ScalerError as exc:
            self._failed(pool, exc)
            return None
        except Exception as exc:  # an adapter's bug must not stop the other pools
            log.exception("pool %s: unexpected error", pool.name)
            self._failed(pool, exc)
            return None
        if pool.consecutive_failures and not self.dry_run:
            log.info("pool %s: working again after %d failures", pool.name,
                     pool.consecutive_failures)
            WorkerPool.objects.filter(pk=pool.pk).update(consecutive_failures=0, next_try_at=None)
        return decision

    # -- one pool ---------------------------------------------------------------------------

    def _serve(self, pool: WorkerPool, share: Optional[Tuple[PoolBacklog, int]]) -> Decision:
        state = self._state(pool)
        fresh = state.files is None  # first step with this connection: files just checked
        if fresh:
            state.files = self._files(pool, state)
        if share is None:
            backlog = pool_backlog(pool=pool, connection=self.connection)
            tasks = backlog.tasks
        else:
            backlog, tasks = share
        view = state.adapter.view(state.remote, work_dir=state.files.work_dir)
        decision = decide(pool=pool.name, limits=pool_limits(pool=pool), situation=Situation(
            backlog=tasks, live=backlog.live, view=view, seen=pool.broken_jobs,
            queue_backlog=backlog.tasks))
        log.info("%s%s", decision.reason, " (dry run)" if self.dry_run else "")
        if self.dry_run:
            return decision
        self._report_broken(pool, decision)
        if decision.remove:
            self._remove(pool, state, decision)
        if decision.batch_jobs:
            self._submit(pool, state, decision, backlog, files_checked=fresh)
        elif decision.code != state.last_code:
            event_record(pool=pool, kind=ScalerEvent.Kind.DECISION, message=decision.reason,
                         details={"code": decision.code, **decision.numbers})
        state.last_code = decision.code
        if decision.seen != pool.broken_jobs:
            WorkerPool.objects.filter(pk=pool.pk).update(broken_jobs=decision.seen)
        return decision

    def _state(self, pool: WorkerPool) -> PoolState:
        key = remote_key(pool=pool) + (pool_work_dir(pool=pool), pool.command_env)
        state = self.states.get(pool.pk)
        if state is None or state.key != key:
            if state is not None:
                state.close()
            state = PoolState(key, remote_open(pool=pool), adapter_for(pool=pool))
            if hasattr(state.adapter, "die_with_scaler"):
                state.adapter.die_with_scaler = self.own_workers
            self.states[pool.pk] = state
        return state

    def _files(self, pool: WorkerPool, state: PoolState) -> PoolFiles:
        work_dir = pool_work_dir(pool=pool)
        if self.dry_run:  # change nothing on the host
            return PoolFiles(work_dir, "", "", "")
        # Checked before anything is written: a refusal leaves the host's files as they were.
        credentials = worker_credentials(pool=pool)
        if credentials.warning:
            log.warning("%s", credentials.warning)
            # The portal's password on a node is worth an event of its own (once per change).
            if credentials.has_password and (state.credentials is None
                                             or state.credentials.warning != credentials.warning):
                event_record(pool=pool, kind=ScalerEvent.Kind.ERROR, message=credentials.warning,
                             details={"error": "PortalRedisCredentials",
                                      "redis_user": credentials.user})
        state.credentials = credentials
        bundle = None if pool.kind == WorkerPool.Kind.LOCAL else bundle_build_once()
        return pool_files_ensure(remote=state.remote, work_dir=work_dir, bundle=bundle,
                                 redis_url=credentials.url)

    def _submit(self, pool: WorkerPool, state: PoolState, decision: Decision,
                backlog: PoolBacklog, *, files_checked: bool) -> None:
        if not files_checked:  # the host may have lost them since (a cleaned scratch disk)
            state.files = self._files(pool, state)
        files = state.files
        script = template_render(pool_template(pool=pool), pool_template_values(
            pool=pool, files=files, jobs=decision.batch_jobs,
            workers_per_job=decision.workers_per_job))
        job_ids = state.adapter.submit(state.remote, Submission(
            decision.batch_jobs, decision.workers_per_job, script, files.work_dir))
        self.totals.batch_jobs += decision.batch_jobs
        self.totals.workers += decision.workers
        done = (f"submitted {plural(decision.batch_jobs, 'batch job')} × "
                f"{plural(decision.workers_per_job, 'worker')} ({_some(job_ids)})")
        log.info("pool %s: %s", pool.name, done)
        message = f"{done}: {decision.reason}"
        credentials = state.credentials
        event_record(pool=pool, kind=ScalerEvent.Kind.SUBMIT, message=message, details={
            "job_ids": job_ids, "uploaded": list(files.uploaded), "ledger": backlog.ledger,
            "redis": backlog.redis, **decision.numbers,
            "redis_user": credentials.user if credentials else "",
            **({"redis_warning": credentials.warning} if credentials and credentials.warning
               else {})})

    def _report_broken(self, pool: WorkerPool, decision: Decision) -> None:
        if decision.newly_broken:
            tries = plural(pool.removal_tries, "step")
            self._jobs_event(pool, ScalerEvent.Kind.ERROR, decision.newly_broken,
                             f"{plural(len(decision.newly_broken), 'batch job')} held or failed "
                             f"(removed after {tries})")

    def _remove(self, pool: WorkerPool, state: PoolState, decision: Decision) -> None:
        state.adapter.remove(state.remote, [job.job_id for job in decision.remove])
        self.totals.removed += len(decision.remove)
        self._jobs_event(pool, ScalerEvent.Kind.REMOVE, decision.remove,
                         f"removed {plural(len(decision.remove), 'batch job')} held or failed "
                         f"in {plural(pool.removal_tries, 'step')}")

    def _jobs_event(self, pool: WorkerPool, kind: str, jobs, head: str) -> None:
        """Log and record `head`, then the first jobs with their batch system's reasons."""
        message = f"{head}: {'; '.join(broken_lines(list(jobs))[:EVENT_JOB_LINES])}"
        log.log(logging.WARNING if kind == ScalerEvent.Kind.ERROR else logging.INFO,
                "pool %s: %s", pool.name, message)
        event_record(pool=pool, kind=kind, message=message, details={"jobs": _job_rows(jobs)})

    def _failed(self, pool: WorkerPool, exc: BaseException) -> None:
        self.totals.errors += 1
        failures = pool.consecutive_failures + 1
        delay = backoff_delay(failures)
        message = str(exc) or type(exc).__name__
        log.warning("pool %s: %s: %s; failure %d in a row, next try in %s", pool.name,
                    type(exc).__name__, message, failures, delay)
        if isinstance(exc, CONNECTION_ERRORS) or not isinstance(exc, ScalerError):
            state = self.states.pop(pool.pk, None)
            if state is not None:
                state.close()
        if self.dry_run:
            return
        next_try_at = timezone.now() + delay
        WorkerPool.objects.filter(pk=pool.pk).update(consecutive_failures=failures,
                                                     next_try_at=next_try_at)
        event_record(pool=pool, kind=ScalerEvent.Kind.ERROR, message=message, details={
            "error": type(exc).__name__, "failures": failures,
            "next_try_at": next_try_at.isoformat()})

    def _pools(self) -> List[WorkerPool]:
        pools = WorkerPool.objects.order_by("preference", "name")
        if self.pool_name:
            pools = pools.filter(name=self.pool_name)
        chosen = []
        for pool in pools:
            if pool.enabled:
                chosen.append(pool)
            elif self.pool_name:
                log.info("pool %s: disabled; not scaled", pool.name)
        for pk in set(self.states) - {pool.pk for pool in chosen}:
            self.states.pop(pk).close()  # a pool disabled or deleted since the last step
        return chosen


def _some(job_ids: List[str], most: int = 5) -> str:
    shown = ", ".join(job_ids[:most])
    return shown + (f" and {len(job_ids) - most:,} more" if len(job_ids) > most else "")


def _job_rows(jobs) -> List[dict]:
    return [{"job_id": job.job_id, "state": job.state, "reason": job.reason} for job in jobs]
