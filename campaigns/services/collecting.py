"""Collecting results: the reply envelopes workers push onto `htportal:results` become record
results, kept files and ledger states (docs/pipeline.md, "Collecting").

One batch (`results_collect`):
1. read up to `limit` envelopes and at most `max_batch_bytes` (nothing removed yet), from the
   retry lists of datasets whose store is due again first, then from `htportal:results`;
2. check each at the door (campaigns.collector.envelopes) and attribute it to one delivery of
   one task: its attempt id, the worker rq recorded on the job, its record. What cannot be
   attributed, or is forged, becomes a dead letter; a stale or duplicate delivery is skipped;
   neither counts as an attempt. One outcome per task: a success beats a failure;
3. store the kept files, one decoded at a time;
4. in ONE transaction, per dataset (a savepoint each): the ledger's conditional updates, then
   the records' results of the updates that matched; then the rollup and finished campaigns,
   and, right before the commit, a check that the lock is still ours;
5. only after the commit, atomically and only while the lock is ours: trim the envelopes taken,
   file the dead letters, and move the results of datasets whose store or storage is down to
   their retry lists (campaigns.collector.retries).

A collector that dies anywhere before step 5 leaves the batch in Redis; the next run applies
it again, and the conditional updates make that change nothing twice. Every exception of one
envelope, task, kept file or dataset's store becomes that task's outcome (BadResult,
StoreError, StorageError) or that dataset's wait; only database errors (DB_ERRORS) and Redis
errors propagate, with the batch in Redis, and pause the loop.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from redis import Redis

from campaigns import pipeline_keys as keys
from campaigns.attempts import BadAttempt, attempt_delivery
from campaigns.collector.dead_letters import DEAD_LETTERS_KEEP, DEAD_LETTERS_KEY, dead_letter_entry
from campaigns.collector.envelopes import MAX_DEPTH, Envelope, envelopes_read
from campaigns.collector.host_faults import host_faults_record
from campaigns.collector.ledger_writes import ledger_apply
from campaigns.collector.outcomes import BadResult, Outcome, outcome_of
from campaigns.collector.retries import (retries_waiting, retry_clear, retry_list_key,
                                         retry_schedule)
from campaigns.collector.rq_cleanup import NOT_STARTED, jobs_forget, worker_names
from campaigns.collector.store_writes import (DB_ERRORS, StoreDown, StoreRefused, kept_files_save,
                                              records_existing, results_write)
from campaigns.locks import LockLost, lists_trim_if_holder
from campaigns.models import ArgSet, Task
from campaigns.services.lifecycle import campaigns_finish
from campaigns.services.sampling import SAMPLING_FUNCTIONS, samples_insert
from campaigns.services.rollups import task_minutes_add, transitions_of
from workers.runtime.keepfiles import DEFAULT_DECODE_CAP

if TYPE_CHECKING:
    from campaigns.locks import LoopLock

__all__ = ["BadResult", "CollectReport", "DEFAULT_LIMIT", "DEFAULT_MAX_RESULT_BYTES",
           "results_collect"]

log = logging.getLogger(__name__)

DEFAULT_LIMIT = 500
# One envelope larger than this is refused: kept files are capped per file on the worker, but a
# worker is not trusted to have applied the cap.
DEFAULT_MAX_RESULT_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_BATCH_BYTES = 64 * 1024 * 1024
# Inside a batch the lock is renewed at least this often (LOCK_TTL_S is 20 s).
RENEW_EVERY_S = 2.0
DONE_OR_GONE = (Task.State.DONE, Task.State.CANCELLED)


@dataclass
class CollectReport:
    taken: int = 0       # envelopes read from the lists (and trimmed after the commit)
    done: int = 0
    retried: int = 0
    failed: int = 0      # failed for good (max_attempts reached, or the record is gone)
    skipped: int = 0     # a duplicate or stale delivery, or a task already done
    discarded: int = 0   # dead letters: unattributable or forged envelopes
    deferred: int = 0    # waiting in a retry list for their dataset's store or the storage
    faults: int = 0      # worker faults (no attempt counted)
    files: int = 0
    seconds: float = 0.0
    lag_s: float | None = None  # age of the oldest result in the batch
    finished_campaigns: list[str] = field(default_factory=list)

    def line(self) -> str:
        """`collected 500 results (498 done, 2 retried) in 0.21 s; lag 1.2 s`"""
        parts = [f"{self.done} done"]
        for count, what in ((self.retried, "retried"), (self.failed, "failed"),
                            (self.faults, "worker faults"), (self.skipped, "already done"),
                            (self.discarded, "dead letters"),
                            (self.deferred, "waiting for their store")):
            if count:
                parts.append(f"{count} {what}")
        lag = f"; lag {self.lag_s:.1f} s" if self.lag_s is not None else ""
        return (f"collected {self.taken} results ({', '.join(parts)}) in {self.seconds:.2f} s"
                f"{lag}")


class _Renewer:
    """Renews the lock inside a batch; LockLost once it is no longer ours."""

    def __init__(self, lock: LoopLock | None) -> None:
        self.lock = lock
        self.last = time.monotonic()

    def tick(self) -> None:
        if self.lock is not None and time.monotonic() - self.last >= RENEW_EVERY_S:
            self.check()

    def check(self) -> None:
        if self.lock is not None:
            if not self.lock.renew():
                raise LockLost(f"the lock {self.lock.key} is no longer ours; the batch stays "
                               "in Redis")
            self.last = time.monotonic()


@dataclass
class _Batch:
    envelopes: list[Envelope]
    outcomes: list[Outcome] = field(default_factory=list)
    dead: list[bytes] = field(default_factory=list)
    deferred: dict[int, list[Outcome]] = field(default_factory=dict)  # dataset id -> outcomes
    down: dict[int, str] = field(default_factory=dict)  # dataset id -> why its store is down
    read: set[str] = field(default_factory=set)  # the lists a batch was read from

    def defer(self, outcome: Outcome) -> None:
        self.deferred.setdefault(outcome.task.campaign.dataset_id, []).append(outcome)

    def bury(self, envelope: Envelope, reason: str) -> None:
        log.warning("collector: envelope refused (dead letter): %s", reason)
        self.dead.append(dead_letter_entry(reason=reason, raw=envelope.raw, size=envelope.size))


def results_collect(*, connection: Redis, limit: int = DEFAULT_LIMIT,
                    max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES,
                    lock: LoopLock | None = None, max_batch_bytes: int | None = None,
                    max_kept_file_bytes: int | None = None) -> CollectReport:
    """Collect up to `limit` results; see the module's docstring.

    Database and Redis errors propagate with the batch still in Redis. With `lock`, the batch
    is written and trimmed only while the lock is ours (LockLost otherwise).
    """
    started = time.monotonic()
    max_batch_bytes = max_batch_bytes or getattr(settings, "COLLECT_MAX_BATCH_BYTES",
                                                 DEFAULT_MAX_BATCH_BYTES)
    max_kept_file_bytes = max_kept_file_bytes or getattr(
        settings, "COLLECT_MAX_KEPT_FILE_BYTES", DEFAULT_DECODE_CAP)
    renewer = _Renewer(lock)
    waiting = retries_waiting(connection)
    batch = _Batch(envelopes=_read(connection, waiting, limit, max_batch_bytes, max_result_bytes))
    batch.read = {envelope.source for envelope in batch.envelopes} | {
        retry_list_key(d) for d, state in waiting.items() if state.due(time.time())}
    report = CollectReport(taken=len(batch.envelopes))
    if batch.envelopes:
        renewer.tick()
        _attribute(connection, batch, waiting, report)
        _check_records(batch)
        report.files = _save_files(batch, max_kept_file_bytes, renewer)
        with transaction.atomic():
            applied = _write(batch, renewer)
            task_minutes_add(transitions=transitions_of(task for _, task in applied))
            report.finished_campaigns = campaigns_finish(
                campaign_ids={task.campaign_id for _, task in applied})
            renewer.check()  # the last moment a collector that lost its lock can stand back
        _count(applied, report, batch)
        _file_away(connection, batch, lock)
        _after_trim(connection, batch, waiting, applied)
        report.lag_s = _lag(applied)
    elif waiting:  # due retry lists that turned out empty: their wait is over
        retry_clear(connection=connection, dataset_ids={
            d for d in waiting if retry_list_key(d) in batch.read})
    report.seconds = time.monotonic() - started
    return report


# --- reading and attributing ------------------------------------------------------------------

def _read(connection: Redis, waiting: dict, limit: int, max_batch_bytes: int,
          max_result_bytes: int) -> list[Envelope]:
    depth = getattr(settings, "COLLECT_MAX_DEPTH", MAX_DEPTH)
    now, envelopes = time.time(), []
    sources = [retry_list_key(d) for d, state in sorted(waiting.items()) if state.due(now)]
    for key in [*sources, keys.RESULTS_KEY]:
        left = limit - len(envelopes)
        budget = max_batch_bytes - sum(min(e.size, max_result_bytes) for e in envelopes)
        if left < 1 or budget < 1:
            break
        envelopes += envelopes_read(connection=connection, key=key, limit=left,
                                    max_batch_bytes=budget, max_result_bytes=max_result_bytes,
                                    max_depth=depth)
    return envelopes


def _attribute(connection: Redis, batch: _Batch, waiting: dict, report: CollectReport) -> None:
    """Turn each envelope into its task's outcome, a dead letter, or a skip (one per task)."""
    job_ids = sorted({e.job_id for e in batch.envelopes if e.orphan is None and e.job_id})
    names = worker_names(connection=connection, job_ids=job_ids)  # before anything deletes
    tasks = {task.job_id: task for task in Task.objects.select_related("campaign__dataset")
             .filter(job_id__in=job_ids)}
    arg_sets = _arg_set_names({task.campaign_id for task in tasks.values()})
    now = time.time()
    chosen: dict[str, Outcome] = {}
    for envelope in batch.envelopes:
        try:
            outcome = _outcome(envelope, tasks, names, arg_sets, batch, report)
        except Exception as exc:  # noqa: BLE001 - one envelope never stops the batch
            log.exception("collector: envelope could not be read")
            batch.bury(envelope, f"the collector could not read it ({type(exc).__name__})")
            continue
        if outcome is None:
            continue
        state = waiting.get(outcome.task.campaign.dataset_id)
        if (outcome.needs_store and state is not None and not state.due(now)
                and envelope.source == keys.RESULTS_KEY):
            batch.defer(outcome)  # its store is down: straight to its retry list
            continue
        earlier = chosen.get(outcome.task.job_id)
        if earlier is None or (outcome.success and not earlier.success):
            chosen[outcome.task.job_id] = outcome
        report.skipped += earlier is not None
    batch.outcomes = list(chosen.values())


