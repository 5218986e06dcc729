"""What every long-running loop of the portal needs (the collector's, the feeder's, the
scaler's): stop signals that finish the step in hand, naps in one-second steps, a name, and the
errors that mean "database or Redis briefly away". No collector here: the scaler imports it.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import time
from typing import Callable

import redis
from django.db import InterfaceError, OperationalError

log = logging.getLogger(__name__)

NAP_STEP_S = 1.0
# A database that is briefly away ("database is locked", a PostgreSQL restart) or a Redis blip.
DB_ERRORS = (OperationalError, InterfaceError)
REDIS_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


def loop_name(role: str) -> str:
    """A name for one loop process: ROLE.HOST.PID."""
    return f"{role}.{socket.gethostname()}.{os.getpid()}"


class StopSignals:
    """Turns SIGTERM/SIGINT into `stopping = True` while in use (a context manager)."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, *, name: str, doing: str = "finishing batch") -> None:
        self.name = name
        self.doing = doing
        self.stopping = False
        self._previous: list = []

    def __enter__(self) -> StopSignals:
        self._previous = [signal.signal(s, self.request_stop) for s in self.SIGNALS]
        return self

    def __exit__(self, *exc_info) -> None:
        for s, handler in zip(self.SIGNALS, self._previous):
            signal.signal(s, handler)

    def request_stop(self, signum, frame) -> None:
        log.info("%s: %s, %s", self.name, signal.Signals(signum).name, self.doing)
        self.stopping = True

    def nap(self, seconds: float, *, every: Callable[[], None] | None = None) -> None:
        """Sleep up to `seconds` in steps of at most a second; return early on a stop.
        `every` (e.g. renewing a lock) runs before each step."""
        end = time.monotonic() + seconds
        while not self.stopping and (left := end - time.monotonic()) > 0:
            if every is not None:
                every()
            time.sleep(min(NAP_STEP_S, left))
