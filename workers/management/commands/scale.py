"""Run the scaler: start workers where the backlog needs them, within each pool's limits."""
from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from campaigns.redis_connection import redis_connection
from workers.models import WorkerPool
from workers.scaler.loop import STEP_INTERVAL_S, ScaleLoop
from workers.scaler.sessions import pool_uses_session, session_describe


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise CommandError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise CommandError(f"{text!r} must be more than 0")
    return value


class Command(BaseCommand):
    help = ("Scale the worker pools: each step reads every enabled pool's backlog, live "
            "workers and batch queue, and submits what the backlog needs within the pool's "
            "limits; runs until SIGTERM/SIGINT (docs/scaler.md).")

    def add_arguments(self, parser):
        parser.add_argument("--once", action="store_true", help="one step, then exit")
        parser.add_argument("--pool", metavar="NAME", help="scale only this pool")
        parser.add_argument("--dry-run", action="store_true",
                            help="decide and log, but submit, remove and upload nothing")
        parser.add_argument("--interval", type=positive_float, default=STEP_INTERVAL_S,
                            metavar="S", help=f"seconds between steps (default "
                                              f"{STEP_INTERVAL_S:.0f})")

    def handle(self, *args, once, pool, dry_run, interval, **options):
        if pool and not WorkerPool.objects.filter(name=pool).exists():
            known = ", ".join(WorkerPool.objects.values_list("name", flat=True)) or "none"
            raise CommandError(f"no worker pool {pool!r} (known: {known})")
        self._say_sessions(pool)
        loop = ScaleLoop(connection=redis_connection(), pool_name=pool, dry_run=dry_run,
                         interval=interval)
        totals = loop.run(once=once)
        self.stdout.write(totals.line())
        self.stdout.write("Done.")

    def _say_sessions(self, name) -> None:
        """Pools reached through a person's SSH session (pool_login): open, or a login needed."""
        pools = WorkerPool.objects.filter(enabled=True).order_by("name")
        for pool in pools.filter(name=name) if name else pools:
            if pool_uses_session(pool=pool):
                line = session_describe(pool=pool)
                if line.startswith(f"pool {pool.name}: SSH session open"):
                    self.stdout.write(line)
                else:
                    self.stderr.write(line)
