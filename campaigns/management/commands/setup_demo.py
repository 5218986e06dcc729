"""The demo: the 'demo' dataset (data/demo/) and the XTB campaign of examples/xtb_gfn2.yaml."""
from django.core.management.base import BaseCommand, CommandError

from campaigns.errors import ApplicationError
from campaigns.services.setup import demo_setup


class Command(BaseCommand):
    help = ("Create the 'demo' dataset and the demo XTB campaign (examples/xtb_gfn2.yaml) "
            "when they are missing; running it again changes nothing.")

    def add_arguments(self, parser):
        parser.add_argument("--launch", action="store_true",
                            help="launch the demo campaign while it is a draft")

    def handle(self, *args, launch, **options):
        try:
            demo = demo_setup(launch=launch)
        except ApplicationError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"dataset {demo.dataset.name}: {demo.records.added:,} records added, "
                          f"{demo.dataset.record_count:,} in all")
        verb = "created" if demo.campaign_created else "exists already:"
        self.stdout.write(f"campaign {verb} {demo.campaign.name} ({demo.campaign.function}, "
                          f"state {demo.campaign.state})")
        if demo.launch is not None:
            self.stdout.write(f"launched {demo.launch.line()}")
