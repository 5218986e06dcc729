"""Collecting results: the reply envelopes workers push onto `htportal:results` become record
results, kept files and ledger states.

One batch (`results_collect`): read up to `limit` envelopes (LRANGE, nothing removed yet),
check each one, store the kept files, then in ONE transaction write the records' results and
update the ledger, and only after the commit trim the envelopes from the list. A collector that
dies anywhere before the trim leaves the batch in Redis, and the next run writes it again:
writing is idempotent, and a task already `done` is skipped, so every result is written once
(and counted once in the per-minute rollup, campaigns.services.rollups, written in the same
transaction from the tasks of the batch, none of which was finished before it).

A result that does not check out (not JSON, wrong shape, another record, too large, a kept
file whose checksum fails) fails its task with the reason as a failed attempt; it never stops
the batch. A failed attempt goes back to `pending` until the campaign's `max_attempts`.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone as dt_timezone
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.utils import timezone
from redis import Redis
from rq.job import Job
from rq.results import get_key as result_key

from campaigns import pipeline_keys as keys
from campaigns.bulk import rows_update
from campaigns.locks import LockLost
from campaigns.models import ArgSet, Task
from campaigns.services.lifecycle import campaigns_finish
from campaigns.services.kept_files import kept_file_save
from campaigns.services.rollups import task_minutes_add, transitions_of
from campaigns.stores import ResultUpdate, store_for
from workers.runtime import keepfiles
from workers.runtime.errors import KeepFileError

if TYPE_CHECKING:
    from campaigns.locks import LoopLock

log = logging.getLogger(__name__)

DEFAULT_LIMIT = 500
# One envelope larger than this is refused: kept files are capped per file on the worker, but a
# worker is not trusted to have applied the cap.
DEFAULT_MAX_RESULT_BYTES = 64 * 1024 * 1024
TAIL_CHARS = 4000
MESSAGE_CHARS = 2000
FINISHED = (Task.State.DONE, Task.State.FAILED, Task.State.CANCELLED)
UNFINISHED = (Task.State.PENDING, Task.State.QUEUED, Task.State.RUNNING)
LEDGER_FIELDS = ["state", "attempts", "error_class", "error_message", "output_tail", "worker",
                 "wall_s", "cpu_s", "finished_at", "updated_at"]

# Trim the batch only while we still hold the collector's lock: a collector that lost it (its
# lock expired and another took over) must not remove envelopes the other one has not written.
_TRIM_IF_HOLDER = """
if redis.call('GET', KEYS[2]) == ARGV[2] then
  redis.call('LTRIM', KEYS[1], ARGV[1], -1)
  return 1
end
return 0
"""


# Failures that another attempt would repeat exactly: the record or the arg set cannot make a
# valid input, or the worker refused the job. They fail at once instead of costing retries.
UNMENDABLE = frozenset({"InputError", "JobRefused"})


class BadResult(Exception):
    """A result that cannot be used; its message goes to the task's ledger row."""


@dataclass
class CollectReport:
    taken: int = 0       # envelopes read from the list (and trimmed after the commit)
    done: int = 0
    retried: int = 0
    failed: int = 0      # failed for good (max_attempts reached, or the record is gone)
    skipped: int = 0     # a second delivery: the task was already finished
    discarded: int = 0   # unreadable, or for a job the ledger does not know
    files: int = 0
    seconds: float = 0.0
    lag_s: float | None = None  # age of the oldest result in the batch
    finished_campaigns: list[str] = field(default_factory=list)

    def line(self) -> str:
        """`collected 500 results (498 done, 2 retried) in 0.21 s; lag 1.2 s`"""
        parts = [f"{self.done} done"]
        for count, what in ((self.retried, "retried"), (self.failed, "failed"),
                            (self.skipped, "already done"), (self.discarded, "discarded")):
            if count:
                parts.append(f"{count} {what}")
        lag = f"; lag {self.lag_s:.1f} s" if self.lag_s is not None else ""
        return (f"collected {self.taken} results ({', '.join(parts)}) in {self.seconds:.2f} s"
                f"{lag}")


