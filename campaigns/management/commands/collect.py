"""Run the collector: feed the queues, collect results, reconcile the ledger, until stopped."""
from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from campaigns.errors import ApplicationError
from campaigns.loops import RECONCILE_EVERY_S, CollectorLoop
from campaigns.redis_connection import redis_connection
from campaigns.locks import LockLost
from campaigns.services.collecting import DEFAULT_LIMIT, DEFAULT_MAX_RESULT_BYTES


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise CommandError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise CommandError(f"{text!r} must be 1 or more")
    return value


class Command(BaseCommand):
    help = ("Collect results from Redis into the records and the task ledger, feeding the queues "
            "and reconciling as it goes; runs until SIGTERM/SIGINT (docs/pipeline.md).")

    def add_arguments(self, parser):
        parser.add_argument("--once", action="store_true",
                            help="collect what is waiting now (after one feed and reconcile), "
                                 "then exit")
        parser.add_argument("--batch", type=positive_int, default=DEFAULT_LIMIT, metavar="N",
                            help=f"results per transaction (default {DEFAULT_LIMIT})")
        parser.add_argument("--max-result-bytes", type=positive_int,
                            default=DEFAULT_MAX_RESULT_BYTES, metavar="N",
                            help="a larger result fails its task (default "
                                 f"{DEFAULT_MAX_RESULT_BYTES:,})")
        parser.add_argument("--reconcile-every", type=float, default=RECONCILE_EVERY_S,
                            metavar="S", help=f"seconds between reconciles (default "
                                              f"{RECONCILE_EVERY_S:.0f})")
        parser.add_argument("--name", help="collector name in the log (default collector.HOST.PID)")

    def handle(self, *args, once, batch, max_result_bytes, reconcile_every, name, **options):
        loop = CollectorLoop(connection=redis_connection(), batch=batch, name=name,
                             max_result_bytes=max_result_bytes, reconcile_every=reconcile_every)
        try:
            totals = loop.run(once=once)
        except (ApplicationError, LockLost) as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(totals.line())
        self.stdout.write("Done.")
