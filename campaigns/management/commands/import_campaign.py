"""Import a job definition file (YAML) as a campaign: `manage.py import_campaign FILE`."""
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from campaigns.errors import ApplicationError
from campaigns.selectors import campaign_describe, campaign_get
from campaigns.services.definitions import campaign_definition_parse, campaign_import


class Command(BaseCommand):
    help = "Check a whole job definition file, then create its campaign (nothing is written on error)."

    def add_arguments(self, parser):
        parser.add_argument("file", help="the job definition file, as examples/wb97mv.yaml")
        parser.add_argument("--dataset", help="the dataset to run on (overrides the file's 'dataset:')")
        parser.add_argument("--replace", action="store_true",
                            help="replace a same-named campaign in draft, done or failed")
        parser.add_argument("--trusted", action="store_true",
                            help="mark the campaign trusted: its program inputs may start other "
                                 "programs or read files (docs/definitions.md)")

    def handle(self, *args, **options):
        path = Path(options["file"])
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CommandError(f"{path}: cannot read the file: {exc}") from None
        try:
            definition = campaign_definition_parse(text=text, source=str(path), base_dir=path.parent,
                                                   trusted=options["trusted"])
            verb = "replaced" if campaign_get(name=definition.name) else "created"
            campaign = campaign_import(definition=definition, dataset_name=options["dataset"],
                                       replace=options["replace"])
        except ApplicationError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"{verb} {campaign_describe(campaign=campaign)}")
