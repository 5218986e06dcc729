"""What one checked result does to its task: record values, kept files, ledger fields.

Everything here reads a result document (docs/runtime.md, "Result document") that passed the
door (envelopes.py) and turns anything wrong in it into BadResult with a reason; a numeric
field or a time out of range is refused here, before it reaches campaigns/bulk.py or a store.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone as dt_timezone
from typing import Any

from django.utils import timezone

from campaigns.errors import ApplicationError
from campaigns.models import Task
from campaigns.stores import ResultUpdate

TAIL_CHARS = 4000
MESSAGE_CHARS = 2000
CLASS_CHARS = 100
HOST_CHARS = 200
# A wall or CPU time above this (about three years) is not a measurement.
MAX_SECONDS = 1e8
EARLIEST = datetime(2000, 1, 1, tzinfo=dt_timezone.utc)
CLOCK_SKEW = timedelta(minutes=5)  # a node's clock may run this much ahead of ours
WORKER_FAULT = "worker"


class BadResult(Exception):
    """A result that cannot be used; its message goes to the task's ledger row."""


@dataclass
class Outcome:
    """What one result does: record updates, kept files, and the task's ledger fields."""

    task: Task
    envelope: Any = None  # the Envelope it came from (its source list and raw bytes)
    delivery: int = 0     # the delivery its attempt id names
    updates: list[ResultUpdate] = field(default_factory=list)
    files: list[dict] = field(default_factory=list)  # kept file entries, decoded when saved
    error: tuple[str, str, str] | None = None  # class, message, output tail
    final: bool = False   # a failure retrying cannot mend
    fault: bool = False   # the node's environment is broken, not the task: no attempt counted
    host: str = ""
    worker: str = ""
    wall_s: float | None = None
    cpu_s: float | None = None
    finished_at: datetime | None = None

    @property
    def success(self) -> bool:
        return self.error is None

    @property
    def needs_store(self) -> bool:
        """Whether writing it needs the record store or the storage to answer."""
        return bool(self.updates or self.files)

    def fail(self, error_class: str, message: str, *, final: bool = False) -> None:
        self.updates, self.files, self.fault = [], [], False
        self.error, self.final = (error_class, message[:MESSAGE_CHARS], ""), final


def outcome_of(*, task: Task, data: dict, problem: str | None, arg_sets: set[str],
               worker: str) -> Outcome:
    """The outcome of one attributed envelope; any fault in it is a BadResult failure."""
    outcome = Outcome(task=task, finished_at=timezone.now(), worker=worker[:HOST_CHARS])
    try:
        if problem:
            raise BadResult(problem)
        if "error" in data:
            error = data["error"] if isinstance(data["error"], dict) else {}
            outcome.error = (text(error.get("class"), CLASS_CHARS) or "WorkerError",
                             text(error.get("message"), MESSAGE_CHARS)
                             or repr(data["error"])[:MESSAGE_CHARS], "")
            outcome.fault = error.get("fault") == WORKER_FAULT
        else:
            document_read(outcome, data["result"], arg_sets)
    except BadResult as exc:
        outcome.fail("BadResult", str(exc))
    except ApplicationError as exc:  # e.g. the campaign's output key, refused by ResultUpdate
        outcome.fail("StoreError", str(exc))
    except Exception as exc:  # noqa: BLE001 - one envelope never stops the batch
        outcome.fail("BadResult", f"the result cannot be read ({type(exc).__name__}: "
                                  f"{str(exc)[:200]})")
    return outcome