def _outcome(envelope: Envelope, tasks: dict, names: dict, arg_sets: dict, batch: _Batch,
             report: CollectReport) -> Outcome | None:
    if envelope.orphan is not None:
        batch.bury(envelope, envelope.orphan)
        return None
    job_id, data = envelope.job_id, envelope.data
    task = tasks.get(job_id)
    if task is None:
        batch.bury(envelope, f"no task has job id {job_id!r}")
        return None
    try:
        delivery = attempt_delivery(job_id=job_id, attempt=data.get("attempt"))
    except BadAttempt as exc:
        batch.bury(envelope, f"job {job_id}: {exc}")
        return None
    if delivery != task.delivery or task.state in DONE_OR_GONE:
        report.skipped += 1  # a replay, or a delivery the ledger has moved past
        log.debug("collector: job %s: delivery %d skipped (task %s on delivery %d)", job_id,
                  delivery, task.state, task.delivery)
        return None
    worker = data.get("worker") if isinstance(data.get("worker"), str) else ""
    recorded = names.get(job_id)
    if recorded == NOT_STARTED:
        # rq names the worker on the job before it runs it: a result for a job no worker took
        # was made up by somebody who read the job (its attempt id included).
        batch.bury(envelope, f"job {job_id}: sent by {worker[:100]!r} for a job no worker has "
                             f"taken yet")
        return None
    if recorded and worker != recorded:
        batch.bury(envelope, f"job {job_id}: sent by worker {worker[:100]!r}, but rq gave the "
                             f"job to {recorded[:100]!r}")
        return None
    result = data.get("result")
    if isinstance(result, dict) and result.get("record_id") != task.record_id:
        batch.bury(envelope, f"job {job_id}: the result is for record "
                             f"{str(result.get('record_id'))[:100]!r}, the task's is "
                             f"{task.record_id!r} (campaign {task.campaign.name})")
        return None
    outcome = outcome_of(task=task, data=data, problem=envelope.problem,
                         arg_sets=arg_sets[task.campaign_id], worker=worker)
    outcome.envelope, outcome.delivery = envelope, delivery
    return outcome


