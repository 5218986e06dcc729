"""What the scaler's loop needs to stop cleanly and to sit out outages, without importing the
collector (campaigns.loops holds the collector's loop and its services; the scaler reads the
backlog through workers/scaler/backlog.py's selectors only).

StopSignals turns SIGTERM/SIGINT into `stopping = True` and naps in steps of a second, as the
collector's loop does, so a stop is honoured within a second.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import time

import redis
from django.db import InterfaceError, OperationalError

log = logging.getLogger(__name__)

NAP_STEP_S = 1.0
DB_ERRORS = (OperationalError, InterfaceError)
REDIS_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


def loop_name(role: str) -> str:
    """A name for one loop process: ROLE.HOST.PID."""
    return f"{role}.{socket.gethostname()}.{os.getpid()}"


class StopSignals:
    """Turns SIGTERM/SIGINT into `stopping = True` while in use (a context manager)."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, *, name: str, doing: str) -> None:
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

    def nap(self, seconds: float) -> None:
        """Sleep up to `seconds` in steps of at most a second; return early on a stop."""
        end = time.monotonic() + seconds
        while not self.stopping and (left := end - time.monotonic()) > 0:
            time.sleep(min(NAP_STEP_S, left))
