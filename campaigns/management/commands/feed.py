"""The feeder loop: keep the RQ queues of running campaigns topped up from the task ledger."""
from __future__ import annotations

import logging

from django.core.management.base import BaseCommand, CommandError
from django.db import close_old_connections

from campaigns.errors import ApplicationError
from campaigns.loops import REDIS_ERRORS, StopSignals, loop_name
from campaigns.redis_connection import redis_connection
from campaigns.services.feeding import queues_feed

log = logging.getLogger(__name__)


class Command(BaseCommand):
    help = ("Feed jobs to Redis: each round tops up every worker queue of the running campaigns "
            "to its window (HTPORTAL_FEED_WINDOW, else sized from the live workers). Stops "
            "cleanly on SIGTERM or SIGINT. The collector feeds too; this runs the feeder alone.")

    def add_arguments(self, parser):
        parser.add_argument("--once", action="store_true", help="one round, then exit")
        parser.add_argument("--interval", type=float, default=2.0, metavar="S",
                            help="seconds between rounds (default 2)")
        parser.add_argument("--window", type=int, metavar="N",
                            help="jobs waiting per worker queue (default: the setting)")

    def handle(self, *args, once, interval, window, **options):
        if window is not None and window < 0:
            raise CommandError(f"--window must be 0 or more, got {window}")
        connection = redis_connection()
        if once:
            try:
                self.stdout.write(queues_feed(connection=connection, window=window).line())
            except (ApplicationError, *REDIS_ERRORS) as exc:
                raise CommandError(f"feed: {exc}") from None
            return
        name = loop_name("feeder")
        log.info("%s: started, a round every %ss", name, interval)
        with StopSignals(name=name, doing="finishing the round") as signals:
            while not signals.stopping:
                close_old_connections()  # a loop that runs for weeks must not keep a dead one
                try:
                    queues_feed(connection=connection, window=window)
                except REDIS_ERRORS as exc:
                    log.warning("%s: Redis did not answer (%s); next round in %ss", name, exc,
                                interval)
                signals.nap(interval)
        self.stdout.write("Done.")