@dataclass
class Outcome:
    """What one result does: record updates, kept files, and the task's ledger fields."""

    task: Task
    updates: list[ResultUpdate] = field(default_factory=list)
    files: list[tuple[str, bytes]] = field(default_factory=list)
    error: tuple[str, str, str] | None = None  # class, message, output tail
    final: bool = False  # a failure retrying cannot mend
    host: str = ""
    wall_s: float | None = None
    cpu_s: float | None = None
    finished_at: datetime | None = None

    def fail(self, error_class: str, message: str, *, final: bool = False) -> None:
        self.updates, self.files = [], []
        self.error, self.final = (error_class, message, ""), final


def results_collect(*, connection: Redis, limit: int = DEFAULT_LIMIT,
                    max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES,
                    lock: LoopLock | None = None) -> CollectReport:
    """Collect up to `limit` results from the results list; see the module's docstring.

    Database errors propagate with the batch still in Redis. With `lock`, the batch is trimmed
    only while the lock is ours (LockLost otherwise).
    """
    started = time.monotonic()
    raw = connection.lrange(keys.RESULTS_KEY, 0, limit - 1)
    report = CollectReport(taken=len(raw))
    if raw:
        outcomes = _outcomes(raw, report, max_result_bytes)
        _fail_missing_records(outcomes)
        report.files = _save_files(outcomes)
        with transaction.atomic():
            _write_results(outcomes)
            _update_ledger(outcomes, report)
            task_minutes_add(transitions=transitions_of(o.task for o in outcomes))
            report.finished_campaigns = campaigns_finish(
                campaign_ids={o.task.campaign_id for o in outcomes})
        _trim(connection, len(raw), lock)
        _jobs_forget(connection, outcomes)
        report.lag_s = _lag(outcomes)
    report.seconds = time.monotonic() - started
    return report


# --- reading and checking ---------------------------------------------------------------------

def _outcomes(raw: list[bytes], report: CollectReport, max_result_bytes: int) -> list[Outcome]:
    envelopes = [_envelope(item, max_result_bytes) for item in raw]
    tasks = {task.job_id: task for task in Task.objects.select_related("campaign__dataset").filter(
        job_id__in={env["job_id"] for env in envelopes if env.get("job_id")})}
    arg_sets = _arg_set_names({task.campaign_id for task in tasks.values()})
    outcomes: dict[str, Outcome] = {}
    for env in envelopes:
        task = tasks.get(env.get("job_id"))
        if task is None:
            report.discarded += 1
            log.warning("collector: result dropped: %s", env.get("problem") or
                        f"no task has job id {env.get('job_id')!r}")
        elif task.state in FINISHED or task.job_id in outcomes:
            report.skipped += 1
        else:
            outcomes[task.job_id] = _outcome(task, env, arg_sets[task.campaign_id])
    return list(outcomes.values())


def _envelope(item: bytes, max_result_bytes: int) -> dict:
    """The envelope as a dict with its job id; a "problem" key when it cannot be used."""
    try:
        envelope = json.loads(item)
    except ValueError as exc:
        return {"problem": f"not JSON ({exc}): {item[:80]!r}"}
    if not isinstance(envelope, dict) or not isinstance(envelope.get("job_id"), str):
        return {"problem": f"no job id in the envelope: {item[:80]!r}"}
    if len(item) > max_result_bytes:
        return {"job_id": envelope["job_id"],
                "problem": f"the result is {len(item):,} bytes, over the cap of "
                           f"{max_result_bytes:,} bytes"}
    if ("result" in envelope) == ("error" in envelope):
        return {"job_id": envelope["job_id"],
                "problem": "the envelope needs exactly one of 'result' and 'error'"}
    return envelope


def _arg_set_names(campaign_ids: set[int]) -> dict[int, set[str]]:
    names: dict[int, set[str]] = {campaign_id: set() for campaign_id in campaign_ids}
    for campaign_id, name in ArgSet.objects.filter(campaign_id__in=campaign_ids).values_list(
            "campaign_id", "name"):
        names[campaign_id].add(name)
    return names


