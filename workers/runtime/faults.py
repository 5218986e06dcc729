"""Telling a broken node from a failed task, from the result documents a worker produces.

Two kinds of worker fault (docs/runtime.md, "Worker faults"):
- an arg set whose error already carries `"fault": "worker"` (ProgramNotFound,
  ScratchUnwritable: execute.py marks them);
- the same program failure on `limit` (default 3) different records in a row: class, message
  (with its exit code) and output tail all equal. A task's own failures differ from record to
  record (xtb prints the molecule and its SCF, ORCA its input); a missing shared library or a
  broken licence prints the same lines for every record. InputError, ParseError and
  ProgramTimeout never count: they are the record's, or its size's.
A task in which an arg set succeeded ends the streak; one that failed for another reason leaves
it as it is.
"""
from __future__ import annotations

from typing import List, Mapping, Optional, Tuple

from .errors import WORKER_FAULT, ProgramFailed, RepeatedFailure

STREAK_CLASSES = (ProgramFailed.__name__,)


def worker_fault(document: Mapping) -> Optional[dict]:
    """The first arg-set error of `document` that is the worker's fault, or None."""
    for outcome in (document.get("arg_sets") or {}).values():
        error = outcome.get("error") or {}
        if error.get("fault") == WORKER_FAULT:
            return dict(error)
    return None


class FailureStreak:
    """Counts identical program failures on consecutive different records."""

    def __init__(self, limit: int):
        self.limit = limit
        self.signature: Optional[Tuple[str, str, str]] = None
        self.records: List[str] = []

    def observe(self, document: Mapping) -> Optional[dict]:
        """The RepeatedFailure error once `document` makes `limit` in a row, else None."""
        outcomes = list((document.get("arg_sets") or {}).values())
        signature = next((_signature(o["error"]) for o in outcomes
                          if (o.get("error") or {}).get("class") in STREAK_CLASSES), None)
        if signature is None:
            if any(o.get("status") == "ok" for o in outcomes):
                self.signature, self.records = None, []
            return None
        record = str(document.get("record_id"))
        if signature != self.signature:
            self.signature, self.records = signature, [record]
        elif record not in self.records:
            self.records.append(record)
        if len(self.records) < self.limit:
            return None
        message = (f"{signature[1]}, with the same output, on {len(self.records)} different "
                   f"records in a row ({', '.join(self.records)})")
        return {"class": RepeatedFailure.__name__, "message": message,
                "output_tail": signature[2], "fault": WORKER_FAULT}


def _signature(error: Mapping) -> Tuple[str, str, str]:
    return (str(error.get("class")), str(error.get("message")), str(error.get("output_tail")))
