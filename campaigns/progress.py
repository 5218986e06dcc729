"""Progress lines for a person who waits: `imported 12,000/1,000,000 (410/s, eta 40m)`.

A `Progress` prints at most once every `every` seconds, whatever how often it is updated, so
a loop can call `update()` after every item or batch at no cost. Commands pass their stderr.
"""
from __future__ import annotations

import sys
import time
from typing import Callable, TextIO

DEFAULT_EVERY_S = 2.0


def format_duration(seconds: float) -> str:
    """`45s`, `40m`, `3h05m`: short enough for a progress line."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Progress:
    """Counts done items and prints a line with rate and ETA every `every` seconds.

    The ETA comes from `total` when the number of items is known, or from `fraction` (0..1, e.g.
    bytes read of the bytes to read) when only the share of the work done is.
    """

    def __init__(self, *, verb: str, total: int | None = None, stream: TextIO | None = None,
                 every: float = DEFAULT_EVERY_S, clock: Callable[[], float] = time.monotonic):
        self.verb = verb
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.every = every
        self.clock = clock
        self.started = clock()
        self.last_printed = self.started
        self.done = 0
        self.fraction: float | None = None

    def update(self, done: int, *, fraction: float | None = None) -> None:
        """Record `done` items so far; print a line if the last one is `every` seconds old."""
        self.done = done
        self.fraction = fraction
        now = self.clock()
        if now - self.last_printed >= self.every:
            self.last_printed = now
            self.stream.write(self.line(now) + "\n")
            self.stream.flush()

    def line(self, now: float | None = None) -> str:
        elapsed = max((now if now is not None else self.clock()) - self.started, 1e-9)
        rate = self.done / elapsed
        if self.total is not None:
            head = f"{self.verb} {self.done:,}/{self.total:,}"
            share = self.done / self.total if self.total else 1.0
        else:
            head = f"{self.verb} {self.done:,}"
            share = self.fraction
        parts = [f"{rate:,.0f}/s"]
        if share is not None and self.total is None:
            parts.append(f"{share:.0%}")
        if share is not None and 0 < share < 1:
            parts.append(f"eta {format_duration(elapsed * (1 - share) / share)}")
        return f"{head} ({', '.join(parts)})"
