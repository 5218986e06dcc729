"""Export a campaign's results as JSON Lines or extended XYZ: `manage.py export_results NAME`."""
from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from campaigns.errors import ApplicationError
from campaigns.services.exports import FORMATS, UNITS, results_export
from campaigns.services.submission import campaign_find


class Command(BaseCommand):
    help = ("Write the records of a campaign's dataset that hold its result (energy, forces = "
            "-gradient, the stored values) as JSON Lines or extended XYZ; records without it are "
            "left out and counted on stderr.")

    def add_arguments(self, parser):
        parser.add_argument("campaign")
        parser.add_argument("--format", choices=FORMATS, default="jsonl")
        parser.add_argument("--arg-set", help="whose values (default: the first arg set)")
        parser.add_argument("--units", choices=list(UNITS), default="au",
                            help="au: Eh and Eh/bohr (default); ev: eV and eV/Å")
        parser.add_argument("--output", type=Path, help="the file to write (default: stdout)")

    def handle(self, *args, campaign, format, arg_set, units, output, **options):
        try:
            export = results_export(campaign=campaign_find(name=campaign), format=format,
                                    arg_set=arg_set, units=units)
            if output is None:
                for chunk in export.chunks():
                    self.stdout.write(chunk, ending="")
            else:
                with open(output, "w", encoding="utf-8") as handle:
                    handle.writelines(export.chunks())
        except ApplicationError as exc:
            raise CommandError(str(exc)) from None
        except OSError as exc:
            raise CommandError(f"{output}: cannot write: {exc}") from None
        self.stderr.write(export.summary())
