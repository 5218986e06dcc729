"""Print a campaign as a job definition file: `manage.py export_campaign NAME > NAME.yaml`."""
from django.core.management.base import BaseCommand, CommandError

from campaigns.selectors import campaign_get, campaign_names
from campaigns.services.definitions import campaign_export


class Command(BaseCommand):
    help = "Print a campaign as YAML that import_campaign reads back."

    def add_arguments(self, parser):
        parser.add_argument("name", help="the campaign's name")

    def handle(self, *args, **options):
        campaign = campaign_get(name=options["name"])
        if campaign is None:
            known = ", ".join(campaign_names(limit=20)) or "none"
            raise CommandError(f"no campaign named {options['name']!r} (known: {known})")
        self.stdout.write(campaign_export(campaign=campaign), ending="")
