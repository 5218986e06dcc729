"""Print how many records of a dataset a query selects."""
from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from campaigns.errors import ApplicationError
from campaigns.query_hints import query_hint
from campaigns.record_selectors import records_count
from campaigns.services.records import dataset_get


class Command(BaseCommand):
    help = "Print the number of records of DATASET that --query selects (docs/query.md)."

    def add_arguments(self, parser):
        parser.add_argument("dataset")
        parser.add_argument("--query", default="{}",
                            help='a JSON filter, e.g. \'{"wb97mv.wb97md3bj": null}\' (default {})')

    def handle(self, *args, dataset, query, **options):
        try:
            parsed = json.loads(query)
        except ValueError as exc:
            raise CommandError(f"--query is not JSON: {exc}") from None
        try:
            target = dataset_get(name=dataset)
            count = records_count(dataset=target, query=parsed)
            hint = query_hint(dataset=target, query=parsed) if count == 0 else None
        except ApplicationError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(str(count))
        if hint:
            self.stderr.write(f"hint: {hint}")
