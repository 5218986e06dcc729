"""Load molecules from XYZ / extended XYZ, SDF / MOL and JSON Lines files into a dataset."""
from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from campaigns.errors import ApplicationError
from campaigns.molecules import READERS
from campaigns.progress import Progress
from campaigns.services.records import (DEFAULT_BATCH_SIZE, ON_ERROR_CHOICES, dataset_get,
                                        records_import)


class Command(BaseCommand):
    help = (f"Import molecules ({', '.join(READERS)}) into a dataset. Ids come from the file or "
            "from the molecule's content, so importing a file again adds nothing.")

    def add_arguments(self, parser):
        parser.add_argument("dataset")
        parser.add_argument("files", nargs="+", type=Path, metavar="FILE")
        parser.add_argument("--on-error", choices=ON_ERROR_CHOICES, default="skip",
                            help="skip: report a broken molecule and go on (default); abort: "
                                 "stop at the first one, writing nothing of any file")
        parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
        parser.add_argument("--create", action="store_true",
                            help="create the dataset if it does not exist")

    def handle(self, *args, dataset, files, on_error, batch_size, create, **options):
        if batch_size < 1:
            raise CommandError(f"--batch-size must be at least 1, got {batch_size}")
        skipped = []

        def report_broken(message: str) -> None:
            skipped.append(message)
            self.stderr.write(f"skipped {message}")

        try:
            target = dataset_get(name=dataset, create=create)
        except ApplicationError as exc:
            raise CommandError(f"{exc}; give --create to make it") from None
        try:
            report = records_import(
                dataset=target, paths=files, on_error=on_error, batch_size=batch_size,
                progress=Progress(verb="imported", stream=self.stderr), on_broken=report_broken,
            )
        except ApplicationError as exc:
            partial = getattr(exc, "report", None)  # set once the import had begun
            if partial is None:
                raise CommandError(str(exc)) from None
            if on_error == "abort":
                raise CommandError(f"{exc} (--on-error abort: nothing was written)") from None
            raise CommandError(f"{exc} ({partial.summary()} before it)") from None
        summary = (f"{target.name}: {report.added:,} added, {report.already_present:,} already "
                   f"present, {target.record_count:,} records")
        if report.skipped:
            summary += f"; {report.skipped:,} broken molecules skipped"
        self.stdout.write(summary)