def _arg_set_names(campaign_ids: set[int]) -> dict[int, set[str]]:
    names: dict[int, set[str]] = {campaign_id: set() for campaign_id in campaign_ids}
    for campaign_id, name in ArgSet.objects.filter(campaign_id__in=campaign_ids).values_list(
            "campaign_id", "name"):
        names[campaign_id].add(name)
    return names


# --- the store, the storage -------------------------------------------------------------------

def _by_dataset(outcomes: list[Outcome]) -> dict[int, list[Outcome]]:
    groups: dict[int, list[Outcome]] = {}
    for outcome in outcomes:
        groups.setdefault(outcome.task.campaign.dataset_id, []).append(outcome)
    return dict(sorted(groups.items()))


def _set_down(batch: _Batch, dataset_id: int, reason: str) -> None:
    if dataset_id not in batch.down:
        log.warning("collector: %s; its results wait in Redis", reason)
    batch.down[dataset_id] = reason


def _check_records(batch: _Batch) -> None:
    """A record deleted while its task was out fails the task for good (RecordMissing)."""
    for dataset_id, group in _by_dataset(batch.outcomes).items():
        dataset = group[0].task.campaign.dataset
        try:
            existing = records_existing(dataset, [o.task.record_id for o in group])
        except StoreDown as exc:
            _set_down(batch, dataset_id, str(exc))
            continue
        for outcome in group:
            if outcome.task.record_id not in existing:
                outcome.fail("RecordMissing", f"record {outcome.task.record_id!r} is no longer "
                             f"in dataset {dataset.name!r}", final=True)


