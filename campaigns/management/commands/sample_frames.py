"""Insert the sampled frames of a campaign's stored MD results again: `manage.py sample_frames`.

The collector does this as it writes each result; this command is for a rule changed after the
fact, or a sampling that failed (its log line says so). Records already there are kept.
"""
from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from campaigns.errors import ApplicationError
from campaigns.services.sampling import frames_resample
from campaigns.services.submission import campaign_find


class Command(BaseCommand):
    help = ("Insert the frames a campaign's arg sets sample (their 'sample' rule) from the MD "
            "results already stored; idempotent (docs/sampling.md).")

    def add_arguments(self, parser):
        parser.add_argument("campaign")

    def handle(self, *args, campaign, **options):
        try:
            added, results = frames_resample(campaign=campaign_find(name=campaign))
        except ApplicationError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"{added:,} sampled frames added from {results:,} results")
