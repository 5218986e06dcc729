"""Exceptions of the worker runtime. Each message is one line a user can act on."""
from __future__ import annotations

from typing import Optional

WORKER_FAULT = "worker"  # the "fault" of an error that is the node's, not the task's


class RuntimeFailure(Exception):
    """Base class: an arg set failed for a reason the result document reports.

    `fault` is None for the task's own failures and "worker" for a node whose environment is
    broken (the program is missing, the scratch directory cannot be written): the portal then
    retries the task elsewhere without counting an attempt, and the worker leaves.
    """

    fault: Optional[str] = None

    def __init__(self, message: str, *, output_tail: str = ""):
        super().__init__(message)
        self.output_tail = output_tail


class ParseError(RuntimeFailure):
    """A program output that does not hold what the parser reads (truncated, wrong program)."""


class InputError(RuntimeFailure):
    """A record or arg set that cannot make a valid program input."""


class ProgramFailed(RuntimeFailure):
    """The program exited non-zero or could not be started."""


class ProgramNotFound(ProgramFailed):
    """The program is not on this node (PATH, *_EXE) or cannot be executed here."""

    fault = WORKER_FAULT


class ScratchUnwritable(RuntimeFailure):
    """The scratch directory cannot be made or written (disk full, read-only, no access)."""

    fault = WORKER_FAULT


class RepeatedFailure(RuntimeFailure):
    """The same program failure on several different records in a row: the node, not them."""

    fault = WORKER_FAULT


class ProgramTimeout(RuntimeFailure):
    """The program ran past the job timeout and was stopped."""


class KeepFileError(RuntimeFailure):
    """A kept file that is missing or larger than the cap."""


class Interrupted(Exception):
    """The worker was asked to stop (SIGTERM/SIGINT) mid-task: the task goes back to the queue."""