def _save_files(batch: _Batch, max_bytes: int, renewer: _Renewer) -> int:
    saved = 0
    for outcome in batch.outcomes:
        dataset_id = outcome.task.campaign.dataset_id
        if not outcome.files or dataset_id in batch.down:
            continue
        try:
            saved += kept_files_save(outcome, max_bytes=max_bytes)
        except StoreDown as exc:
            _set_down(batch, dataset_id, str(exc))
        renewer.tick()
    return saved


def _write(batch: _Batch, renewer: _Renewer) -> list[tuple[Outcome, Task]]:
    """Ledger and records, per dataset in a savepoint; return what was applied."""
    applied: list[tuple[Outcome, Task]] = []
    for dataset_id, group in _by_dataset(batch.outcomes).items():
        dataset = group[0].task.campaign.dataset
        if dataset_id in batch.down:
            for outcome in group:
                if outcome.needs_store:
                    batch.defer(outcome)
            group = [o for o in group if not o.needs_store]
        try:
            applied += _apply(dataset, group)
        except StoreDown as exc:
            _set_down(batch, dataset_id, str(exc))
            for outcome in group:
                if outcome.needs_store:
                    batch.defer(outcome)
            applied += _apply(dataset, [o for o in group if not o.needs_store])
        except StoreRefused:
            applied += _apply_one_by_one(batch, dataset, group)
        renewer.tick()
    return applied


def _apply(dataset, outcomes: list[Outcome]) -> list[tuple[Outcome, Task]]:
    if not outcomes:
        return []
    with transaction.atomic():
        pairs = ledger_apply(outcomes)
        updates = [u for outcome, _ in pairs for u in outcome.updates]
        results_write(dataset, updates)
        _samples_insert(pairs)
    return pairs


