"""Create the demo's local worker pool ("local": queue xtb, up to 2 workers) when missing."""
from __future__ import annotations

from django.core.management.base import BaseCommand

from workers.scaler.local import local_pool_ensure


class Command(BaseCommand):
    help = ("Create the local worker pool 'local' (this machine, queue xtb, at most 2 workers) "
            "when there is none; an existing one is left as it is. Idempotent.")

    def handle(self, *args, **options):
        pool, created = local_pool_ensure()
        state = "created" if created else "already there"
        self.stdout.write(f"worker pool {pool.name}: {state} ({pool.kind}, queues {pool.queues}, "
                          f"at most {pool.max_workers} workers)")
