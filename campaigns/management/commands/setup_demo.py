"""The demo: the 'demo' dataset (data/demo/) and the XTB campaign of examples/xtb_gfn2.yaml."""
from django.core.management.base import BaseCommand, CommandError

from campaigns.errors import ApplicationError
from campaigns.services.setup import demo_setup


class Command(BaseCommand):
    help = ("Create the 'demo' dataset and the demo XTB campaign (examples/xtb_gfn2.yaml) "
            "when they are missing; running it again changes nothing.")

    def handle(self, *args, **options):
        try:
            demo = demo_setup()
        except ApplicationError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"dataset {demo.dataset.name}: {demo.records.added:,} records added, "
                          f"{demo.dataset.record_count:,} in all")
        verb = "created" if demo.campaign_created else "exists already:"
        self.stdout.write(f"campaign {verb} {demo.campaign.name} ({demo.campaign.function}, "
                          f"state {demo.campaign.state})")
