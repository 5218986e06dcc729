"""Task functions that run no program: for tests, benchmarks and checking a worker's plumbing."""
from __future__ import annotations

from ..errors import InputError


def noop(*, record: dict, arg_set: dict, ctx) -> None:
    """Does nothing: what is left is the runtime's own cost per task."""


def sleep(*, record: dict, arg_set: dict, ctx) -> None:
    """Sleeps for the arg set's parameters["seconds"], honouring stop requests and the timeout."""
    seconds = (arg_set.get("parameters") or {}).get("seconds")
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds < 0:
        raise InputError(f"arg set {arg_set.get('name')!r}: parameters.seconds must be a number "
                         f">= 0, not {seconds!r}")
    ctx.sleep(seconds)
