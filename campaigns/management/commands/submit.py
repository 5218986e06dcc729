"""Submit a campaign: ledger a task for each selected record that has none, start, feed once."""
from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from campaigns.errors import ApplicationError
from campaigns.progress import Progress
from campaigns.serving import campaign_blockers
from campaigns.services.lifecycle import campaign_launch
from campaigns.services.submission import campaign_find


class Command(BaseCommand):
    help = ("Add a pending task for every record of CAMPAIGN's dataset that its query selects and "
            "that has no task yet, start the campaign and queue a first window of jobs. "
            "Submitting again adds only records that are new.")

    def add_arguments(self, parser):
        parser.add_argument("campaign", help="the campaign's name")
        parser.add_argument("--limit", type=int, metavar="N", help="add at most N new tasks")
        parser.add_argument("--dry-run", action="store_true",
                            help="count what would be added; write nothing, queue nothing")

    def handle(self, *args, campaign, limit, dry_run, **options):
        if limit is not None and limit < 0:
            raise CommandError(f"--limit must be 0 or more, got {limit}")
        try:
            target = campaign_find(name=campaign)
            report = campaign_launch(campaign=target, limit=limit, dry_run=dry_run,
                                     progress=Progress(verb="submitted", stream=self.stderr))
        except ApplicationError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(report.line())
        for blocker in campaign_blockers(campaign=target):
            self.stderr.write(f"warning: not running: {blocker}")