def _outcome(task: Task, envelope: dict, arg_sets: set[str]) -> Outcome:
    outcome = Outcome(task=task, finished_at=timezone.now())
    if envelope.get("problem"):
        outcome.fail("BadResult", envelope["problem"])
    elif "error" in envelope:
        error = envelope["error"] if isinstance(envelope["error"], dict) else {}
        outcome.error = (_text(error.get("class"), 100) or "WorkerError",
                         _text(error.get("message"), MESSAGE_CHARS) or repr(envelope["error"]), "")
    else:
        try:
            _read_document(outcome, envelope["result"], arg_sets)
        except BadResult as exc:
            outcome.fail("BadResult", str(exc))
    return outcome


def _read_document(outcome: Outcome, document: Any, arg_sets: set[str]) -> None:
    """Fill the outcome from a result document (docs/runtime.md); BadResult when malformed."""
    task = outcome.task
    if not isinstance(document, dict):
        raise BadResult("the result document is not a JSON object")
    if document.get("record_id") != task.record_id:
        raise BadResult(f"the result is for record {document.get('record_id')!r}, "
                        f"the task's is {task.record_id!r}")
    if document.get("status") not in ("ok", "failed"):
        raise BadResult(f"status {document.get('status')!r} is neither 'ok' nor 'failed'")
    parts = document.get("arg_sets")
    if not isinstance(parts, dict) or not parts:
        raise BadResult("the result has no 'arg_sets' object")
    walls, cpus = [], []
    for name, part in parts.items():
        if name not in arg_sets:
            raise BadResult(f"unknown arg set {name!r} (known: {', '.join(sorted(arg_sets))})")
        if not isinstance(part, dict) or part.get("status") not in ("ok", "failed"):
            raise BadResult(f"arg set {name!r}: no 'status' of 'ok' or 'failed'")
        if part["status"] == "ok":
            if not isinstance(part.get("values"), dict):
                raise BadResult(f"arg set {name!r}: 'values' is not an object")
            outcome.updates.append(ResultUpdate(task.record_id, task.campaign.output_key, name,
                                                part["values"]))
        elif outcome.error is None:
            outcome.error = _arg_set_error(name, part.get("error"))
        walls.append(part.get("wall_s"))
        cpus.append(part.get("cpu_s"))
    if document["status"] == "failed" and outcome.error is None:
        outcome.error = ("TaskFailed", "the result's status is 'failed'", "")
    outcome.files = _kept_files(document.get("files"))
    outcome.host = _text(document.get("host"), 200)
    outcome.wall_s, outcome.cpu_s = _total(walls), _total(cpus)
    outcome.finished_at = _finished_at(document.get("finished_at"), outcome.finished_at)


def _arg_set_error(name: str, error: Any) -> tuple[str, str, str]:
    error = error if isinstance(error, dict) else {}
    message = _text(error.get("message"), MESSAGE_CHARS) or "failed without a message"
    return (_text(error.get("class"), 100) or "TaskFailed", f"arg set {name!r}: {message}",
            _text(error.get("output_tail"), TAIL_CHARS, tail=True))


def _kept_files(entries: Any) -> list[tuple[str, bytes]]:
    """(name, bytes) of each kept file; entries the worker could not keep are passed over."""
    if entries is None:
        return []
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise BadResult("'files' is not a list of objects")
    files = []
    for entry in entries:
        if entry.get("error"):
            log.debug("kept file %r was not kept: %s", entry.get("name"), entry["error"])
            continue
        if not isinstance(entry.get("name"), str) or not entry["name"]:
            raise BadResult("a kept file has no name")
        try:
            files.append((entry["name"], keepfiles.decode(entry)))
        except KeepFileError as exc:
            raise BadResult(str(exc)) from None
    return files


def _text(value: Any, limit: int, *, tail: bool = False) -> str:
    if not isinstance(value, str):
        return ""
    return value[-limit:] if tail else value[:limit]


def _total(values: list) -> float | None:
    numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return float(sum(numbers)) if numbers else None


def _finished_at(value: Any, now: datetime) -> datetime:
    """The document's finish time, but never later than now (a worker's clock may run ahead)."""
    try:
        when = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return now
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt_timezone.utc)
    return min(when, now)


# --- writing ----------------------------------------------------------------------------------