def document_read(outcome: Outcome, document: Any, arg_sets: set[str]) -> None:
    """Fill the outcome from a result document; BadResult when malformed."""
    task = outcome.task
    if not isinstance(document, dict):
        raise BadResult("the result document is not a JSON object")
    if document.get("status") not in ("ok", "failed"):
        raise BadResult(f"status {str(document.get('status'))[:40]!r} is neither 'ok' nor "
                        "'failed'")
    parts = document.get("arg_sets")
    if not isinstance(parts, dict) or not parts:
        raise BadResult("the result has no 'arg_sets' object")
    walls, cpus, faults = [], [], []
    for name, part in parts.items():
        if name not in arg_sets:
            raise BadResult(f"unknown arg set {name[:100]!r} (known: "
                            f"{', '.join(sorted(arg_sets))})")
        if not isinstance(part, dict) or part.get("status") not in ("ok", "failed"):
            raise BadResult(f"arg set {name!r}: no 'status' of 'ok' or 'failed'")
        if part["status"] == "ok":
            if not isinstance(part.get("values"), dict):
                raise BadResult(f"arg set {name!r}: 'values' is not an object")
            outcome.updates.append(ResultUpdate(task.record_id, task.campaign.output_key, name,
                                                part["values"]))
        else:
            error = part.get("error") if isinstance(part.get("error"), dict) else {}
            faults.append(error.get("fault") == WORKER_FAULT)
            if outcome.error is None:
                outcome.error = _arg_set_error(name, error)
        walls.append(seconds(part.get("wall_s"), f"arg set {name!r}: wall_s"))
        cpus.append(seconds(part.get("cpu_s"), f"arg set {name!r}: cpu_s"))
    if document["status"] == "failed" and outcome.error is None:
        outcome.error = ("TaskFailed", "the result's status is 'failed'", "")
    # A worker fault only when every failed arg set says so: one real failure is the task's.
    outcome.fault = bool(faults) and all(faults)
    files = document.get("files")
    if files is not None and (not isinstance(files, list)
                              or not all(isinstance(e, dict) for e in files)):
        raise BadResult("'files' is not a list of objects")
    for entry in files or []:
        if not entry.get("error") and (not isinstance(entry.get("name"), str)
                                       or not entry["name"]):
            raise BadResult("a kept file has no name")
    outcome.files = [entry for entry in files or [] if not entry.get("error")]
    outcome.host = text(document.get("host"), HOST_CHARS)
    outcome.wall_s, outcome.cpu_s = _total(walls), _total(cpus)
    outcome.finished_at = finished_at(document.get("finished_at"), outcome.finished_at)


def seconds(value: Any, what: str) -> float | None:
    """A duration in seconds: None when absent, BadResult unless finite, >= 0 and sane."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadResult(f"{what} is not a number")
    if not math.isfinite(value) or not 0 <= value <= MAX_SECONDS:
        raise BadResult(f"{what} = {str(value)[:40]} is out of range (0 to {MAX_SECONDS:g} s)")
    return float(value)


def finished_at(value: Any, now: datetime) -> datetime:
    """The document's finish time (none given: now); BadResult unless it is a valid ISO time
    with a valid offset between 2000 and now plus CLOCK_SKEW. A time up to CLOCK_SKEW ahead is
    taken as now (a node's clock may run ahead)."""
    if value is None:
        return now
    if not isinstance(value, str) or len(value) > 40:
        raise BadResult("finished_at is not an ISO 8601 time")
    try:
        when = datetime.fromisoformat(value)
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt_timezone.utc)
        when = when.astimezone(dt_timezone.utc)
    except (ValueError, OverflowError):
        raise BadResult(f"finished_at {value!r} is not a valid ISO 8601 time in UTC range") \
            from None
    if not EARLIEST <= when <= now + CLOCK_SKEW:
        raise BadResult(f"finished_at {value!r} is out of range (2000 to now)")
    return min(when, now)


def text(value: Any, limit: int, *, tail: bool = False) -> str:
    if not isinstance(value, str):
        return ""
    return value[-limit:] if tail else value[:limit]


def _arg_set_error(name: str, error: dict) -> tuple[str, str, str]:
    message = text(error.get("message"), MESSAGE_CHARS) or "failed without a message"
    return (text(error.get("class"), CLASS_CHARS) or "TaskFailed", f"arg set {name!r}: {message}",
            text(error.get("output_tail"), TAIL_CHARS, tail=True))


def _total(values: list) -> float | None:
    numbers = [v for v in values if v is not None]
    return min(float(sum(numbers)), MAX_SECONDS) if numbers else None

