"""The portal's long-running loops: the collector, and the helpers a loop needs (stop signals,
naps, backoff; the lock that keeps a second collector away is campaigns.locks).

A loop catches SIGTERM and SIGINT, finishes the batch in hand and returns; it sleeps in short
steps so a stop is honoured within a second (as healthchecks' sendreports does).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from django.db import connections
from redis import Redis

from campaigns.errors import ApplicationError
from campaigns.models import Campaign
from campaigns.locks import COLLECTOR_LOCK_KEY, LockHeld, LockLost, LoopLock
# The loop helpers, importable from here as before (the feed command, benches and tests).
from campaigns.loop_signals import (DB_ERRORS, NAP_STEP_S, REDIS_ERRORS,  # noqa: F401
                                    StopSignals, loop_name)
from campaigns.pipeline_keys import RESULTS_KEY
from campaigns.services.collecting import DEFAULT_LIMIT, DEFAULT_MAX_RESULT_BYTES, results_collect
from campaigns.services.lifecycle import campaigns_finish
from campaigns.services.feeding import queues_feed
from campaigns.services.reconciling import tasks_reconcile

log = logging.getLogger(__name__)

BACKOFF_FIRST_S = 1.0
BACKOFF_CAP_S = 30.0
# The default window (settings.FEED_MIN_WINDOW) holds several seconds of the fastest tasks,
# so feeding once a second keeps workers busy without taking their CPU.
FEED_EVERY_S = 1.0
# One turn's share of feeding and collecting (see CollectorLoop.turn).
FEED_STEP_JOBS = 5000
COLLECT_STEP_S = 2.0
RECONCILE_EVERY_S = 10.0
IDLE_NAP_S = 2.0
IDLE_POLL_S = 0.1
LOCK_WAIT_S = 5.0
class Backoff:
    """Waits of 1, 2, 4 ... 30 s between attempts; `reset()` after a success."""

    def __init__(self, *, first: float = BACKOFF_FIRST_S, cap: float = BACKOFF_CAP_S) -> None:
        self.first = first
        self.cap = cap
        self.delay = first

    def next(self) -> float:
        delay, self.delay = self.delay, min(self.delay * 2, self.cap)
        return delay

    def reset(self) -> None:
        self.delay = self.first


@dataclass
class CollectorTotals:
    batches: int = 0
    results: int = 0
    done: int = 0
    retried: int = 0
    failed: int = 0

    def line(self) -> str:
        return (f"collected {self.results:,} results in {self.batches:,} batches "
                f"({self.done:,} done, {self.retried:,} retried, {self.failed:,} failed)")


class CollectorLoop:
    """Feed, collect, reconcile, until stopped: `manage.py collect`.

    Each turn tops up the queues (at most once a second), collects one batch of results, and
    every `reconcile_every` seconds reconciles the ledger with Redis. One collector at a time: the
    second one waits for the lock (or, with once=True, says so and gives up).
    """

    def __init__(self, *, connection: Redis, batch: int = DEFAULT_LIMIT, name: str | None = None,
                 max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES,
                 window: int | None = None,
                 reconcile_every: float = RECONCILE_EVERY_S) -> None:
        self.connection = connection
        self.reconcile_every = reconcile_every
        self.batch = batch
        self.name = name or loop_name("collector")
        self.max_result_bytes = max_result_bytes
        self.window = window
        self.lock = LoopLock(connection=connection, key=COLLECTOR_LOCK_KEY)
        self.signals = StopSignals(name=f"collector {self.name}")
        self.backoff = Backoff()
        self.totals = CollectorTotals()
        self.last_feed = self.last_reconcile = float("-inf")

    def run(self, *, once: bool = False) -> CollectorTotals:
        """Loop until SIGTERM/SIGINT (once=True: until no result is waiting); return the totals."""
        with self.signals:
            if not self._take_lock(once=once):
                return self.totals
            log.info("collector %s: collecting batches of up to %d results", self.name, self.batch)
            try:
                while not self.signals.stopping:
                    try:
                        worked = self.turn()
                    except DB_ERRORS as exc:
                        self._outage("database unavailable", exc)
                        continue
                    except REDIS_ERRORS as exc:
                        self._outage("Redis unreachable", exc)
                        continue
                    except LockLost as exc:
                        # The batch stays in Redis and is collected again: writing is idempotent.
                        log.warning("%s; the batch stays in Redis; taking the lock again", exc)
                        if once:
                            raise
                        if not self._take_lock(once=False):
                            break  # asked to stop while waiting
                        continue
                    except Exception as exc:  # noqa: BLE001 - nothing ends the loop but a stop
                        # results_collect turns what one envelope, task or store does into an
                        # outcome; this is the backstop for what it did not foresee: the batch
                        # stays in Redis, the loop waits and tries again.
                        log.exception("collector %s: the turn failed", self.name)
                        self._outage("collector error", exc)
                        continue
                    self.backoff.reset()
                    if not worked:
                        if once:
                            break
                        self._idle()
            finally:
                self._release()
        return self.totals

    def turn(self) -> bool:
        """One turn of the loop; True when it collected something.

        A turn feeds at most FEED_STEP_JOBS jobs (a large window fills over a few turns, and
        the lock is renewed in between), then collects full batches for up to
        COLLECT_STEP_S: results are what a person waits for, so they are never starved.
        """
        self._renew()
        if time.monotonic() - self.last_feed >= FEED_EVERY_S:
            fed = queues_feed(connection=self.connection, window=self.window,
                              max_jobs=FEED_STEP_JOBS)
            # A feed that stopped at its budget goes on next turn, without waiting.
            self.last_feed = float("-inf") if fed.spent else time.monotonic()
            self._renew()
        started, taken = time.monotonic(), 0
        while True:
            report = results_collect(connection=self.connection, limit=self.batch,
                                     max_result_bytes=self.max_result_bytes, lock=self.lock)
            taken += report.taken
            if report.taken:
                log.info("collector %s: %s", self.name, report.line())
                self._count(report)
            if (report.taken < self.batch or self.signals.stopping
                    or time.monotonic() - started >= COLLECT_STEP_S):
                break
            self._renew()
        if time.monotonic() - self.last_reconcile >= self.reconcile_every:
            self.reconcile(caught_up=report.taken < self.batch)
        return taken > 0

    def _idle(self) -> None:
        """Wait up to IDLE_NAP_S for results, looking every IDLE_POLL_S: a result that arrives
        is written within a fraction of a second, while an idle collector costs Redis a few
        LLENs a second."""
        end = time.monotonic() + IDLE_NAP_S
        try:
            self._renew()
            while not self.signals.stopping and time.monotonic() < end:
                if self.connection.llen(RESULTS_KEY):
                    return
                time.sleep(IDLE_POLL_S)
        except REDIS_ERRORS:
            return  # the next turn meets the outage, says so and backs off

    def reconcile(self, *, caught_up: bool) -> None:
        report = tasks_reconcile(connection=self.connection, check_missing=caught_up)
        if report.changed:
            log.info("collector %s: %s", self.name, report.line())
        # Tasks also finish outside a batch (the feeder fails those whose record is gone).
        campaigns_finish(campaign_ids=set(Campaign.objects.filter(
            state=Campaign.State.RUNNING).values_list("pk", flat=True)))
        self.last_reconcile = time.monotonic()

    def _count(self, report) -> None:
        self.totals.batches += 1
        self.totals.results += report.taken
        self.totals.done += report.done
        self.totals.retried += report.retried
        self.totals.failed += report.failed

    def _take_lock(self, *, once: bool) -> bool:
        said = False
        while not self.signals.stopping:
            try:
                self.lock.acquire()
                return True
            except LockHeld as exc:
                message = (f"collector {self.name}: another collector ({exc}) is running "
                           f"(lock {self.lock.key})")
                if once:
                    raise ApplicationError(f"{message}; not collecting") from None
                if not said:
                    log.warning("%s; waiting for it to stop", message)
                    said = True
                self.signals.nap(LOCK_WAIT_S)
            except REDIS_ERRORS as exc:
                self._outage("Redis unreachable", exc, renew=False)
        return False

    def _renew(self) -> None:
        if self.lock.renew():
            return
        # Nobody holds it: Redis restarted empty (or the lock expired during a long outage).
        if self.connection.set(self.lock.key, self.lock.token, nx=True, ex=self.lock.ttl):
            log.info("collector %s: took the lock %s again", self.name, self.lock.key)
            return
        raise LockLost(f"collector {self.name}: lost the lock {self.lock.key} "
                           f"(now held by {self.lock.holder() or 'nobody'})")

    def _release(self) -> None:
        try:
            self.lock.release()
        except REDIS_ERRORS:
            pass  # it expires on its own

    def _outage(self, what: str, exc: BaseException, *, renew: bool = True) -> None:
        delay = self.backoff.next()
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        log.warning("collector %s: %s (%s); results stay in Redis; retrying in %g s",
                    self.name, what, reason, delay)
        for db in connections.all(initialized_only=True):
            if not db.in_atomic_block:  # (a test's own transaction stays)
                db.close()  # the next attempt opens a fresh connection
        self.signals.nap(delay, every=self._renew_quietly if renew else None)

    def _renew_quietly(self) -> None:
        try:
            self._renew()
        except REDIS_ERRORS:
            pass