def _samples_insert(pairs: list[tuple[Outcome, Task]]) -> None:
    """Frames of MD results whose arg set samples into a dataset (campaigns.services.sampling),
    in the same transaction as the results. A failure here is logged and leaves the results
    written: the samples of that result can be made again with `manage.py sample_frames`."""
    by_campaign: dict[int, tuple] = {}
    for outcome, task in pairs:
        if task.campaign.function in SAMPLING_FUNCTIONS and outcome.updates:
            by_campaign.setdefault(task.campaign_id, (task.campaign, []))[1].extend(
                outcome.updates)
    for campaign, updates in by_campaign.values():
        try:
            with transaction.atomic():
                samples_insert(campaign=campaign, updates=updates)
        except DB_ERRORS:
            raise
        except Exception:  # noqa: BLE001 - one campaign's sampling must not stop collecting
            log.exception("campaign %s: sampling frames into a dataset failed; the results are "
                          "written", campaign.name)


def _apply_one_by_one(batch: _Batch, dataset, group: list[Outcome]) -> list[tuple[Outcome, Task]]:
    """The store refused the group's write: find which results it refuses, fail those with
    StoreError, write the others."""
    applied = []
    for outcome in group:
        if dataset.pk in batch.down and outcome.needs_store:
            batch.defer(outcome)
            continue
        try:
            applied += _apply(dataset, [outcome])
        except StoreDown as exc:
            _set_down(batch, dataset.pk, str(exc))
            batch.defer(outcome)
        except StoreRefused as exc:
            outcome.fail("StoreError", f"dataset {dataset.name}: the store refused the result: "
                                       f"{exc}")
            applied += _apply(dataset, [outcome])
    return applied


# --- after the commit -------------------------------------------------------------------------

def _count(applied: list[tuple[Outcome, Task]], report: CollectReport, batch: _Batch) -> None:
    for outcome, task in applied:
        if task.state == Task.State.DONE:
            report.done += 1
        elif task.state == Task.State.FAILED:
            report.failed += 1
            log.warning("collector: task %s (record %s) failed for good after %d attempt(s): "
                        "%s: %s", task.job_id, task.record_id, task.attempts, task.error_class,
                        task.error_message[:200])
        elif outcome.fault:
            report.faults += 1
        else:
            report.retried += 1
    settled = {id(o) for o, _ in applied} | {id(o) for group in batch.deferred.values()
                                              for o in group}
    report.skipped += sum(id(o) not in settled for o in batch.outcomes)
    report.discarded = len(batch.dead)
    report.deferred = sum(len(outcomes) for outcomes in batch.deferred.values())


def _file_away(connection: Redis, batch: _Batch, lock: LoopLock | None) -> None:
    """Trim what was taken; dead letters and deferred results to their lists (one step)."""
    trims: dict[str, int] = {}
    for envelope in batch.envelopes:
        trims[envelope.source] = trims.get(envelope.source, 0) + 1
    pushes: dict[str, tuple[list[bytes], int]] = {DEAD_LETTERS_KEY: (batch.dead,
                                                                     DEAD_LETTERS_KEEP)}
    for dataset_id, outcomes in batch.deferred.items():
        pushes[retry_list_key(dataset_id)] = ([o.envelope.raw for o in outcomes], 0)
    lists_trim_if_holder(connection=connection, lock=lock, trims=trims, pushes=pushes)


def _after_trim(connection: Redis, batch: _Batch, waiting: dict,
                applied: list[tuple[Outcome, Task]]) -> None:
    for dataset_id, reason in batch.down.items():
        failures = waiting[dataset_id].failures + 1 if dataset_id in waiting else 1
        delay = retry_schedule(connection=connection, dataset_id=dataset_id, failures=failures,
                               reason=reason)
        log.warning("collector: results of dataset %s wait in Redis (%s); next try in %g s",
                    dataset_id, reason, delay)
    retry_clear(connection=connection, dataset_ids={
        d for d in waiting if retry_list_key(d) in batch.read and d not in batch.down})
    host_faults_record(connection=connection, faults=[
        (outcome.host or outcome.worker, f"{outcome.error[0]}: {outcome.error[1]}")
        for outcome, _ in applied if outcome.fault])
    jobs_forget(connection=connection, tasks=[task for _, task in applied])


def _lag(applied: list[tuple[Outcome, Task]]) -> float | None:
    finished = [o.finished_at for o, _ in applied if o.finished_at is not None]
    if not finished:
        return None
    return max(0.0, (timezone.now() - min(finished)).total_seconds())
