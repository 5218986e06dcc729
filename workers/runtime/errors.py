"""Exceptions of the worker runtime. Each message is one line a user can act on."""
from __future__ import annotations


class RuntimeFailure(Exception):
    """Base class: an arg set failed for a reason the result document reports."""

    def __init__(self, message: str, *, output_tail: str = ""):
        super().__init__(message)
        self.output_tail = output_tail


class ParseError(RuntimeFailure):
    """A program output that does not hold what the parser reads (truncated, wrong program)."""


class InputError(RuntimeFailure):
    """A record or arg set that cannot make a valid program input."""


class ProgramFailed(RuntimeFailure):
    """The program exited non-zero or could not be started."""


class ProgramTimeout(RuntimeFailure):
    """The program ran past the job timeout and was stopped."""


class KeepFileError(RuntimeFailure):
    """A kept file that is missing or larger than the cap."""


class Interrupted(Exception):
    """The worker was asked to stop (SIGTERM/SIGINT) mid-task: the task goes back to the queue."""