def _fail_missing_records(outcomes: list[Outcome]) -> None:
    """A record deleted while its task was out fails the task for good (RecordMissing)."""
    by_campaign: dict[int, list[Outcome]] = {}
    for outcome in outcomes:
        by_campaign.setdefault(outcome.task.campaign_id, []).append(outcome)
    for group in by_campaign.values():
        campaign = group[0].task.campaign
        existing = store_for(campaign.dataset).existing(ids=[o.task.record_id for o in group])
        for outcome in group:
            if outcome.task.record_id not in existing:
                outcome.fail("RecordMissing", f"record {outcome.task.record_id!r} is no longer "
                             f"in dataset {campaign.dataset.name!r}", final=True)


def _save_files(outcomes: list[Outcome]) -> int:
    saved = 0
    for outcome in outcomes:
        for name, content in outcome.files:
            kept_file_save(campaign=outcome.task.campaign.name, record_id=outcome.task.record_id,
                           name=name, content=content)
            saved += 1
    return saved


def _write_results(outcomes: list[Outcome]) -> None:
    by_dataset: dict[int, tuple[Any, list[ResultUpdate]]] = {}
    for outcome in outcomes:
        dataset = outcome.task.campaign.dataset
        by_dataset.setdefault(dataset.pk, (dataset, []))[1].extend(outcome.updates)
    for dataset, updates in by_dataset.values():
        store_for(dataset).write_results(updates=updates)


def _update_ledger(outcomes: list[Outcome], report: CollectReport) -> None:
    now = timezone.now()
    for outcome in outcomes:
        task = outcome.task
        task.attempts += 1
        task.worker = outcome.host or task.worker
        task.wall_s, task.cpu_s, task.updated_at = outcome.wall_s, outcome.cpu_s, now
        if outcome.error is None:
            task.state, task.finished_at = Task.State.DONE, outcome.finished_at
            report.done += 1
            continue
        task.error_class, task.error_message, task.output_tail = outcome.error
        if (outcome.final or outcome.error[0] in UNMENDABLE
                or task.attempts >= task.campaign.max_attempts):
            task.state, task.finished_at = Task.State.FAILED, outcome.finished_at
            report.failed += 1
            log.warning("collector: task %s (record %s) failed for good after %d attempt(s): "
                        "%s: %s", task.job_id, task.record_id, task.attempts, *outcome.error[:2])
        else:
            task.state = Task.State.PENDING
            report.retried += 1
    rows_update(objects=[o.task for o in outcomes], fields=LEDGER_FIELDS)


def _trim(connection: Redis, taken: int, lock: LoopLock | None) -> None:
    if lock is None:
        connection.ltrim(keys.RESULTS_KEY, taken, -1)
    elif not connection.eval(_TRIM_IF_HOLDER, 2, keys.RESULTS_KEY, lock.key, taken, lock.token):
        raise LockLost(f"the lock {lock.key} is no longer ours; the batch stays in Redis")


def _jobs_forget(connection: Redis, outcomes: list[Outcome]) -> None:
    """Delete what rq keeps of the jobs whose tasks are now finished: their hash, rq's copy of
    the result and their registry entries. Their result is in the database now; kept for
    rq's result_ttl they cost ~6 kB a task, which made Redis grow with throughput, not with the
    window (bench_pipeline.py memory). Tasks going back to pending keep theirs: the feeder
    replaces a stale job itself."""
    finished = [o.task for o in outcomes if o.task.state in (Task.State.DONE, Task.State.FAILED)]
    if not finished:
        return
    with connection.pipeline(transaction=False) as pipe:
        for task in finished:
            queue = keys.campaign_rq_queue(campaign=task.campaign)
            pipe.delete(Job.key_for(task.job_id), result_key(task.job_id))
            pipe.zrem(f"rq:finished:{queue}", task.job_id)
            pipe.zrem(f"rq:failed:{queue}", task.job_id)
        pipe.execute()


def _lag(outcomes: list[Outcome]) -> float | None:
    finished = [o.finished_at for o in outcomes if o.finished_at is not None]
    if not finished:
        return None
    return max(0.0, (timezone.now() - min(finished)).total_seconds())
