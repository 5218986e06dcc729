"""Create the 'demo' dataset from the shipped G2 molecules (data/demo/); running it again adds
nothing."""
from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from campaigns.errors import ApplicationError
from campaigns.services.records import demo_load


class Command(BaseCommand):
    help = "Create the 'demo' dataset from data/demo/g2_organic.extxyz (idempotent)."

    def handle(self, *args, **options):
        try:
            dataset, report = demo_load()
        except ApplicationError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"{dataset.name}: {report.added:,} added, {report.already_present:,} "
                          f"already present, {dataset.record_count:,} records")
